"""Data sloserve ships so experiments and tests run from any clone or install.

- ``traces/azure_llm_2023/``: the Azure LLM inference trace 2023 (CC-BY 4.0, see its LICENSE and
  ``traces/README.md``), used for arrival times (and token counts as payload sizes).
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
"""Directory of the shipped data files."""

AZURE_CODE_TRACE = DATA_DIR / "traces" / "azure_llm_2023" / "AzureLLMInferenceTrace_code.csv"
"""Bursty Azure trace: 8,819 requests over ~57 min, inter-arrival CV about 13."""

AZURE_CONV_TRACE = DATA_DIR / "traces" / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv"
"""Close-to-Poisson Azure trace: 19,366 requests over ~58 min, CV about 1.1."""

TRACES = {"azure_code": AZURE_CODE_TRACE, "azure_conv": AZURE_CONV_TRACE}
"""Shipped traces by short name (configs may give these names instead of paths)."""
