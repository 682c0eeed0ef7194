"""Sweeps: a spec's grid of runs (methods × datasets × backbones × shots × options × seeds),
expanded into ordinary run folders and executed locally or on Slurm, restartably.

    from reprogram.sweep import load_spec, expand, run_sweep, sweep_status, SweepOptions

    spec = load_spec("sweep.yaml")
    runs = expand(spec)                    # SweepRun: name (the run folder), config()
    run_sweep(spec, SweepOptions(executor="local", settings={"workers": 2}))
    print(status_text(sweep_status(spec)))
"""

from reprogram.sweep.executors import (
    EXECUTOR_TYPES,
    Executor,
    LocalSettings,
    SlurmSettings,
    get_executor,
    make_settings,
)
from reprogram.sweep.expand import SweepRun, default_out, expand, expansion_text
from reprogram.sweep.run import SweepOptions, run_sweep, sweep_status
from reprogram.sweep.spec import SweepSpec, load_spec, parse_spec
from reprogram.sweep.state import STATES, RunStatus, SweepStatus, run_status, status_text
from reprogram.sweep.worker import Outcome, run_many, run_one

__all__ = [
    "EXECUTOR_TYPES",
    "STATES",
    "Executor",
    "LocalSettings",
    "Outcome",
    "RunStatus",
    "SlurmSettings",
    "SweepOptions",
    "SweepRun",
    "SweepSpec",
    "SweepStatus",
    "default_out",
    "expand",
    "expansion_text",
    "get_executor",
    "load_spec",
    "make_settings",
    "parse_spec",
    "run_many",
    "run_one",
    "run_status",
    "run_sweep",
    "status_text",
    "sweep_status",
]
