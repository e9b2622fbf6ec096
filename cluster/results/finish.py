"""The end of a run: the best trials' checkpoints scored on the test split beside the baselines, the model exported,
checkpoints pruned, and ``best.json`` written last."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from cluster.plan.options import RUN_WIDE_KEYS
from cluster.plan.planning import Plan
from cluster.plan.storage import read_events
from cluster.results.ensemble import best_checkpoint, top_trials, trial_id
from cluster.results.scoring import score_classify, score_forecast
from cluster.results.summary import BestTrial, Ensemble, EnsembleMember, Scores, Summary
from cluster.tune.retention import prune_stopped_checkpoints
from trainables import metrics as M
from trainables.data.handle import DataHandle
from trainables.export import export_model
from trainables.storage import write_bytes_atomic


def finish(p: Plan, rounds: list[Any], handle: DataHandle, task: str, started: float) -> Summary:
    """Score, export, prune, and write ``best.json`` (its presence marks the experiment finished). ``rounds``: the
    ResultGrid of the experiment's first run and of each ``extend`` after it, oldest first."""
    summary, detail = summarize(p, rounds, handle, time.monotonic() - started, task)
    if detail is not None:
        write_bytes_atomic(p.paths.series_detail, json.dumps(detail, indent=2).encode())
    write_bytes_atomic(p.paths.best_json, summary.to_json().encode())
    return summary


def best_result(rounds: list[Any]) -> Any:
    """The trial with the lowest validation loss it ever reported, over every round (Tune's own choice within each
    round: ``get_best_result(scope="all")``; between rounds the lower loss, the older round on a tie)."""
    candidates = []
    for grid in rounds:
        try:
            candidates.append(grid.get_best_result(metric=M.VAL_LOSS, mode="min", scope="all", filter_nan_and_inf=True))
        except RuntimeError:  # a round where no trial reported a finite loss
            continue
    if not candidates:
        raise RuntimeError("every trial failed; no trial reported a finite validation loss")
    return min(candidates, key=_lowest_loss)


def _lowest_loss(result: Any) -> float:
    frame = result.metrics_dataframe
    if frame is None or M.VAL_LOSS not in frame:
        return math.inf
    values = [float(v) for v in frame[M.VAL_LOSS] if isinstance(v, (int, float)) and math.isfinite(v)]
    return min(values) if values else math.inf


def summarize(
    p: Plan, rounds: list[Any], handle: DataHandle, wall_time: float, task: str = "forecast"
) -> tuple[Summary, dict[str, Any] | None]:
    """The summary of every round's trials, and (panels) the per-series detail the report draws."""
    opts = p.options
    results = [r for grid in rounds for r in grid]
    ok = [r for r in results if r.error is None and r.metrics]
    errored = [r for r in results if r.error is not None]
    if not ok:
        first = errored[0].error if errored else "no trial reported a result"
        raise RuntimeError(f"every trial failed; first error: {first}")
    finished = sum(1 for r in ok if int(r.metrics.get(M.EPOCH, 0)) >= opts.max_epochs)
    best = best_result(rounds)
    chosen = [(r, *best_checkpoint(r)) for r in top_trials(ok, opts.ensemble, best=best)]
    checkpoint = chosen[0][1]
    notes: list[str] = []
    if len(rounds) > 1:
        sizes = ", ".join(str(len(grid)) for grid in rounds)
        notes.append(f"trials from {len(rounds)} runs (the first, then each extend): {sizes}; wall time is the last's")
    if len(chosen) < opts.ensemble:
        notes.append(
            f"ensemble: {len(chosen)} of the {opts.ensemble} trials asked for; the others reported no usable result"
        )
    checkpoints = [c for _, c, _ in chosen]
    scored = score_classify(checkpoints, handle) if task == "classify" else score_forecast(checkpoints, handle)
    ensemble = _ensemble(chosen, scored.ensemble, task) if scored.ensemble is not None else None
    export_model(
        p.paths.best_model,
        checkpoint_payloads=scored.payloads,
        fitted=scored.fitted,
        series_scaling=scored.series_scaling,
    )
    retention = prune_stopped_checkpoints(
        p.paths.root,
        ok,
        max_epochs=opts.max_epochs,
        keep=opts.checkpoints.keep_stopped,
        protect={c.path for _, c, _ in chosen},
        keep_per_trial=opts.checkpoints.num_to_keep,
    )
    summary = Summary(
        experiment=p.paths.root.uri,
        task=task,
        scheduler=opts.scheduler.kind,
        search_space=p.space.name,
        dataset=scored.dataset,
        target=scored.target,
        horizon=scored.horizon,
        trials={"total": len(results), "finished": finished, "stopped": len(ok) - finished, "errored": len(errored)},
        best=BestTrial(
            trial_id=trial_id(best),
            config={k: v for k, v in best.config.items() if k not in RUN_WIDE_KEYS},
            epoch=int(scored.payloads[0]["state"]["epoch"]),
            val=scored.best["val"],
            test=scored.best["test"],
            checkpoint=checkpoint.path,
        ),
        baselines=scored.baselines,
        wall_time_s=wall_time,
        pbt_exploits=len(read_events(p.paths.lineage.uri)),
        exported_model=p.paths.best_model.uri,
        checkpoints=retention,
        notes=notes,
        ensemble=ensemble,
        series=scored.series,
    )
    return summary, scored.series_detail


def _ensemble(chosen: list[tuple[Any, Any, dict[str, Any]]], scores: dict[str, Scores], task: str) -> Ensemble:
    def member_val(metrics: dict[str, Any]) -> Scores:
        if task == "classify":
            return Scores(accuracy=metrics.get(M.VAL_ACCURACY), macro_f1=metrics.get(M.VAL_MACRO_F1))
        return Scores(rmse=metrics.get(M.VAL_RMSE), mae=metrics.get(M.VAL_MAE))

    members = [
        EnsembleMember(trial_id=trial_id(r), epoch=int(m.get(M.EPOCH, 0)), val=member_val(m), checkpoint=c.path)
        for r, c, m in chosen
    ]
    return Ensemble(members=members, val=scores["val"], test=scores["test"])


__all__ = ["best_result", "finish", "summarize"]
