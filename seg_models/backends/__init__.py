"""Inference backends: one interface (batched numpy in, named numpy arrays out), several engines."""
from seg_models.backends.base import Backend, BackendError

__all__ = ['Backend', 'BackendError']
