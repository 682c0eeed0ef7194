"""``reprogram bench``: our engine against a loop in the official scripts' structure.

* :mod:`reprogram.bench.synthetic` writes a synthetic JPEG dataset and description files;
* :mod:`reprogram.bench.reference` is the official-structure loop (our reading, not their code);
* :mod:`reprogram.bench.measure` times steps, matmuls and memory and counts FLOPs;
* :mod:`reprogram.bench.run` puts them together (:func:`run_bench`); :mod:`reprogram.bench.cli`
  adds the ``bench`` command.
"""
