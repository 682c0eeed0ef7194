"""reprogram: visual reprogramming of frozen CLIP models (DVP and its baselines)."""

from reprogram.errors import ReprogramError

__all__ = ["ReprogramError", "__version__"]
__version__ = "0.1.0"
