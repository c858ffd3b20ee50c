"""Hardware types: what an instance runs on and what it costs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Hardware:
    """A machine type in a catalogue."""

    name: str
    """Catalogue key, e.g. ``"c5.xlarge"`` or ``"cpu-2c"``."""
    cores: int
    """CPU cores (or accelerator units) one machine of this type has."""
    price_per_hour: float
    """Cost of one machine for one hour, in the catalogue's currency."""

    def __post_init__(self) -> None:
        if self.cores < 1:
            raise ValueError(f"hardware {self.name!r}: cores must be >= 1, got {self.cores}")
        if self.price_per_hour < 0:
            raise ValueError(
                f"hardware {self.name!r}: price_per_hour must be >= 0, got {self.price_per_hour}"
            )

    def cost(self, seconds: float, count: float = 1.0) -> float:
        """Price of running ``count`` machines for ``seconds``."""
        return self.price_per_hour * count * seconds / 3600.0
