"""Sans-I/O scheduling policies: queues, batchers, dispatchers, scalers. Told the time; return decisions."""

from sloserve.policies.base import Dispatcher, PolicyContext, Scaler, Scheduler
from sloserve.policies.registry import make_dispatcher, make_scaler, make_scheduler

__all__ = [
    "Dispatcher",
    "PolicyContext",
    "Scaler",
    "Scheduler",
    "make_dispatcher",
    "make_scaler",
    "make_scheduler",
]
