"""Batches are gathered where the model runs: the split moves to the trial's device once, gather stays on it, and the
epoch's batches and loss do not depend on where they were built."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.config import TrialConfig
from trainables.data.loader import DataHandle, load_forecast_data
from trainables.data.windows import SeriesArrays, gather, target_positions, target_rows
from trainables.evaluate import masked_mse
from trainables.tasks import ForecastTask


def _series(rows: int = 40) -> SeriesArrays:
    return SeriesArrays(
        features=torch.arange(rows * 2, dtype=torch.float32).reshape(rows, 2),
        target=torch.arange(rows, dtype=torch.float32),
        target_raw=np.arange(rows, dtype=np.float64),
        observed=torch.ones(rows, dtype=torch.bool),
        context=torch.zeros(rows, dtype=torch.bool),
    )


def test_gather_stays_on_the_device_of_its_inputs() -> None:
    # "meta" tensors have shapes and a device but no data: enough to see that nothing falls back to the host.
    meta = torch.device("meta")
    series = _series().to(meta)
    assert series.features.device == series.target.device == series.observed.device == meta
    assert isinstance(series.target_raw, np.ndarray)  # scoring in original units stays on the host
    positions = torch.arange(10, 14, device=meta)
    x, y, mask = gather(series, positions, window=5, horizon=3)
    assert (x.shape, y.shape, mask.shape) == ((4, 5, 2), (4, 3), (4, 3))
    assert x.device == y.device == mask.device == target_rows(positions, 3).device == meta


def test_moving_to_the_same_device_copies_nothing() -> None:
    series = _series()
    assert series.to(torch.device("cpu")) is series
    x, y, _ = gather(series, torch.tensor([12]), window=3, horizon=2)
    # window ends 2 rows before position 12 (rows 8..10), targets are rows 11 and 12
    assert x[0, :, 0].tolist() == [16.0, 18.0, 20.0] and y[0].tolist() == [11.0, 12.0]


def test_training_split_is_copied_once_per_device(prepared_data: str) -> None:
    data = load_forecast_data(DataHandle(uri=prepared_data))
    task = ForecastTask(data, TrialConfig.from_flat({"window": 12}))
    cpu = torch.device("cpu")
    train, positions = task._train_on(cpu)
    assert train is data.splits["train"]  # already there: the very same tensors
    assert torch.equal(positions, target_positions(train, window=12, horizon=data.horizon))
    meta = torch.device("meta")
    moved, moved_positions = task._train_on(meta)
    assert moved.features.device == moved_positions.device == meta
    assert task._train_on(meta)[0] is moved  # cached, not copied again next epoch


@pytest.mark.parametrize("batch_size", [7, 4096])
def test_epoch_loss_is_the_sample_weighted_mean_of_batch_losses(prepared_data: str, batch_size: int) -> None:
    """The loss is summed on the device and read once per epoch; it must equal the per-batch average it replaced.
    An epoch of 5,003 windows: batches of 7 leave a last batch of 5, one of 4,096 a last batch of 907."""
    data = load_forecast_data(DataHandle(uri=prepared_data))
    cfg = TrialConfig.from_flat({"window": 6, "hidden_size": 4, "batch_size": batch_size, "lr": 1e-9})
    task = ForecastTask(data, cfg)
    torch.manual_seed(0)
    model = task.build(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the model stays fixed: losses comparable batch by batch
    stats = task.train_epoch(model, optimizer, cfg, seed=3, device=torch.device("cpu"), samples=5003)
    order = task.positions[torch.randperm(len(task.positions), generator=torch.Generator().manual_seed(3))][:5003]
    expected, n = 0.0, 0
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            x, y, mask = gather(data.splits["train"], batch, window=6, horizon=data.horizon)
            expected += float(masked_mse(model(x), y, mask)) * len(batch)
            n += len(batch)
    assert stats.samples == n and stats.steps == -(-n // batch_size)
    assert stats.loss == pytest.approx(expected / n, rel=1e-6)


@pytest.mark.parametrize("samples", [1, 1000, 10**9])
def test_an_epoch_of_n_samples_trains_on_the_first_n_of_its_order(prepared_data: str, samples: int) -> None:
    """``--epoch-samples``: the same shuffled order as a full epoch, cut after ``samples`` windows (all, if fewer)."""
    data = load_forecast_data(DataHandle(uri=prepared_data))
    cfg = TrialConfig.from_flat({"window": 6, "hidden_size": 4, "batch_size": 128})
    task = ForecastTask(data, cfg)
    torch.manual_seed(0)
    model = task.build(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    stats = task.train_epoch(model, optimizer, cfg, seed=3, device=torch.device("cpu"), samples=samples)
    n = min(samples, len(task.positions))
    assert stats.samples == n and stats.steps == -(-n // 128)
    order = task.positions[torch.randperm(len(task.positions), generator=torch.Generator().manual_seed(3))][:n]
    model.train()
    with torch.no_grad():
        x, y, mask = gather(data.splits["train"], order[:128], window=6, horizon=data.horizon)
        first = float(masked_mse(model(x), y, mask))
    if n <= 128:  # one batch: its loss is the epoch's
        assert stats.loss == pytest.approx(first, rel=1e-6)
