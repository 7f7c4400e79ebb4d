"""Latency-aware architecture search: data, metrics, supernet training, latency, evolution."""
