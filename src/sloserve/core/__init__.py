"""Core types shared by every layer: requests, decisions, hardware, apps and latency profiles."""

from sloserve.core.app import App, Edge, Module
from sloserve.core.cluster import InstanceView, WindowStats
from sloserve.core.config import ConfigError
from sloserve.core.decisions import (
    Decision,
    Dispatch,
    Drop,
    DropReason,
    ScaleDecision,
    SetInstanceCores,
    SetInstanceCount,
    SetMaxBatch,
    WaitUntil,
)
from sloserve.core.hardware import Hardware
from sloserve.core.profile_io import load_profiles, profiles_from_data, save_profiles
from sloserve.core.profiles import (
    AffineProfile,
    ModelProfile,
    ProfilePoint,
    ProfileSet,
    SpongeProfile,
    TabulatedProfile,
    fit_affine,
    fit_sponge,
    max_batch_within,
    throughput,
)
from sloserve.core.request import Batch, Request

__all__ = [
    "AffineProfile",
    "App",
    "Batch",
    "ConfigError",
    "Decision",
    "Dispatch",
    "Drop",
    "DropReason",
    "Edge",
    "Hardware",
    "InstanceView",
    "ModelProfile",
    "Module",
    "ProfilePoint",
    "ProfileSet",
    "Request",
    "ScaleDecision",
    "SetInstanceCores",
    "SetInstanceCount",
    "SetMaxBatch",
    "SpongeProfile",
    "TabulatedProfile",
    "WaitUntil",
    "WindowStats",
    "fit_affine",
    "fit_sponge",
    "load_profiles",
    "max_batch_within",
    "profiles_from_data",
    "save_profiles",
    "throughput",
]
