"""Applications: DAGs of model modules under one end-to-end SLO."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

MAX_PATHS = 4096
"""Most source-to-sink paths an app may have: planners list its paths and check each one."""


@dataclass(frozen=True, slots=True)
class Module:
    """One step of an application."""

    name: str
    """Unique name of the step within the app."""
    model: str
    """Model (profile key) the step runs."""


@dataclass(frozen=True, slots=True)
class Edge:
    """Output of ``parent`` feeds ``child``; each parent request makes ``fanout`` child requests."""

    parent: str
    child: str
    fanout: float = 1.0


@dataclass(frozen=True, slots=True)
class App:
    """A DAG of modules with one end-to-end latency objective and an input rate."""

    name: str
    modules: tuple[Module, ...]
    edges: tuple[Edge, ...]
    slo: float
    """End-to-end latency objective in seconds."""
    rate: float = 0.0
    """Requests per second entering the app's source modules."""

    def __post_init__(self) -> None:
        names = [m.name for m in self.modules]
        if not names:
            raise ValueError(f"app {self.name!r}: needs at least one module")
        if len(set(names)) != len(names):
            raise ValueError(f"app {self.name!r}: module names must be unique, got {names}")
        for e in self.edges:
            for end in (e.parent, e.child):
                if end not in names:
                    raise ValueError(
                        f"app {self.name!r}: edge {e.parent}->{e.child} names unknown module {end!r}"
                    )
            if e.fanout <= 0:
                raise ValueError(f"app {self.name!r}: edge {e.parent}->{e.child} fanout must be > 0")
        if self.slo <= 0:
            raise ValueError(f"app {self.name!r}: slo must be > 0, got {self.slo}")
        if self.rate < 0:
            raise ValueError(f"app {self.name!r}: rate must be >= 0, got {self.rate}")
        self.topological_order()  # raises on a cycle

    def module(self, name: str) -> Module:
        """The module called ``name``."""
        for m in self.modules:
            if m.name == name:
                return m
        raise KeyError(name)

    def children(self, name: str) -> list[Edge]:
        """Edges leaving ``name``."""
        return [e for e in self.edges if e.parent == name]

    def sources(self) -> list[str]:
        """Modules no edge enters: they receive the app's input stream."""
        targets = {e.child for e in self.edges}
        return [m.name for m in self.modules if m.name not in targets]

    def topological_order(self) -> list[str]:
        """Module names, parents before children; raises ``ValueError`` on a cycle."""
        indegree = {m.name: 0 for m in self.modules}
        for e in self.edges:
            indegree[e.child] += 1
        ready = [n for n, d in indegree.items() if d == 0]
        order: list[str] = []
        while ready:
            n = ready.pop(0)
            order.append(n)
            for e in self.children(n):
                indegree[e.child] -= 1
                if indegree[e.child] == 0:
                    ready.append(e.child)
        if len(order) != len(self.modules):
            raise ValueError(f"app {self.name!r}: the module graph has a cycle")
        return order

    def module_rates(self) -> dict[str, float]:
        """Request rate each module sees: the input rate times the fan-outs along its paths."""
        rates = {n: 0.0 for n in self.topological_order()}
        for s in self.sources():
            rates[s] = self.rate
        for n in self.topological_order():
            for e in self.children(n):
                rates[e.child] += rates[n] * e.fanout
        return rates

    def path_count(self) -> int:
        """How many source-to-sink paths there are, counted over the DAG without listing them."""
        count = {n: 0 for n in self.topological_order()}
        for n in reversed(list(count)):
            kids = self.children(n)
            count[n] = sum(count[e.child] for e in kids) if kids else 1
        return sum(count[s] for s in self.sources())

    def paths(self) -> Iterator[list[str]]:
        """Every source-to-sink path; the sum of module budgets along each must fit the SLO."""

        def walk(node: str, prefix: list[str]) -> Iterator[list[str]]:
            path = [*prefix, node]
            kids = self.children(node)
            if not kids:
                yield path
            for e in kids:
                yield from walk(e.child, path)

        for s in self.sources():
            yield from walk(s, [])
