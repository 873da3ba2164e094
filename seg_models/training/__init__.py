"""Training on one's own data (``seg-models train``): recipes with their sources, data from the
layouts seg_bag make reads, augmentation, checkpoints that load as ``checkpoint:`` anywhere, and
runs on one process, under torchrun or on a Ray cluster."""


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says why and what was kept."""
