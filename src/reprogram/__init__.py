"""reprogram: visual reprogramming of frozen CLIP models (DVP and its baselines)."""

from reprogram.errors import ReprogramError

__all__ = ["ReprogramError", "__version__", "load_exported"]
__version__ = "0.1.0"


def load_exported(folder, **options):
    """A model written by ``reprogram export``, with ``.predict(images)`` and ``.logits(images)``
    (``options``: ``device``, ``weights``, ``precision``; see reprogram.export.load_exported)."""
    from reprogram.export import load_exported as load

    return load(folder, **options)
