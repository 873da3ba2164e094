"""Measuring models: the body of ``seg-models bench``, agreement between precisions (fidelity) and
our GPU path against torchvision's eager models (device_benchmark)."""
