"""NeuralForecast's AutoLSTM on births by state, scored as lstm-tune scores a panel; runs inside its own virtual
environment (``benchmarks/panel_quality.py`` makes it), so it imports nothing of this project.

``python nf_autolstm.py BIRTHS.csv.xz SECONDS``: the states' daily births (repeated (state, date) pairs averaged, as
``--duplicates mean`` does), split at the panel's shared cut-offs (the 70% and 85% points of the distinct dates), the
default AutoLSTM search space with MAE loss tuned for SECONDS on the validation period, then a forecast of 7 days
from every test day (``cross_validation`` with ``step_size=1``). Prints one JSON line: mean MASE over states (each
state's MAE over the test forecasts divided by its training period's one-week naive MAE, lstm-tune's MASE scale),
the same for seasonal naive on the same targets, and on how many states AutoLSTM's MAE is lower.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pandas as pd

HORIZON = 7
SEASON = 7


def main(path: str, seconds: float) -> None:
    from neuralforecast import NeuralForecast  # type: ignore[import-not-found]
    from neuralforecast.auto import AutoLSTM  # type: ignore[import-not-found]
    from neuralforecast.losses.pytorch import MAE  # type: ignore[import-not-found]

    raw = pd.read_csv(path)
    df = raw.groupby(["state", "date"], as_index=False)["births"].mean()
    df = df.rename(columns={"state": "unique_id", "date": "ds", "births": "y"})
    df["ds"] = pd.to_datetime(df["ds"])
    dates = np.sort(df["ds"].unique())
    n = len(dates)
    train_end, val_end = round(n * 0.7), round(n * 0.85)
    first_val, first_test = dates[train_end], dates[val_end]
    model = AutoLSTM(h=HORIZON, loss=MAE(), time_budget=seconds, num_samples=1000, backend="ray")
    started = time.perf_counter()
    forecasts = NeuralForecast(models=[model], freq="D").cross_validation(
        df, val_size=val_end - train_end, test_size=n - val_end, step_size=1, n_windows=None
    )
    elapsed = time.perf_counter() - started
    forecasts = forecasts[forecasts["ds"] >= first_test]
    mase, naive_mase, beats = [], [], 0
    for uid, group in df.groupby("unique_id"):
        y = group.set_index("ds")["y"].sort_index()
        train = y[y.index < first_val].to_numpy()
        scale = np.abs(train[SEASON:] - train[:-SEASON]).mean()
        f = forecasts[forecasts["unique_id"] == uid]
        # Seasonal naive from the same origin: the value a week before the target (horizon <= season).
        naive = y.reindex(f["ds"] - pd.Timedelta(days=SEASON)).to_numpy()
        mae, naive_mae = np.abs(f["y"] - f["AutoLSTM"]).mean(), np.abs(f["y"].to_numpy() - naive).mean()
        mase.append(mae / scale)
        naive_mase.append(naive_mae / scale)
        beats += int(mae < naive_mae)
    print(
        json.dumps(
            {
                "tool": "neuralforecast AutoLSTM",
                "seconds_budget": seconds,
                "seconds": elapsed,
                "series": len(mase),
                "targets": len(forecasts),
                "cut_offs": [str(pd.Timestamp(first_val).date()), str(pd.Timestamp(first_test).date())],
                "mase": float(np.mean(mase)),
                "seasonal_naive_mase": float(np.mean(naive_mase)),
                "beats_seasonal_naive": beats,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
