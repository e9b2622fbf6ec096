"""Tune from Python: what ``lstm-tune run`` does, as calls a notebook or a pipeline makes.

    python3 docs/examples/tune_from_python.py --storage ./runs --name api-example

It tunes LSTM forecasters on the bundled Beijing PM2.5 data, prints the summary's figures, the trials as a table and
each trial's learning curve, then forecasts from raw rows with the exported model. CI runs it (tests/test_api.py) and
checks its figures against ``lstm-tune run --json`` with the same options.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
from importlib import resources

import pandas as pd

import cluster


def raw_beijing_rows() -> pd.DataFrame:
    """The bundled source's raw rows (what a user would read from their own CSV)."""
    path = resources.files("cluster") / "datasets" / "beijing_pm25_hourly.csv.xz"
    return pd.read_csv(io.BytesIO(lzma.decompress(path.read_bytes())), na_values=["NA"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="./runs")
    parser.add_argument("--name", default="api-example")
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--epoch-samples", type=int, default=4096)
    parser.add_argument("--json-out", help="Write the figures this script printed here, as JSON.")
    args = parser.parse_args()

    # 1. Tune: the same option names as `lstm-tune run`; a dict search space is validated like a YAML file.
    events: list[cluster.ProgressEvent] = []
    result = cluster.run(
        name=args.name,
        storage=args.storage,
        space={
            "extends": "forecast-small",
            "params": {"hidden_size": {"distribution": "choice", "values": [16, 32]}},
        },
        scheduler="fifo",
        num_samples=args.num_samples,
        max_epochs=args.max_epochs,
        epoch_samples=args.epoch_samples,
        seed=0,
        on_progress=events.append,  # every trial event; progress=True prints the CLI's lines instead
    )

    # 2. The summary: the exported model on the test split beside the naive baselines, in the target's units.
    s = result.summary
    assert s is not None
    persistence = s.baselines["persistence"]["test"].rmse
    print(f"{result.uri}: {result.status}; test RMSE {s.best.test.rmse:.3f} vs persistence {persistence:.3f}")
    print(f"best trial {s.best.trial_id} at epoch {s.best.epoch}: {result.best_config}")
    print(f"{len(events)} progress events, the last: {events[-1].line}")

    # 3. Trials and every epoch's result, as pandas DataFrames.
    trials = result.trials()
    print(trials[["trial_id", "state", "epochs", "best_val_rmse", "config.hidden_size"]].to_string(index=False))
    curves = result.history().pivot(index="epoch", columns="trial_id", values="val/rmse")
    print(curves.round(2).to_string())

    # 4. Forecast from raw rows with the exported model (its own preprocessing applied).
    rows = raw_beijing_rows().tail(200)
    forecasts = result.model.predict(rows)
    print(forecasts.tail(3).to_string(index=False))

    if args.json_out:
        figures = {
            "experiment": result.uri,
            "best_trial": s.best.trial_id,
            "test_rmse": s.best.test.rmse,
            "persistence_test_rmse": persistence,
            "trials": len(trials),
            "epochs_reported": len(result.history()),
            "forecasts": len(forecasts),
        }
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
