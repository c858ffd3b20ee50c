"""A DVABatch-like batcher: the second baseline of the CoFB comparison (SEEDS.md §2).

DVABatch (Cui et al., USENIX ATC 2022) is *multi-entry multi-exit* batching on GPUs: a model is
cut into stages, and its scheduler can start a new batch while another runs ("new"), merge a
waiting batch into a running one at a stage boundary ("stretch") and split a batch so that some
requests leave early ("split"), choosing batch sizes from profiled per-stage latency against the
SLO.

**What we built, and that it is our reading.** Our profiles describe whole models, not stages, so
stretch and split (which need stage boundaries) are not modelled. What remains, and what this
baseline is:

- FIFO queue, no early drop (late requests still run and count as misses);
- SLO-aware batch size: the largest ``b`` whose profiled (tail) latency, at the concurrency it
  would run with, still ends before the earliest deadline among the first ``b`` queued requests
  (at least 1 on an idle instance);
- multi-entry ("new"): whenever the instance has a free concurrency slot, a new batch starts at
  once beside the running ones (fixed ``max_concurrency``; no check of the batches already running
  and no waiting for a fuller batch);
- it is model-side only: receive queues use static hashing (no flow scheduling).

It is :class:`~sloserve.policies.cofb.CoFBScheduler` with reordering, early drop, throttling and
waiting switched off, so the comparison isolates CoFB's mechanisms.
"""

from __future__ import annotations

from typing import Any

from sloserve.policies.base import PolicyContext
from sloserve.policies.cofb import CoFBScheduler
from sloserve.policies.params import BatchCapParams, Slowdown, parse_params


class DvaBatchParams(BatchCapParams):
    """``max_batch_size`` (default the model's) and ``slowdown`` (s(k) list; default the profile's)."""

    slowdown: Slowdown | None = None


def make_dvabatch(ctx: PolicyContext, **params: Any) -> CoFBScheduler:
    """Registry factory (:class:`DvaBatchParams`); needs the model's profile."""
    p = parse_params(DvaBatchParams, params, "dvabatch")
    if ctx.profile is None:
        raise ValueError(f"scheduler 'dvabatch' for model {ctx.model!r} needs a latency profile")
    return CoFBScheduler(
        ctx.profile,
        max_batch=p.batch_cap(ctx),
        reorder=False,
        batching=True,
        throttle=False,
        wait=False,
        slowdown=None if p.slowdown is None else tuple(p.slowdown),
        default_priority=ctx.default_priority,
        max_queue_size=ctx.max_queue_size,
    )
