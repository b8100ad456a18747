"""Orbit influence with ``torch.func``: per-sample gradients, metrics, normalizations, summaries.

Pure torch; Lightning never enters this package.
"""

from symcoherence.coherence.loss import smse

__all__ = ["smse"]
