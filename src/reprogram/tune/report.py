"""A search's report: the trial history, a plot of the search (the objective per trial and the
best so far), each parameter's importance, and the best configuration's multi-seed test table,
written to ``OUT/tune.md``, ``OUT/tune.json``, ``OUT/search.png`` and ``OUT/importance.png``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from reprogram.storage.files import atomic_write_text

MIN_FOR_IMPORTANCE = 3  # completed trials before parameter importances mean anything
REPORT_MD, REPORT_JSON = "tune.md", "tune.json"
SEARCH_PNG, IMPORTANCE_PNG = "search.png", "importance.png"


def history(study: Any) -> list[dict[str, Any]]:
    """Every trial: number, state, objective, parameters, epochs reported, run folder, error."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        seconds = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": t.value,
                "params": dict(t.params),
                "epochs_reported": len(t.intermediate_values),
                "seconds": seconds,
                "run": t.user_attrs.get("run"),
                "selected_epoch": t.user_attrs.get("selected_epoch"),
                "error": t.user_attrs.get("error"),
                "lost": bool(t.user_attrs.get("lost")),
                "retry_of": t.user_attrs.get("retry_of"),
            }
        )
    return rows


def best_trial(study: Any) -> dict[str, Any] | None:
    """The completed trial with the highest objective (the earliest of ties), or ``None``."""
    complete = [r for r in history(study) if r["state"] == "complete"]
    if not complete:
        return None
    best = max(complete, key=lambda r: (r["value"], -r["number"]))
    return {"number": best["number"], "value": best["value"], "params": best["params"]}


def importances(study: Any) -> tuple[dict[str, float], str]:
    """Each parameter's importance (Optuna's default evaluator), or ``{}`` and why not."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_FOR_IMPORTANCE:
        return (
            {},
            f"importance needs {MIN_FOR_IMPORTANCE} completed trials ({len(complete)} so far)",
        )
    try:
        with warnings.catch_warnings():  # "importances will be equal": the numbers say it
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as err:
        return {}, f"importance not computed: {err}"
    return {k: float(v) for k, v in found.items()}, ""


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def plot_search(rows: list[dict[str, Any]], path: Path) -> Path:
    """The objective of each trial (pruned trials at their last report) and the best so far."""
    figure = _figure(6.4, 3.6)
    axes = figure.add_subplot()
    for state, marker, colour in (("complete", "o", "#4263eb"), ("pruned", "x", "#868e96")):
        points = [
            (r["number"], r["value"])
            for r in rows
            if r["state"] == state and r["value"] is not None
        ]
        if points:
            axes.scatter(*zip(*points, strict=True), marker=marker, color=colour, label=state)
    best, steps = None, []
    for row in rows:
        if row["state"] == "complete" and row["value"] is not None:
            best = row["value"] if best is None else max(best, row["value"])
        if best is not None:
            steps.append((row["number"], best))
    if steps:
        axes.step(*zip(*steps, strict=True), where="post", color="#2b8a3e", label="best so far")
    axes.set_xlabel("trial")
    axes.set_ylabel("validation accuracy (selected epoch)")
    axes.legend(loc="best", fontsize=8)
    figure.savefig(path)
    return path


def plot_importance(found: dict[str, float], note: str, path: Path) -> Path:
    figure = _figure(5.0, 0.5 + 0.4 * max(len(found), 2))
    axes = figure.add_subplot()
    if found:
        names = list(found)[::-1]
        axes.barh(names, [found[n] for n in names], color="#4263eb")
        axes.set_xlabel("importance")
    else:
        axes.text(0.5, 0.5, note, ha="center", va="center", wrap=True)
        axes.set_axis_off()
    figure.savefig(path)
    return path


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(summary: dict[str, Any], table_md: str) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in summary["counts"].items())
    lines = [
        f"# Tuning: {summary['task']}",
        "",
        f"Study `{summary['study']}` in `{summary['storage']}`: {summary['trials']} trials "
        f"({counts}). Objective: validation accuracy of the selected epoch; the test split "
        "was not read during the search.",
        "",
    ]
    best = summary["best"]
    if best:
        lines += [f"## Best trial: {best['number']} (validation {best['value']:.4f})", ""]
        lines += ["| parameter | value | importance |", "|---|---|---|"]
        for key, value in best["params"].items():
            share = summary["importance"].get(key)
            lines.append(f"| {key} | {_value(value)} | {'' if share is None else f'{share:.3f}'} |")
        if summary["importance_note"]:
            lines += ["", summary["importance_note"]]
    lines += ["", f"![search]({SEARCH_PNG}) ![importance]({IMPORTANCE_PNG})", ""]
    if table_md:
        seeds = ", ".join(map(str, summary["seeds"]))
        lines += [f"## Best configuration, tested once per seed ({seeds})", "", table_md, ""]
    lines += ["## Trials", "", "| trial | state | value | parameters |", "|---|---|---|---|"]
    for row in summary["history"]:
        value = "" if row["value"] is None else f"{row['value']:.4f}"
        params = ", ".join(f"{k}={_value(v)}" for k, v in row["params"].items())
        note = f" ({row['error']})" if row["error"] else ""
        note = " (its worker was lost: run again)" if row["lost"] else note
        note += f" (retry of {row['retry_of']})" if row["retry_of"] is not None else ""
        lines.append(f"| {row['number']} | {row['state']}{note} | {value} | {params} |")
    return "\n".join(lines) + "\n"


def write_report(
    out: Path, study: Any, summary: dict[str, Any], table: dict[str, Any] | None
) -> dict[str, Any]:
    """Write the report files (see the module); returns the summary as written to JSON."""
    from reprogram.engine.runs import table_markdown

    rows = history(study)
    found, note = importances(study)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    summary = {
        **summary,
        "trials": len(rows),
        "counts": counts,
        "best": best_trial(study),
        "importance": found,
        "importance_note": note,
        "final": table,
        "history": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    plot_search(rows, out / SEARCH_PNG)
    plot_importance(found, note, out / IMPORTANCE_PNG)
    atomic_write_text(out / REPORT_JSON, json.dumps(summary, indent=2, default=str) + "\n")
    atomic_write_text(out / REPORT_MD, markdown(summary, table_markdown(table) if table else ""))
    return summary
