"""Benchmarks of the nodes around their models (``python -m seg_perception.tools.benchmark``)."""
