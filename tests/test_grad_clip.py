"""Gradient clipping and what a trial reports of it: the pre-clip norm of every step, and the share of steps that
``grad_clip`` scaled down, so a user can tell whether a limit binds at all."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.helpers import DirSession
from trainables import metrics as M
from trainables.config import TrialConfig
from trainables.data.loader import DataHandle, load_forecast_data
from trainables.loop import run_trial
from trainables.tasks import EpochAccumulator, StepResult, _step

# A single weight row [0, 0, 0] fitting y = 1 at x = (1, 2, 2): the loss (w.x - 1)^2 has gradient -2x, of norm 6.
X, Y, NORM = torch.tensor([[1.0, 2.0, 2.0]]), torch.tensor([[1.0]]), 6.0


def one_step(grad_clip: float) -> tuple[StepResult, float]:
    """One step of a zero-weight linear model: what it reports, and the gradient norm the optimiser was given."""
    model = nn.Linear(3, 1, bias=False)
    nn.init.zeros_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay; the clipped gradient is kept
    loss = ((model(X) - Y) ** 2).mean()
    result = _step(model, optimizer, loss, TrialConfig.from_flat({"grad_clip": grad_clip}))
    assert model.weight.grad is not None
    return result, float(model.weight.grad.norm())


@pytest.mark.parametrize(
    ("grad_clip", "clipped", "applied"),
    [
        (1.5, True, 1.5),
        (5.99, True, 5.99),  # just inside the norm: binds
        (6.0, False, NORM),  # at the norm: nothing to scale
        (6.01, False, NORM),
        (0.0, False, NORM),  # 0 turns clipping off; the norm is still measured
    ],
)
def test_step_reports_the_norm_before_clipping(grad_clip: float, clipped: bool, applied: float) -> None:
    result, given = one_step(grad_clip)
    assert float(result.grad_norm) == pytest.approx(NORM, rel=1e-6), "the reported norm must be the pre-clip one"
    assert bool(result.clipped) is clipped, f"grad_clip={grad_clip} against a norm of {NORM}"
    assert given == pytest.approx(applied, rel=1e-5), "the optimiser must get the clipped gradient"


def test_epoch_accumulator_averages_over_steps_and_weights_loss_by_samples() -> None:
    epoch = EpochAccumulator(torch.device("cpu"))
    epoch.add(torch.tensor(1.0), 2, StepResult(grad_norm=torch.tensor(0.1), clipped=torch.tensor(False)))
    epoch.add(torch.tensor(4.0), 1, StepResult(grad_norm=torch.tensor(0.3), clipped=torch.tensor(True)))
    stats = epoch.stats()
    assert (stats.steps, stats.samples) == (2, 3)
    assert stats.loss == pytest.approx(2.0)  # (1 x 2 + 4 x 1) / 3 samples
    assert stats.grad_norm == pytest.approx(0.2)
    assert stats.clipped == pytest.approx(0.5)


def test_an_empty_epoch_reports_nan_not_zero() -> None:
    stats = EpochAccumulator(torch.device("cpu")).stats()
    assert stats.steps == 0 and stats.samples == 0
    assert math.isnan(stats.loss) and math.isnan(stats.grad_norm) and math.isnan(stats.clipped)


@pytest.mark.parametrize(("grad_clip", "clipped"), [(1e-9, 1.0), (0.0, 0.0), (1e9, 0.0)])
def test_a_trial_reports_its_gradient_norm_and_clipped_share(
    prepared_data: str, tmp_path: Path, grad_clip: float, clipped: float
) -> None:
    flat = {"hidden_size": 4, "batch_size": 2048, "window": 6, "max_epochs": 1, "grad_clip": grad_clip}
    session = DirSession(str(tmp_path))
    data = load_forecast_data(DataHandle(uri=prepared_data))
    run_trial(TrialConfig.from_flat(flat), data, session, device=torch.device("cpu"))
    (report,) = session.reports
    assert 0 < report[M.GRAD_NORM] < math.inf, report[M.GRAD_NORM]
    assert report[M.CLIPPED] == clipped, f"grad_clip={grad_clip}: clipped share {report[M.CLIPPED]}"
