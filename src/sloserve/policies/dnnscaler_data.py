"""Published DNNScaler data: latency vs co-located instances of 18 DNN/dataset pairs, and their SLOs.

Plain constants (no file is read at run time). The latency table equals
``shared/data/dnnscaler_instances.csv`` (a test checks it): milliseconds of one inference at batch
size 1 with k = 1..10 co-located instances on one GPU, from the authors' repository
(github.com/nabavinejad/DNNScaler, ``MatrixCompletion/DNNs_Latency_Instance.xlsx``).

The SLOs are the ``--expectedLatency`` values in the authors' multi-tenancy run script
(``Mutli-Tenancy/cmd.sh``, the same values as their Clipper runs); three pairs have none there and
get an SLO derived the same way as :func:`published_slo_ms` documents.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

PUBLISHED_INSTANCE_LATENCY_MS: tuple[tuple[str, str, tuple[float, ...]], ...] = (
    ("InceptionV1", "Caltech256", (9.75, 10.69, 13.41, 16.85, 20.96, 25.22, 29.36, 33.52, 37.69, 41.86)),
    ("MobileNetV1-1.0", "Caltech256", (5.89, 5.06, 4.91, 6.43, 8.03, 9.61, 11.22, 12.79, 14.40, 16.05)),
    ("MobileNetV1-0.5", "Caltech256", (5.38, 4.54, 4.45, 4.21, 4.66, 5.57, 6.50, 7.39, 8.39, 9.25)),
    ("MobileNetV1-0.25", "Caltech256", (5.20, 4.52, 3.97, 4.52, 3.57, 4.29, 4.97, 5.65, 6.41, 7.23)),
    ("MobileNetV2-1.0", "Caltech256", (7.13, 7.19, 10.15, 12.48, 12.95, 14.79, 17.18, 19.57, 22.01, 24.44)),
    ("MobileNetV2-1.4", "Caltech256", (7.37, 8.84, 10.35, 13.03, 16.25, 19.52, 22.75, 25.93, 29.19, 32.38)),
    ("InceptionV1", "ImageNet", (10.01, 10.70, 14.34, 16.83, 21.03, 25.19, 29.40, 33.55, 37.71, 41.88)),
    ("InceptionV2", "ImageNet", (10.43, 14.17, 18.39, 23.54, 29.37, 35.25, 41.05, 46.94, 52.88, 58.65)),
    ("MobileNetV1-1.0", "ImageNet", (10.36, 9.65, 8.77, 6.54, 8.02, 9.66, 11.27, 12.94, 14.57, 16.13)),
    ("MobileNetV1-0.5", "ImageNet", (9.95, 9.27, 8.54, 6.57, 4.85, 5.66, 6.64, 7.61, 8.46, 9.70)),
    ("MobileNetV1-0.25", "ImageNet", (9.75, 8.91, 8.35, 6.64, 5.37, 4.90, 5.20, 5.82, 7.03, 7.27)),
    ("MobileNetV2-1.0", "ImageNet", (10.08, 9.19, 10.20, 11.86, 13.03, 14.77, 17.13, 19.59, 22.16, 27.78)),
    ("MobileNetV2-1.4", "ImageNet", (10.35, 8.86, 10.47, 13.07, 16.23, 19.47, 22.72, 25.91, 28.76, 31.97)),
    ("NASNet-A-Mobile", "ImageNet", (28.36, 26.24, 29.09, 36.98, 40.73, 47.48, 55.18, 63.07, 70.94, 78.78)),
    ("PNASNet-5-Mobile", "ImageNet", (22.29, 26.95, 25.30, 30.63, 37.98, 45.55, 52.29, 59.42, 65.78, 72.58)),
    ("ResNetV2-50", "ImageNet", (10.85, 15.89, 22.11, 29.11, 36.28, 43.49, 50.98, 58.03, 65.56, 72.71)),
    ("DeePVS", "DHF1K", (977, 1165, 1571, 1867, 2170, 3055, 3714, 3781, 5362, 6101)),
    ("DeePVS", "LEDOV", (1103, 1245, 1629, 2330, 2314, 2538, 3374, 4711, 5038, 5282)),
)
"""(DNN, dataset, latency in ms at k = 1..10 co-located instances, batch 1)."""

PUBLISHED_SLO_MS: dict[tuple[str, str], float] = {
    ("InceptionV1", "ImageNet"): 35,
    ("InceptionV2", "ImageNet"): 53,
    ("MobileNetV1-0.5", "ImageNet"): 199,
    ("MobileNetV1-0.25", "ImageNet"): 186,
    ("MobileNetV2-1.0", "ImageNet"): 81,
    ("NASNet-A-Mobile", "ImageNet"): 85,
    ("PNASNet-5-Mobile", "ImageNet"): 82,
    ("ResNetV2-50", "ImageNet"): 45,
    ("InceptionV1", "Caltech256"): 48,
    ("MobileNetV1-1.0", "Caltech256"): 89,
    ("MobileNetV1-0.5", "Caltech256"): 60,
    ("MobileNetV1-0.25", "Caltech256"): 104,
    ("MobileNetV2-1.0", "Caltech256"): 129,
    ("DeePVS", "LEDOV"): 3000,
    ("DeePVS", "DHF1K"): 5000,
}
"""Latency objectives (ms) the authors ran each pair with."""

_SIBLING: dict[tuple[str, str], tuple[str, str]] = {
    ("MobileNetV1-1.0", "ImageNet"): ("MobileNetV1-0.5", "ImageNet"),
    ("MobileNetV2-1.4", "ImageNet"): ("MobileNetV2-1.0", "ImageNet"),
    ("MobileNetV2-1.4", "Caltech256"): ("MobileNetV2-1.0", "Caltech256"),
}


def _row(dnn: str, dataset: str) -> tuple[float, ...]:
    for d, s, lat in PUBLISHED_INSTANCE_LATENCY_MS:
        if (d, s) == (dnn, dataset):
            return lat
    raise KeyError(f"no published latencies for {dnn} on {dataset}")


def published_slo_ms(dnn: str, dataset: str) -> tuple[float, bool]:
    """The SLO (ms) of a pair and whether it is published (True) or derived (False).

    Derived: the published SLO of the sibling model of the same family on the same dataset
    (MobileNetV1-0.5 for MobileNetV1-1.0, MobileNetV2-1.0 for MobileNetV2-1.4), scaled by the ratio
    of their batch-1 latencies, i.e. the same multiple of the model's own latency.
    """
    key = (dnn, dataset)
    if key in PUBLISHED_SLO_MS:
        return PUBLISHED_SLO_MS[key], True
    sibling = _SIBLING.get(key)
    if sibling is None:
        raise KeyError(f"no SLO known or derivable for {dnn} on {dataset}")
    ratio = _row(*key)[0] / _row(*sibling)[0]
    return round(PUBLISHED_SLO_MS[sibling] * ratio, 1), False


def published_matrix() -> NDArray[np.float64]:
    """The latency table as an 18 x 10 array (ms), rows in :data:`PUBLISHED_INSTANCE_LATENCY_MS` order."""
    return np.array([lat for _, _, lat in PUBLISHED_INSTANCE_LATENCY_MS], dtype=float)


__all__ = ["PUBLISHED_INSTANCE_LATENCY_MS", "PUBLISHED_SLO_MS", "published_matrix", "published_slo_ms"]
