"""The trial's AdamW (trainables/optim.py): torch's AdamW, bit for bit, started without importing torch._dynamo."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainables.optim import AdamW

REPO = Path(__file__).resolve().parents[1]


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.LSTM(4, 8, 2, batch_first=True))


def _steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        x = torch.randn(16, 6, 4, generator=g)
        loss = model(x)[0].pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(
    ("lr", "weight_decay", "amsgrad"), [(1e-2, 0.0, False), (3e-3, 0.1, False), (1e-3, 1e-4, True)]
)
def test_steps_equal_torch_adamw_bit_for_bit(lr: float, weight_decay: float, amsgrad: bool) -> None:
    ours, theirs = _model(0), _model(0)
    a = AdamW(ours.parameters(), lr=lr, weight_decay=weight_decay, amsgrad=amsgrad)
    b = torch.optim.AdamW(theirs.parameters(), lr=lr, weight_decay=weight_decay, amsgrad=amsgrad)
    assert _steps(ours, a, 12, 1) == _steps(theirs, b, 12, 1)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(p, q)


def _saved(state: dict[str, object]) -> dict[str, object]:
    """Through bytes, as a checkpoint carries it (a state_dict shares its tensors with the optimizer)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded: dict[str, object] = torch.load(buffer, weights_only=True)
    return loaded


def test_state_moves_between_ours_and_torchs_both_ways() -> None:
    """A checkpoint written by either loads into the other and training goes on identically (old checkpoints were
    written by torch's AdamW)."""
    first, second = _model(1), _model(1)
    ours = AdamW(first.parameters(), lr=5e-3, weight_decay=0.01)
    _steps(first, ours, 5, 2)
    second.load_state_dict(first.state_dict())
    theirs = torch.optim.AdamW(second.parameters(), lr=1.0)
    theirs.load_state_dict(_saved(ours.state_dict()))
    assert theirs.param_groups[0]["lr"] == 5e-3
    assert _steps(first, ours, 4, 3) == _steps(second, theirs, 4, 3)
    back = AdamW(first.parameters())
    back.load_state_dict(_saved(theirs.state_dict()))
    assert json.dumps(back.state_dict()["param_groups"]) == json.dumps(theirs.state_dict()["param_groups"])


TRIAL = """
import json, sys, torch
torch.set_num_threads(1)
from tests.helpers import DirSession
from trainables.config import TrialConfig
from trainables.data.loader import DataHandle, load_forecast_data
from trainables.loop import run_trial
session = DirSession(sys.argv[2], resume_from=sys.argv[4] if len(sys.argv) > 4 else None)
flat = {"hidden_size": 8, "window": 12, "batch_size": 512, "max_epochs": int(sys.argv[3]), "epoch_samples": 2048,
        "seed": 3}
run_trial(TrialConfig.from_flat(flat), load_forecast_data(DataHandle(uri=sys.argv[1])), session,
          device=torch.device("cpu"))
print(json.dumps({"dynamo": "torch._dynamo" in sys.modules, "reports": len(session.reports)}))
"""


@pytest.mark.integration  # two trials in new processes: the import check needs a fresh interpreter
def test_a_trial_trains_checkpoints_and_resumes_without_importing_dynamo(prepared_data: str, tmp_path: Path) -> None:
    def trial(*args: str) -> dict[str, object]:
        out = subprocess.run(
            [sys.executable, "-c", TRIAL, prepared_data, *args], cwd=REPO, capture_output=True, text=True, check=True
        )
        result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
        return result

    assert trial(str(tmp_path / "a"), "1") == {"dynamo": False, "reports": 1}
    assert trial(str(tmp_path / "b"), "2", str(tmp_path / "a" / "epoch-1")) == {"dynamo": False, "reports": 1}
    assert (tmp_path / "b" / "epoch-2").is_dir()
