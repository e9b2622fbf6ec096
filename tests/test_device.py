"""A trial's device and GPU share: the memory cap follows the share, and an out-of-memory error names it."""

from __future__ import annotations

import pytest
import torch

from trainables import metrics as M
from trainables.device import (
    Placement,
    TrialResourceError,
    cap_memory,
    memory_fraction,
    memory_metrics,
    named_oom,
    oom_message,
    placement_metrics,
    trial_device,
)


@pytest.mark.parametrize(
    ("gpus", "fraction"), [(0.0, None), (0.25, 0.25), (0.5, 0.5), (0.999, 0.999), (1.0, None), (2.0, None)]
)
def test_memory_fraction_follows_the_share(gpus: float, fraction: float | None) -> None:
    assert memory_fraction(gpus) == fraction


def test_cpu_placement_is_never_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    place = Placement(cpus=2, gpus=0.5)
    assert place.device == torch.device("cpu")
    assert cap_memory(place, place.device) is None
    assert Placement(cpus=1, gpus=0.0).device == torch.device("cpu")


def test_oom_becomes_an_error_that_names_share_and_batch() -> None:
    place = Placement(cpus=1, gpus=0.25)
    with pytest.raises(TrialResourceError) as caught:
        with named_oom(place, torch.device("cpu"), batch_size=512):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    message = str(caught.value)
    assert "gpus_per_trial = 0.25" in message and "batch_size = 512" in message and "--gpus-per-trial" in message
    assert "memory capped at 20.0 of 80.0 GiB" in oom_message(0.25, 64, 80 * 2**30)
    assert "capped" not in oom_message(1.0, 64, 80 * 2**30)
    with pytest.raises(ValueError, match="other"):  # anything else passes through unchanged
        with named_oom(place, torch.device("cpu"), batch_size=512):
            raise ValueError("other")


def test_gpu_placement_names_device_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    # torch.cuda.set_per_process_memory_fraction refuses a device without an index (found on an H200): Ray maps the
    # trial's GPU to index 0 of the GPUs it made visible, so the placement must say cuda:0, not cuda.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert Placement(cpus=1, gpus=0.5).device == torch.device("cuda", 0)
    assert Placement(cpus=1, gpus=0.0).device == torch.device("cpu")  # CUDA exists, but Ray gave this trial none
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert Placement(cpus=1, gpus=1.0).device == torch.device("cpu")


def test_cpu_trials_report_their_device_and_no_gpu_memory() -> None:
    cpu = torch.device("cpu")
    assert placement_metrics(cpu, None) == {M.DEVICE: "cpu"}
    assert placement_metrics(cpu, 0.5) == {M.DEVICE: "cpu"}  # a share without a GPU caps nothing
    assert memory_metrics(cpu) == {}


def test_trial_device_places_reports_and_names_an_oom(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    place = Placement(cpus=1, gpus=0.5)
    with trial_device(place, batch_size=64) as (device, placed):
        assert device == torch.device("cpu") and placed == {M.DEVICE: "cpu"}
    with pytest.raises(TrialResourceError, match=r"gpus_per_trial = 0.5 and batch_size = 64"):
        with trial_device(place, batch_size=64):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
