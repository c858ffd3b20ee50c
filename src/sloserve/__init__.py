"""sloserve: serve DNN inference under latency objectives at the lowest cost."""

__version__ = "0.1.0"
