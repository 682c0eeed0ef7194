"""An offline reference world: a procedural image–text world, a small CLIP pretrained on it, and
downstream tasks on which visual reprogramming can be shown to learn.

* :mod:`reprogram.toy.vocabulary` — the factors' values, colours, placement and phrases (data).
* :mod:`reprogram.toy.world` — scenes and their sampling (and the world's face: renderer, captions).
* :mod:`reprogram.toy.render` — the vectorised renderer.
* :mod:`reprogram.toy.captions` — pretraining captions and which images they describe.
* :mod:`reprogram.toy.describe` — per-cause and attribute description files for a class set.
* :mod:`reprogram.toy.world_tasks`, :mod:`reprogram.toy.real_tasks` — the task sources.
* :mod:`reprogram.toy.tasks` — the task registry, written in the ``folder:`` layout (``make_task``).
* :mod:`reprogram.toy.pretrain` — contrastive pretraining of the ``toy`` open_clip architecture.
* :mod:`reprogram.toy.zeroshot` — the held-out-combination zero-shot check.
* :mod:`reprogram.cli.toy` — the ``reprogram toy`` commands (``register(app)``).
"""

from __future__ import annotations

from reprogram.backbones.packaged import TOY_WEIGHTS_NAME as WEIGHTS_NAME
from reprogram.backbones.packaged import toy_weights_path as pretrained_weights_path

ARCH = "toy"


def load_pretrained(device: str = "cpu"):
    """The committed toy CLIP as a frozen :class:`~reprogram.backbones.Backbone`."""
    from reprogram.backbones import load_backbone

    return load_backbone(ARCH, weights=pretrained_weights_path(), device=device)


__all__ = ["ARCH", "WEIGHTS_NAME", "load_pretrained", "pretrained_weights_path"]
