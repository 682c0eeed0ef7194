"""``reprogram bench``: our engine against a loop in the official scripts' structure.

* :mod:`reprogram.speed.synthetic` writes a synthetic JPEG dataset and description files;
* :mod:`reprogram.speed.reference` is the official-structure loop (our reading, not their code);
* :mod:`reprogram.speed.measure` times steps, matmuls and memory and counts FLOPs;
* :mod:`reprogram.speed.run` puts them together (:func:`run_bench`); :mod:`reprogram.cli.speed`
  adds the ``bench`` command.
"""
