"""Trial configuration: one keyword-only dataclass per concern, built from Tune's flat config dict.

Tune samples a flat dict (``{"lr": ..., "hidden_size": ...}``) because PBT mutates flat keys; this module is where the
raw dict stops. Each tunable field carries its allowed range in ``metadata`` so the driver can check a search space
against the trainable before any trial starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["int", "float", "bool", "str"]
LOSSES = ("mse", "mae", "huber", "quantile")
DEFAULT_QUANTILES = (0.1, 0.5, 0.9)


def hyper(
    default: Any,
    *,
    kind: Kind,
    choices: tuple[str, ...] = (),
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    shape_changing: bool = False,
    help: str,
) -> Any:
    """A dataclass field that may be tuned, with its range (read by the driver's search-space check)."""
    return field(
        default=default,
        metadata={
            "tunable": True,
            "kind": kind,
            "choices": choices,
            "low": low,
            "high": high,
            "low_open": low_open,
            "high_open": high_open,
            "shape_changing": shape_changing,
            "help": help,
        },
    )


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape and regularisation of the LSTM forecaster."""

    hidden_size: int = hyper(64, kind="int", low=1, high=4096, shape_changing=True, help="LSTM units per layer")
    """LSTM units per layer."""
    num_layers: int = hyper(1, kind="int", low=1, high=8, shape_changing=True, help="stacked LSTM layers")
    """Stacked LSTM layers."""
    dropout: float = hyper(0.0, kind="float", low=0.0, high=1.0, high_open=True, help="dropout probability")
    """Dropout between LSTM layers and before the head."""
    input_dropout: float = hyper(0.0, kind="float", low=0.0, high=1.0, high_open=True, help="dropout on inputs")
    """Dropout on the inputs (rows, or token embeddings)."""
    bidirectional: bool = hyper(False, kind="bool", shape_changing=True, help="read the window both ways")
    """Also read the sequence backwards. For forecasting the window holds only the past, so nothing leaks."""
    pooling: str = hyper(
        "last", kind="str", choices=("last", "mean", "additive", "dot"), shape_changing=True, help="state pooling"
    )
    """How the LSTM states become one vector: the final state, their mean, or additive / dot-product attention."""
    init: str = hyper(
        "default",
        kind="str",
        choices=("default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal"),
        help="input-weight initialisation",
    )
    """Initialisation of the LSTM's input weights ("default": PyTorch's uniform)."""
    recurrent_init: str = hyper(
        "default",
        kind="str",
        choices=("default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal"),
        help="recurrent-weight initialisation",
    )
    """Initialisation of the recurrent weights, per gate block ("orthogonal" is the usual choice)."""
    forget_bias: float | None = hyper(None, kind="float", low=-10.0, high=10.0, help="forget-gate bias at init")
    """Forget-gate bias at initialisation (1.0 is common); None keeps PyTorch's."""
    embedding_dim: int = hyper(100, kind="int", low=1, high=4096, shape_changing=True, help="token embedding size")
    """Size of token embeddings (text classification); must equal the vector file's when pretrained."""
    embeddings: str = hyper(
        "random", kind="str", choices=("random", "frozen", "finetune"), shape_changing=True, help="embedding init"
    )
    """Text: random embeddings, or pretrained vectors (run option --embeddings) kept frozen or fine-tuned."""
    head: str = hyper("linear", kind="str", choices=("linear", "decoder"), shape_changing=True, help="forecast head")
    """Forecasting: all ``horizon`` steps from one linear layer, or an LSTM decoder unrolled step by step (each step
    fed the previous forecast)."""
    residual: bool = hyper(True, kind="bool", help="predict the change from the last observed target")
    """Forecasting: predict the change from the last observed target instead of the level (a skip connection to
    persistence)."""
    level_gain: bool = hyper(
        False, kind="bool", shape_changing=True, help="forecast = a + b * current level (b learned per window)"
    )
    """Forecasting: the head also outputs a gain ``b`` and the forecast gains ``b`` times the last observed level (in
    the target's original units, divided by its scale). Series such as PM2.5 move in proportion to their level, which a
    plain additive head can only approximate; the gain starts at zero, so training starts from the plain head."""
    window_norm: bool = hyper(
        False, kind="bool", help="forecast: normalise each window's target by its own mean and spread"
    )
    """Forecasting: the window's target history is centred and scaled by its own mean and standard deviation before the
    encoder sees it, and the forecast is mapped back (instance normalisation, as RevIN). The model then learns shapes,
    not levels: a series that grows past its training level (births in Florida) is forecast from where it is now.
    No weights depend on it, so PBT may flip it."""


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """Adam(W) optimiser and the batches it sees."""

    lr: float = hyper(3e-3, kind="float", low=0.0, high=1.0, low_open=True, help="learning rate")
    """Learning rate (of the first epoch when ``lr_decay`` < 1)."""
    lr_decay: float = hyper(
        1.0, kind="float", low=0.0, high=1.0, low_open=True, help="learning-rate factor per epoch (1: constant)"
    )
    """Epoch ``e`` trains at ``lr * lr_decay ** (e - 1)``: large early steps, small late ones, without tying the
    schedule to ``max_epochs`` (ASHA stops trials anywhere). PBT mutates the base ``lr``; the epoch count, and so the
    decay, carries on from the donor's checkpoint."""
    weight_decay: float = hyper(0.0, kind="float", low=0.0, high=1.0, help="AdamW weight decay (L2)")
    """Decoupled weight decay (AdamW): the L2 penalty."""
    l1: float = hyper(0.0, kind="float", low=0.0, high=1.0, help="L1 penalty on weights")
    """L1 penalty: ``l1 * sum(|w|)`` over weight matrices and embeddings is added to the loss."""
    grad_clip: float = hyper(1.0, kind="float", low=0.0, high=1e6, help="max gradient norm; 0 turns clipping off")
    """Maximum global gradient norm; 0 turns clipping off."""
    batch_size: int = hyper(128, kind="int", low=1, high=65536, help="windows per batch")
    """Windows per training batch."""
    loss: str = hyper(
        "mse",
        kind="str",
        choices=LOSSES,
        shape_changing=True,
        help="forecasting: training loss on the scaled target (mse, mae, huber, quantile)",
    )
    """Forecasting: what training minimises on the scaled target: mse, mae (robust to spikes: it fits the median),
    huber (squared near zero, absolute beyond one scaled unit), or quantile (the mean pinball loss over the run's
    ``quantiles``: the model forecasts each level, the median one is its point forecast)."""


@dataclass(frozen=True, kw_only=True)
class WindowConfig:
    """How rows become training examples."""

    window: int = hyper(24, kind="int", low=1, high=4096, shape_changing=True, help="past rows the model sees")
    """Past rows (hours for hourly data) the model sees for each forecast."""


@dataclass(frozen=True, kw_only=True)
class RunLimits:
    """Fixed for every trial of an experiment by the driver, never sampled."""

    max_epochs: int = 10
    """Epochs a trial may run if no scheduler stops it."""
    seed: int = 0
    """Base seed; each trial derives its own from this and its config."""
    threads: int = 0
    """torch threads; 0 means the CPUs Ray assigned to the trial."""
    patience: int = 0
    """Early stopping inside a trial: stop after this many epochs without improvement (0: off)."""
    min_delta: float = 0.0
    """Early stopping: an improvement of val/loss smaller than this does not count."""
    epoch_samples: int = 0
    """Training samples an epoch draws at random, split evenly over a data-parallel trial's workers (0: all)."""
    metric: str = "loss"
    """What the trial reports as ``val/loss``, the figure it is selected on: loss (scaled MSE), rmse, mae, mase,
    smape, pinball (forecasting; a classifier reports its cross-entropy)."""
    quantiles: tuple[float, ...] | str = DEFAULT_QUANTILES
    """Levels a ``loss = quantile`` model forecasts, and that the pinball metric averages over (a point forecast
    counts as every level)."""

    def __post_init__(self) -> None:
        # Tune's config holds "0.1,0.5,0.9" (searchers and HParams take scalars); the model wants floats.
        raw = self.quantiles.split(",") if isinstance(self.quantiles, str) else self.quantiles
        object.__setattr__(self, "quantiles", tuple(float(q) for q in raw))

    @property
    def levels(self) -> tuple[float, ...]:
        """:attr:`quantiles` as the floats they are after construction."""
        return tuple(float(q) for q in self.quantiles)


@dataclass(frozen=True, kw_only=True)
class TrialConfig:
    """Everything one trial needs to know, built from Tune's flat dict."""

    model: ModelConfig
    optim: OptimConfig
    window: WindowConfig
    limits: RunLimits

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> TrialConfig:
        """Split Tune's flat dict into sections; unknown keys are an error naming the key."""
        sections: dict[str, type[Any]] = {
            "model": ModelConfig,
            "optim": OptimConfig,
            "window": WindowConfig,
            "limits": RunLimits,
        }
        owner = {f.name: section for section, dc in sections.items() for f in dataclasses.fields(dc)}
        unknown = sorted(k for k in flat if k not in owner)
        if unknown:
            raise ValueError(f"trial config: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(owner))}")
        kwargs: dict[str, dict[str, Any]] = {s: {} for s in sections}
        for key, value in flat.items():
            kwargs[owner[key]][key] = _coerce(sections[owner[key]], key, value)
        return cls(**{s: sections[s](**kw) for s, kw in kwargs.items()})

    def to_flat(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for section in (self.model, self.optim, self.window, self.limits):
            out.update(dataclasses.asdict(section))
        return out


def _coerce(dc: type[Any], key: str, value: Any) -> Any:
    """Tune's quniform yields floats for integer parameters; make them ints so shapes are ints."""
    kind = next(f.metadata.get("kind") for f in dataclasses.fields(dc) if f.name == key)
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def tunable_fields() -> list[dataclasses.Field[Any]]:
    """Every field a search space may set, across all sections."""
    out: list[dataclasses.Field[Any]] = []
    for dc in (ModelConfig, OptimConfig, WindowConfig):
        out.extend(f for f in dataclasses.fields(dc) if f.metadata.get("tunable"))
    return out


__all__ = [
    "DEFAULT_QUANTILES",
    "LOSSES",
    "ModelConfig",
    "OptimConfig",
    "RunLimits",
    "TrialConfig",
    "WindowConfig",
    "tunable_fields",
]
