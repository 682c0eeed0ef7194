"""Frozen CLIP backbones from local files (see :func:`load_backbone`)."""

from reprogram.backbones.base import Backbone, BackboneSpec, TextFeatureCache
from reprogram.backbones.factory import load_backbone

__all__ = ["Backbone", "BackboneSpec", "TextFeatureCache", "load_backbone"]
