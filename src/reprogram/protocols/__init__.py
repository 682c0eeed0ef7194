"""The evaluation protocols of the CLIP-adaptation field on the reprogramming engine.

* :mod:`~reprogram.protocols.classes`: CoCoOp's base/novel class halves (no engine imports, so
  the engine can use it).
* :mod:`~reprogram.protocols.base_to_novel`: train on base classes, test on base and novel.
* :mod:`~reprogram.protocols.transfer`: cross-dataset transfer and domain generalisation.
"""
