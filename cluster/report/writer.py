"""``lstm-tune report``: what an experiment did, as a folder of PNG plots and a Markdown summary.

Everything comes from the experiment folder (local or ``s3://``): Tune's per-trial ``result.json``, ``best.json``,
``pbt_lineage.jsonl``, ``asha_rungs.jsonl`` and ``lstm_tune.json``. Works on unfinished experiments too (no test
scores then).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cluster.report.record import ExperimentRecord, read_experiment
from cluster.results.summary import model_label


def write_report(record: ExperimentRecord, out: Path) -> list[Path]:
    """Plots and ``report.md`` under ``out``; returns the files written."""
    from cluster.report.plots import (
        asha_rungs_plot,
        best_so_far_plot,
        learning_curves_plot,
        pbt_lineage_plot,
        series_plot,
    )

    out.mkdir(parents=True, exist_ok=True)
    written = [
        learning_curves_plot(record, out / "learning_curves.png"),
        best_so_far_plot(record, out / "best_so_far.png"),
    ]
    if record.rungs:
        written.append(asha_rungs_plot(record, out / "asha_rungs.png"))
    if record.scheduler == "pbt" or record.exploits:
        written.append(pbt_lineage_plot(record, out / "pbt_lineage.png"))
    if record.series and record.series.get("curves"):
        written.append(series_plot(record, out / "series.png"))
    md = out / "report.md"
    md.write_text(markdown(record, [p.name for p in written]))
    return [*written, md]


def markdown(record: ExperimentRecord, plots: list[str]) -> str:
    key, label, higher = record.display_metric
    lines = [
        f"# lstm-tune report: {record.name}",
        "",
        f"Experiment `{record.uri}`, task {record.task}, scheduler "
        f"{record.scheduler}, {len(record.trials)} trials of up to {record.max_epochs} epochs.",
        "",
    ]
    s = record.summary
    if s:
        t = s["trials"]
        lines += [
            f"Trials: {t['finished']} finished, {t['stopped']} stopped early, {t['errored']} errored; wall time "
            f"{s['wall_time_s']:.0f} s.",
            "",
            "## Best model",
            "",
            f"Trial `{s['best']['trial_id']}`, checkpoint of epoch {s['best']['epoch']} (lowest validation loss).",
            "",
        ]
        e = s.get("ensemble")
        if e:
            members = ", ".join(f"`{m['trial_id']}` (epoch {m['epoch']})" for m in e["members"])
            lines += [f"Exported: the mean of the best {len(e['members'])} trials, {members}.", ""]
        lines += [
            "| model | " + " | ".join(_score_names(record)) + " |",
            "| --- | " + " | ".join("---:" for _ in _score_names(record)) + " |",
        ]
        if e:
            lines.append(f"| {model_label(s)} | {_score_cells(record, e['val'], e['test'])} |")
        lines.append(f"| best LSTM | {_score_cells(record, s['best']['val'], s['best']['test'])} |")
        for name, per_split in s["baselines"].items():
            lines.append(f"| {name.replace('_', '-')} | {_score_cells(record, per_split['val'], per_split['test'])} |")
        lines += ["", "| hyperparameter | value |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(s["best"]["config"].items())]
    else:
        lines += ["Not finished: no test scores yet (`lstm-tune resume` it).", ""]
    lines += ["", "## Cost", ""]
    trial_seconds = sum(t.seconds for t in record.trials)
    results = sum(len(t.results) for t in record.trials)
    lines.append(f"- trial-hours of training: {trial_seconds / 3600:.3f} ({results} epochs reported)")
    if s and s.get("checkpoints"):
        c = s["checkpoints"]
        lines.append(
            f"- checkpoints kept: {c['kept']} ({c['bytes'] / 1e6:.1f} MB); deleted by retention: {c['deleted']}"
        )
    best = record.best_trial()
    if best is not None:
        _, values = best.series(key)
        if values:
            top = max(values) if higher else min(values)
            lines.append(f"- best {label}: {top:.4g} (trial `{best.trial_id}`)")
    if record.rungs:
        lines += [
            "",
            "## ASHA rungs",
            "",
            "| rung (epoch) | reached | promoted | stopped |",
            "| ---: | ---: | ---: | ---: |",
        ]
        for rung in sorted({int(r["rung"]) for r in record.rungs}):
            at = [r for r in record.rungs if int(r["rung"]) == rung]
            promoted = sum(r["decision"] == "promoted" for r in at)
            lines.append(f"| {rung} | {len(at)} | {promoted} | {len(at) - promoted} |")
    if record.exploits:
        lines += [
            "",
            "## PBT exploits",
            "",
            f"{len(record.exploits)} exploits; the last ones:",
            "",
            "| epoch | trial | cloned from | changes |",
            "| ---: | --- | --- | --- |",
        ]
        for e in record.exploits[-10:]:
            changes = ", ".join(f"{k} {_fmt(e['old'].get(k))}->{_fmt(v)}" for k, v in e["new"].items())
            lines.append(f"| {e['step']} | {e['trial']} | {e['cloned_from']} | {changes} |")
    if record.series:
        lines += _series_section(record.series)
    lines += ["", "## Plots", ""]
    captions = {
        "learning_curves.png": "Learning curves of every trial (stopped trials faded, the best in bold).",
        "best_so_far.png": "Best validation score so far against wall time.",
        "asha_rungs.png": "ASHA: trials promoted and stopped at each rung.",
        "pbt_lineage.png": "PBT: who cloned whom (left) and the winner's hyperparameter schedule (right).",
        "series.png": "The best and the worst series by test MASE: step-1 forecasts over the actuals.",
    }
    for name in plots:
        lines += [f"![{captions[name]}]({name})", "", captions[name], ""]
    return "\n".join(lines) + "\n"


def _series_section(detail: dict[str, Any]) -> list[str]:
    rows = detail.get("series", [])
    beaten = sum(1 for r in rows if r["naive_mae"] is not None and r["mae"] < r["naive_mae"])
    lines = [
        "",
        "## Series",
        "",
        f"{len(rows)} series on the {detail.get('split', 'test')} split; the model's MAE is below seasonal naive's on "
        f"{beaten}. The best and the worst by MASE:",
        "",
        "| series | MASE | seasonal-naive MASE | MAE | seasonal-naive MAE |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in [*detail.get("best", []), *detail.get("worst", [])]:
        lines.append(
            f"| {r['series']} | {_fmt(r['mase'])} | {_fmt(r['naive_mase'])} | {_fmt(r['mae'])} | {_fmt(r['naive_mae'])} |"
        )
    return lines


SCORE_LABELS = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "rmse": "RMSE",
    "mae": "MAE",
    "mase": "MASE",
    "smape": "sMAPE %",
    "pinball": "pinball",
    "coverage": "interval coverage",
}
OPTIONAL_SCORES = ("mase", "smape", "pinball", "coverage")
"""Forecasting figures a run may or may not have (panels, quantile levels): a column when the best model has it."""


def _score_keys(record: ExperimentRecord) -> list[str]:
    if record.task == "classify":
        return ["accuracy", "macro_f1"]
    test = (record.summary or {}).get("best", {}).get("test", {})
    return ["rmse", "mae", *(k for k in OPTIONAL_SCORES if test.get(k) is not None)]


def _score_names(record: ExperimentRecord) -> list[str]:
    return [f"{split} {SCORE_LABELS[k]}" for split in ("val", "test") for k in _score_keys(record)]


def _score_cells(record: ExperimentRecord, val: dict[str, Any], test: dict[str, Any]) -> str:
    return " | ".join(_fmt(part.get(k)) for part in (val, test) for k in _score_keys(record))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


__all__ = ["ExperimentRecord", "markdown", "read_experiment", "write_report"]
