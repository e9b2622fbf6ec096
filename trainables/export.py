"""The exported best model: weights, shape, and the fitted preprocessing, so raw rows can be forecast directly.

>>> from trainables.export import load_forecaster
>>> forecaster = load_forecaster("runs/quickstart/best_model")
>>> forecaster.predict(raw_rows)        # a DataFrame with the source's columns, oldest first
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from trainables.checkpoint import CheckpointError
from trainables.config import ModelConfig
from trainables.data.forecast_prep import TIME, FittedPrep, transform_frame, unscale_target
from trainables.model import LSTMForecaster, build_model
from trainables.storage import Location, read_bytes, write_bytes_atomic

EXPORT_FORMAT_VERSION = 1
MODEL_FILE = "model.pt"
PREP_FILE = "preprocessing.json"


@dataclass
class Forecaster:
    """A trained model with the preprocessing it was trained behind."""

    model: LSTMForecaster
    fitted: FittedPrep
    window: int
    step: pd.Timedelta
    """Spacing of the series (one hour for Beijing PM2.5)."""

    @property
    def horizon(self) -> int:
        return self.fitted.config.horizon

    @torch.no_grad()
    def predict(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Forecast ``horizon`` steps after every row that has ``window`` rows of history in ``raw``.

        Returns columns ``origin`` (last row seen), ``target_time`` and ``forecast`` (original units).
        """
        frame = transform_frame(raw, self.fitted)
        n = len(frame)
        if n < self.window:
            raise ValueError(f"predict: {n} rows given; the model needs at least window = {self.window}")
        features = torch.from_numpy(frame[self.fitted.feature_names].to_numpy(np.float32, copy=True))
        ends = torch.arange(self.window - 1, n)
        index = ends.unsqueeze(1) - torch.arange(self.window - 1, -1, -1).unsqueeze(0)
        self.model.eval()
        preds = torch.cat([self.model(features[index[i : i + 2048]]) for i in range(0, len(ends), 2048)])
        origin = frame[TIME].to_numpy()[ends.numpy()]
        return pd.DataFrame(
            {
                "origin": origin,
                "target_time": pd.to_datetime(origin) + self.step * self.horizon,
                "forecast": unscale_target(preds.double().numpy(), self.fitted),
            }
        )


def export_model(dest: Location, *, checkpoint_payload: dict[str, Any], fitted: FittedPrep) -> None:
    """Write ``model.pt`` (tensors and plain data only) and ``preprocessing.json`` under ``dest``."""
    import io

    payload = {
        "format_version": EXPORT_FORMAT_VERSION,
        "model": checkpoint_payload["model"],
        "model_info": checkpoint_payload["model_config"],
        "data_info": checkpoint_payload["data_info"],
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_bytes_atomic(dest.child(MODEL_FILE), buf.getvalue())
    prep = {"fitted": fitted.to_dict()}
    write_bytes_atomic(dest.child(PREP_FILE), json.dumps(prep, indent=2).encode())


def load_forecaster(uri: str | Location) -> Forecaster:
    """Load an exported model folder (local path or ``s3://``) written by ``lstm-tune run``."""
    import io

    from trainables.storage import resolve

    loc = uri if isinstance(uri, Location) else resolve(uri)
    try:
        payload = torch.load(io.BytesIO(read_bytes(loc.child(MODEL_FILE))), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{loc.uri}: no {MODEL_FILE}; is this a best_model folder?") from None
    except Exception as exc:  # the unpickler's refusal types vary; any failure here means "not safe/valid"
        raise CheckpointError(f"{loc.child(MODEL_FILE).uri} refused or unreadable: {exc}") from None
    if payload.get("format_version") != EXPORT_FORMAT_VERSION:
        raise CheckpointError(f"{loc.uri}: export format {payload.get('format_version')!r} is not supported")
    prep = json.loads(read_bytes(loc.child(PREP_FILE)).decode())
    fitted = FittedPrep.from_dict(prep["fitted"])
    info = payload["model_info"]
    model = build_model(ModelConfig(**info["config"]), n_features=info["n_features"], target_index=info["target_index"])
    model.load_state_dict(payload["model"])
    model.eval()
    return Forecaster(
        model=model,
        fitted=fitted,
        window=int(payload["data_info"]["window"]),
        step=pd.Timedelta(seconds=fitted.step_seconds),
    )


__all__ = ["Forecaster", "export_model", "load_forecaster"]
