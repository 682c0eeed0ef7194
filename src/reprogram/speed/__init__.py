"""``reprogram bench``: our engine against a loop in the official scripts' structure.

* :mod:`reprogram.speed.synthetic` writes a synthetic JPEG dataset and description files;
* :mod:`reprogram.speed.reference` is the official-structure loop (our reading, not their code);
* :mod:`reprogram.speed.measure` times steps, matmuls and memory and counts FLOPs;
* :mod:`reprogram.speed.options` holds the options and prepares the dataset and config;
* :mod:`reprogram.speed.inference` times evaluation by method, the model and its folded export;
* :mod:`reprogram.speed.phases` runs the three phases, :mod:`reprogram.speed.report` derives the
  ratios and prints the table;
* :mod:`reprogram.speed.run` puts them together (:func:`run_bench`); :mod:`reprogram.cli.speed`
  adds the ``bench`` command.
"""
