"""The exported best model: weights, shape, and the fitted preprocessing, so raw input can be scored directly.

>>> from trainables.export import load_classifier, load_forecaster
>>> forecaster = load_forecaster("runs/quickstart/best_model")
>>> forecaster.predict(raw_rows)        # a DataFrame with the source's columns, oldest first
>>> load_classifier("runs/r8/best_model").predict(["oil prices rose ..."])
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from trainables.checkpoint import CheckpointError, unsafe_file
from trainables.data.forecast_prep import (
    TIME,
    FittedPrep,
    series_key,
    series_statistic,
    transform_frame,
    unscale_target,
)
from trainables.data.text_loader import TextSplit
from trainables.data.text_prep import FittedText, TextPrepConfig
from trainables.model import (
    LSTMClassifier,
    LSTMForecaster,
    classifier_from_info,
    forecaster_from_info,
    mean_forecast,
    point_forecast,
    shared_levels,
)
from trainables.storage import Location, read_bytes, write_bytes_atomic
from trainables.tasks import mean_probabilities

EXPORT_FORMAT_VERSION = 2
"""2: a list of members (one trial's model, or an ensemble of several); 1: one model (still read)."""
MODEL_FILE = "model.pt"
PREP_FILE = "preprocessing.json"


@dataclass(frozen=True)
class ForecastMember:
    """One trained forecaster and the window it reads."""

    model: LSTMForecaster
    window: int


@dataclass
class Forecaster:
    """Trained models with the preprocessing they were trained behind; several members forecast their mean."""

    members: list[ForecastMember]
    fitted: FittedPrep
    step: pd.Timedelta
    """Spacing of the series (one hour for Beijing PM2.5)."""
    series_scaling: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """Panels: per series key, per numeric column, the (centre, scale) fitted on that series' training rows."""

    @property
    def horizon(self) -> int:
        return self.fitted.config.horizon

    @property
    def window(self) -> int:
        """Rows of history a forecast needs: the longest member window."""
        return max(m.window for m in self.members)

    @property
    def quantiles(self) -> tuple[float, ...]:
        """The levels every member forecasts (``predict`` adds a ``q<level>`` column for each); empty when the
        members forecast a point (or different levels: then their point forecasts are averaged)."""
        return shared_levels([m.model.quantiles for m in self.members])

    def level_columns(self) -> list[str]:
        return [f"q{q:g}" for q in self.quantiles]

    @torch.no_grad()
    def predict(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Forecast steps 1..``horizon`` after every row that has ``window`` rows of history in ``raw``, not counting
        the first ``history_rows`` of ``raw`` (what its lag, rolling and change features read before a row).

        Returns one row per origin and step: ``origin`` (last row seen), ``step``, ``target_time`` and ``forecast``
        (original units, the members' mean), ordered by origin, then step. A quantile forecaster adds one column per
        level (``q0.1``, ``q0.5``, ``q0.9``: the outermost two bound its prediction interval; ``forecast`` is the
        level nearest 0.5).
        """
        if self.fitted.config.is_panel:
            return self._predict_panel(raw)
        return self._predict_one(raw)

    def _predict_panel(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Each series of ``raw`` forecast on its own: scaled by what its training rows gave (a series the model never
        saw: by its own rows here, said in the ``scaling`` column), through the shared model, back in units."""
        cfg = self.fitted.config
        absent = [c for c in cfg.series if c not in raw.columns]
        if absent:
            raise ValueError(
                f"predict: the rows lack the series column(s) {absent}; the model forecasts series by {list(cfg.series)}"
            )
        frames, short = [], []
        for values, group in raw.groupby(list(cfg.series), sort=True):
            key_values = values if isinstance(values, tuple) else (values,)
            key = series_key(key_values)
            stored = self.series_scaling.get(key)
            # A series column that is a static covariate stays: its embedding (or the unknown slot) is an input.
            keys_only = [c for c in cfg.series if c not in cfg.static]
            scaled = group.drop(columns=keys_only).reset_index(drop=True)
            scaling: dict[str, tuple[float, float]] = {}
            for col in cfg.numeric:
                numbers = pd.to_numeric(scaled[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                centre, scale = (stored[col][0], stored[col][1]) if stored else series_statistic(numbers, cfg.scaler)
                scaling[col] = (centre, scale)
                scaled[col] = (numbers - centre) / scale
            try:
                frame = self._predict_one(scaled)
            except ValueError:
                short.append(key)
                continue
            centre, scale = scaling[cfg.target]
            for column in ["forecast", *self.level_columns()]:
                frame[column] = frame[column] * scale + centre
            for i, (col, value) in enumerate(zip(cfg.series, key_values, strict=True)):
                frame.insert(i, col, [value] * len(frame))
            frame["scaling"] = "trained" if stored else "own history"
            frames.append(frame)
        if short:
            needs = self.window + cfg.history_rows
            raise ValueError(
                f"predict: series {', '.join(repr(k) for k in short[:10])}{' ...' if len(short) > 10 else ''} "
                f"{'has' if len(short) == 1 else 'have'} fewer than the {needs} rows a forecast needs"
            )
        return pd.concat(frames, ignore_index=True)

    def _predict_one(self, raw: pd.DataFrame) -> pd.DataFrame:
        frame = transform_frame(raw, self.fitted)
        n = len(frame)
        history = self.fitted.config.history_rows
        if n < self.window + history:
            extra = f" + {history} rows its lag and change features read first" if history else ""
            raise ValueError(f"predict: {n} rows given; the model needs at least window = {self.window}{extra}")
        features = torch.from_numpy(frame[self.fitted.feature_names].to_numpy(np.float32, copy=True))
        # Every member forecasts from the same origins: those the longest window can reach.
        ends = torch.arange(history + self.window - 1, n)
        outs = [_member_forecasts(m, features, ends) for m in self.members]
        out, levels = mean_forecast(outs, [m.model.quantiles for m in self.members])
        origin = np.repeat(frame[TIME].to_numpy()[ends.numpy()], self.horizon)
        step = np.tile(np.arange(1, self.horizon + 1), len(ends))

        def units(scaled: torch.Tensor) -> np.ndarray:
            return unscale_target(scaled.double().numpy().reshape(-1), self.fitted)

        columns = {
            "origin": origin,
            "step": step,
            "target_time": pd.to_datetime(origin) + self.step * step,
            "forecast": units(point_forecast(out, levels)),
        }
        columns.update({name: units(out[..., k]) for k, name in enumerate(self.level_columns())})
        return pd.DataFrame(columns)


def _member_forecasts(member: ForecastMember, features: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """Scaled forecasts ``[len(ends), horizon]`` (``[..., levels]`` from a quantile forecaster) of one member from
    windows ending at ``ends``."""
    index = ends.unsqueeze(1) - torch.arange(member.window - 1, -1, -1).unsqueeze(0)
    member.model.eval()
    return torch.cat([member.model(features[index[i : i + 2048]]) for i in range(0, len(ends), 2048)])


@dataclass
class Classifier:
    """Trained text classifiers with the tokenizer and vocabulary they were trained behind; several members vote
    by their mean class probabilities."""

    models: list[LSTMClassifier]
    fitted: FittedText

    @torch.no_grad()
    def predict(self, texts: list[str], batch_size: int = 256) -> pd.DataFrame:
        """One row per document: ``label`` (the class name) and ``confidence`` (its mean softmax probability)."""
        encoder = self.fitted.encoder()
        sequences = [encoder.encode(t) for t in texts]
        lengths = torch.tensor([len(seq) for seq in sequences], dtype=torch.long)
        split = TextSplit(tokens=sequences, lengths=lengths, labels=torch.zeros(len(sequences), dtype=torch.long))
        probs = mean_probabilities(self.models, split, len(self.fitted.labels), torch.device("cpu"), batch_size)
        confidence, index = probs.max(dim=1)
        return pd.DataFrame(
            {"label": [self.fitted.labels[i] for i in index.tolist()], "confidence": confidence.double().numpy()}
        )


def export_model(
    dest: Location,
    *,
    checkpoint_payloads: list[dict[str, Any]],
    fitted: FittedPrep | FittedText,
    series_scaling: dict[str, Any] | None = None,
) -> None:
    """Write ``model.pt`` (tensors and plain data only: one entry per member, the best first) and
    ``preprocessing.json`` under ``dest``: the fitted scalers and encoders of a forecaster, or the tokenizer,
    vocabulary and labels of a classifier."""
    import io

    if not checkpoint_payloads:
        raise ValueError("export: no checkpoint to export")
    payload = {
        "format_version": EXPORT_FORMAT_VERSION,
        "members": [
            {"model": p["model"], "model_info": p["model_config"], "data_info": p["data_info"]}
            for p in checkpoint_payloads
        ],
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_bytes_atomic(dest.child(MODEL_FILE), buf.getvalue())
    prep: dict[str, Any] = (
        {"text": {**fitted.to_dict(), "vocab": fitted.vocab}}
        if isinstance(fitted, FittedText)
        else {"fitted": fitted.to_dict(), **({"series_scaling": series_scaling} if series_scaling else {})}
    )
    write_bytes_atomic(dest.child(PREP_FILE), json.dumps(prep, indent=2).encode())


def _load_payload(uri: str | Location) -> tuple[Location, list[dict[str, Any]], dict[str, Any]]:
    """The folder, its members (format 1's single model as one member) and its preprocessing."""
    import io

    from trainables.storage import resolve

    loc = uri if isinstance(uri, Location) else resolve(uri)
    try:
        payload = torch.load(io.BytesIO(read_bytes(loc.child(MODEL_FILE))), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{loc.uri}: no {MODEL_FILE}; is this a best_model folder?") from None
    except pickle.UnpicklingError as exc:
        raise unsafe_file(loc.child(MODEL_FILE).uri, exc) from None
    except Exception as exc:  # a truncated or foreign file: not a model, and nothing ran
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{loc.child(MODEL_FILE).uri} is not a valid lstm-tune model ({first})") from None
    version = payload.get("format_version") if isinstance(payload, dict) else None
    if version == 1:
        members = [{k: payload[k] for k in ("model", "model_info", "data_info")}]
    elif version == EXPORT_FORMAT_VERSION and payload.get("members"):
        members = list(payload["members"])
    else:
        raise CheckpointError(
            f"{loc.uri}: export format {version!r} is not supported (this lstm-tune reads 1 and {EXPORT_FORMAT_VERSION})"
        )
    prep = json.loads(read_bytes(loc.child(PREP_FILE)).decode())
    return loc, members, prep


def model_task(members: list[dict[str, Any]]) -> str:
    return str(members[0]["model_info"].get("task", "forecast"))


def load_forecaster(uri: str | Location) -> Forecaster:
    """Load an exported forecasting model folder (local path or ``s3://``) written by ``lstm-tune run``."""
    loc, members, prep = _load_payload(uri)
    if model_task(members) != "forecast":
        raise CheckpointError(f"{loc.uri}: a {model_task(members)} model; load it with load_classifier")
    fitted = FittedPrep.from_dict(prep["fitted"])
    loaded = []
    for member in members:
        model = forecaster_from_info(member["model_info"])
        model.load_state_dict(member["model"])
        loaded.append(ForecastMember(model=model.eval(), window=int(member["data_info"]["window"])))
    return Forecaster(
        members=loaded,
        fitted=fitted,
        step=pd.Timedelta(seconds=fitted.step_seconds),
        series_scaling=dict(prep.get("series_scaling", {})),
    )


def load_classifier(uri: str | Location) -> Classifier:
    """Load an exported text classifier folder (local path or ``s3://``) written by ``lstm-tune run``."""
    loc, members, prep = _load_payload(uri)
    if model_task(members) != "classify":
        raise CheckpointError(f"{loc.uri}: a {model_task(members)} model; load it with load_forecaster")
    text = prep["text"]
    fitted = FittedText(config=TextPrepConfig(**text["config"]), vocab=list(text["vocab"]), labels=list(text["labels"]))
    models = []
    for member in members:
        model = classifier_from_info(member["model_info"])
        model.load_state_dict(member["model"])
        models.append(model.eval())
    return Classifier(models=models, fitted=fitted)


def load_model(uri: str | Location) -> Forecaster | Classifier:
    """Either kind of exported model, by what its ``model.pt`` says it is."""
    loc, members, _ = _load_payload(uri)
    return load_classifier(loc) if model_task(members) == "classify" else load_forecaster(loc)


__all__ = [
    "Classifier",
    "ForecastMember",
    "Forecaster",
    "export_model",
    "load_classifier",
    "load_forecaster",
    "load_model",
]
