"""The GPU check's arithmetic (benchmarks/gpu_check.py): per-trial figures and the overlap of shared-GPU trials."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.gpu_check import overlap_s, render, trial_figures
from trainables import metrics as M


def _row(trial: str, epoch: int, unix: float, samples_per_s: float, **extra: Any) -> dict[str, Any]:
    return {
        "trial_id": trial,
        M.EPOCH: epoch,
        M.WALL_CLOCK: unix,
        M.TRAIN_SECONDS: 0.8,
        M.EVAL_SECONDS: 0.2,
        M.SAMPLES_PER_SECOND: samples_per_s,
        M.DEVICE: "cuda:0 (Test GPU)",
        **extra,
    }


def test_figures_skip_the_warm_up_epoch_and_overlap_is_the_common_span() -> None:
    rows = [
        _row("a", 2, 102.0, 1000.0, **{M.GPU_MEMORY_CAP: 40.0, M.GPU_MEMORY_PEAK: 0.5}),
        _row("a", 1, 101.0, 10.0),  # out of order on purpose; the slow first epoch is CUDA warm-up
        _row("a", 3, 103.0, 3000.0, **{M.GPU_MEMORY_CAP: 40.0, M.GPU_MEMORY_PEAK: 0.6}),
        _row("b", 1, 101.5, 500.0),
        _row("b", 2, 102.5, 700.0),
    ]
    a, b = trial_figures(rows)
    assert (a.trial_id, a.epochs, a.samples_per_s) == ("a", 3, 2000.0)  # median of epochs 2 and 3
    assert (a.cap_gib, a.peak_gib) == (40.0, 0.6)  # the last epoch's
    assert a.start_unix == pytest.approx(100.0)  # first report less its train and eval time
    assert b.samples_per_s == 700.0 and b.cap_gib is None  # one epoch after warm-up
    assert overlap_s([a, b]) == pytest.approx(102.5 - 100.5)
    assert overlap_s([a]) == pytest.approx(3.0)


def test_disjoint_trials_overlap_zero_and_render_names_the_figures() -> None:
    first = trial_figures([_row("a", 1, 101.0, 10.0), _row("a", 2, 102.0, 20.0)])
    later = trial_figures([_row("b", 1, 201.0, 30.0)])
    assert overlap_s(first + later) == 0.0
    assert overlap_s([]) == 0.0
    found = {
        "torch": "2.x",
        "card": "Test GPU",
        "shared": {
            "gpus_per_trial": 0.5,
            "wall_s": 40.0,
            "overlap_s": 8.5,
            "total_samples_per_s": 82876.0,
            "trials": [
                {
                    "trial_id": "a",
                    "device": "cuda:0",
                    "cap_gib": 69.9,
                    "peak_gib": 0.59,
                    "samples_per_s": 41335.0,
                    "epochs": 12,
                }
            ],
        },
    }
    text = render(found)
    assert "| shared (0.5 GPU/trial) | a | cuda:0 | 69.9 | 0.59 | 41,335 | 12 |" in text
    assert "82,876" in text and "8.5 s" in text
