"""The evaluation protocols of the CLIP-adaptation field on the reprogramming engine.

* :mod:`~reprogram.protocols.base_to_novel`: train on base classes, test on base and novel.
* :mod:`~reprogram.protocols.transfer`: cross-dataset transfer and domain generalisation.

The class halves themselves are a data concept: :mod:`reprogram.data.subsets`.
"""
