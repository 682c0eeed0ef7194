"""Tuning with Optuna: a search over config keys for one task, selection on validation (the
test split is never read), pruning on the validation curve, then the best configuration trained
over the seeds and tested once through the sweep machinery.

    from reprogram.tune import load_tune_spec, tune, TuneOptions

    spec = load_tune_spec("tune.yaml")
    result = tune(spec, TuneOptions(workers=2))   # OUT/tune.md, tune.json, search.png, best/…
    print(result.best, result.table)
"""

from reprogram.tune.report import best_trial, history, importances, write_report
from reprogram.tune.run import TuneOptions, TuneResult, best_spec, search, train_best, tune
from reprogram.tune.spec import Param, Pruner, TuneSpec, load_tune_spec, parse_tune_spec
from reprogram.tune.study import open_study, storage_location
from reprogram.tune.worker import TRIALS, WorkerJob, trial_config, work

__all__ = [
    "TRIALS",
    "Param",
    "Pruner",
    "TuneOptions",
    "TuneResult",
    "TuneSpec",
    "WorkerJob",
    "best_spec",
    "best_trial",
    "history",
    "importances",
    "load_tune_spec",
    "open_study",
    "parse_tune_spec",
    "search",
    "storage_location",
    "train_best",
    "trial_config",
    "tune",
    "work",
    "write_report",
]
