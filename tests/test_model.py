"""The model builder: every architecture option builds and runs, initialisations have the documented
distribution, L1 changes the gradient by l1 * sign(w), and early stopping stops."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.helpers import DirSession
from trainables import metrics as M
from trainables.config import ModelConfig, TrialConfig
from trainables.data.loader import DataHandle, load_forecast_data
from trainables.data.windows import gather, target_positions
from trainables.evaluate import masked_mse
from trainables.loop import early_stopping, epoch_lr, run_trial
from trainables.model import build_classifier, build_model, init_lstm, l1_penalty


@pytest.mark.parametrize("pooling", ["last", "mean", "additive", "dot"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_forecaster_shapes(pooling: str, bidirectional: bool, num_layers: int) -> None:
    cfg = ModelConfig(hidden_size=8, num_layers=num_layers, bidirectional=bidirectional, pooling=pooling)
    model = build_model(cfg, n_features=5, target_index=0)
    assert model(torch.randn(4, 12, 5)).shape == (4, 1)
    assert model.encoder.out_dim == (16 if bidirectional else 8)


@pytest.mark.parametrize("pooling", ["last", "mean", "additive", "dot"])
def test_classifier_ignores_padding(pooling: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=8, bidirectional=True, pooling=pooling, embedding_dim=6)
    model = build_classifier(cfg, vocab_size=50, num_classes=3).eval()
    tokens = torch.randint(2, 50, (2, 7))
    lengths = torch.tensor([7, 4])
    padded = tokens.clone()
    padded[1, 4:] = 0
    other = tokens.clone()
    other[1, 4:] = 17  # different content after the true length must not matter
    out_a, out_b = model(padded, lengths), model(other, lengths)
    assert out_a.shape == (2, 3)
    assert torch.allclose(out_a, out_b, atol=1e-6), "padded steps changed the output"


@pytest.mark.parametrize(
    ("head", "horizon", "level_gain"),
    [("linear", 1, False), ("linear", 6, False), ("decoder", 6, False), ("linear", 1, True), ("decoder", 6, True)],
)
def test_bidirectional_forecaster_never_sees_the_future(
    prepared_data: str, head: str, horizon: int, level_gain: bool
) -> None:
    data = load_forecast_data(DataHandle(uri=prepared_data))
    train = data.splits["train"]
    model = build_model(
        ModelConfig(hidden_size=8, bidirectional=True, pooling="additive", head=head, level_gain=level_gain),
        n_features=data.n_features,
        target_index=data.fitted.target_index,
        horizon=horizon,
        target_offset=1.5,
    ).eval()
    if level_gain:  # a live gain, so the level path is exercised too
        out_layer = model.head.out if head == "decoder" else model.head
        assert isinstance(out_layer, torch.nn.Linear)
        with torch.no_grad():
            out_layer.bias[out_layer.out_features // 2 :].fill_(0.3)
    positions = target_positions(train, window=24, horizon=horizon)[100:101]
    x, y, mask = gather(train, positions, window=24, horizon=horizon)
    before = model(x)
    assert before.shape == y.shape == mask.shape == (1, horizon)
    first_target = int(positions[0]) - horizon + 1
    future = train.features.clone()
    future[first_target:] += 100.0  # the first forecast hour and everything after it
    perturbed = type(train)(future, train.target, train.target_raw, train.observed, train.context)
    x2, _, _ = gather(perturbed, positions, window=24, horizon=horizon)
    assert torch.equal(model(x2), before), "a future row reached the forecast"
    past = train.features.clone()
    past[first_target - 1] += 1.0  # the origin, the last hour seen, is an input
    x3, _, _ = gather(
        type(train)(past, train.target, train.target_raw, train.observed, train.context),
        positions,
        window=24,
        horizon=horizon,
    )
    assert not torch.equal(model(x3), before)


@pytest.mark.parametrize("head", ["linear", "decoder"])
def test_multi_step_heads_start_at_persistence_and_train_every_step(head: str) -> None:
    """A residual head forecasts the last value for every step before training (zeroed output layer) and the
    masked loss leaves unobserved steps out of the gradient."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=8, head=head), n_features=3, target_index=1, horizon=4)
    out_layer = model.head.out if head == "decoder" else model.head
    assert isinstance(out_layer, torch.nn.Linear)
    with torch.no_grad():
        out_layer.weight.zero_()
        out_layer.bias.zero_()
    x = torch.randn(5, 12, 3)
    pred = model(x)
    assert pred.shape == (5, 4)
    assert torch.allclose(pred, x[:, -1, 1:2].expand(5, 4))
    target = torch.randn(5, 4)
    mask = torch.zeros(5, 4, dtype=torch.bool)
    mask[:, 0] = True
    full = masked_mse(pred, target, mask)
    changed = target.clone()
    changed[:, 1:] += 50.0  # unobserved steps: any value, same loss
    assert torch.equal(masked_mse(pred, changed, mask), full)


@pytest.mark.parametrize("head", ["linear", "decoder"])
def test_level_gain_starts_at_zero_and_scales_the_level(head: str) -> None:
    """The gain half of the output layer starts at zero (the model begins as the plain residual head); a gain g adds
    g * (last + target_offset), the level in units of the target's scale, to every step."""
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=8, head=head, level_gain=True)
    model = build_model(cfg, n_features=3, target_index=1, horizon=4, target_offset=2.0)
    out_layer = model.head.out if head == "decoder" else model.head
    assert isinstance(out_layer, torch.nn.Linear)
    gains = out_layer.out_features // 2
    assert out_layer.out_features == (2 if head == "decoder" else 8)
    assert torch.count_nonzero(out_layer.weight[gains:]) == 0 and torch.count_nonzero(out_layer.bias[gains:]) == 0
    x = torch.randn(5, 12, 3)
    with torch.no_grad():
        out_layer.weight.zero_()
        out_layer.bias.zero_()
        assert torch.allclose(model(x), x[:, -1, 1:2].expand(5, 4))  # zero change, zero gain: persistence
        out_layer.bias[gains:].fill_(0.5)
        level = x[:, -1, 1:2] + 2.0
        assert torch.allclose(model(x), x[:, -1, 1:2] + 0.5 * level.expand(5, 4), atol=1e-6)


@pytest.mark.parametrize(
    ("head", "quantiles", "level_gain"),
    [("linear", (), False), ("decoder", (0.1, 0.5, 0.9), False), ("linear", (0.2, 0.8), True)],
)
def test_window_norm_forecasts_a_shifted_window_shifted(
    head: str, quantiles: tuple[float, ...], level_gain: bool
) -> None:
    """Instance normalisation: the encoder sees the window's target centred and scaled by the window's own statistics,
    so a history raised by c is forecast raised by c (the level gain aside) and a flat window stays finite."""
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=8, head=head, window_norm=True, level_gain=level_gain)
    model = build_model(cfg, n_features=3, target_index=1, horizon=4, quantiles=quantiles).eval()
    x = torch.randn(5, 12, 3)
    raised = x.clone()
    raised[..., 1] += 7.0
    with torch.no_grad():
        if level_gain:
            out_layer = model.head
            assert isinstance(out_layer, torch.nn.Linear)
            out_layer.weight[out_layer.out_features // 2 :].zero_()
            out_layer.bias[out_layer.out_features // 2 :].zero_()
        assert torch.allclose(model(raised), model(x) + 7.0, atol=1e-4)
        flat = x.clone()
        flat[..., 1] = 3.0
        out = model(flat)
        assert torch.isfinite(out).all() and (out - 3.0).abs().max() < 1.0
    plain = build_model(replace(cfg, window_norm=False), n_features=3, target_index=1, horizon=4, quantiles=quantiles)
    assert not torch.allclose(plain.eval()(raised), plain(x) + 7.0, atol=1e-4), "without it: levels matter"


def test_level_gain_survives_export_info(tmp_path: Path) -> None:
    """target_offset travels in model_info, so a reloaded level-gain model forecasts exactly as the trained one."""
    from trainables.model import forecaster_from_info

    torch.manual_seed(1)
    cfg = ModelConfig(hidden_size=8, level_gain=True)
    model = build_model(cfg, n_features=3, target_index=0, target_offset=3.25).eval()
    with torch.no_grad():
        model.head.bias[1:].fill_(0.2)
    info = {"config": {**cfg.__dict__}, "n_features": 3, "target_index": 0, "target_offset": 3.25}
    again = forecaster_from_info(info).eval()
    again.load_state_dict(model.state_dict())
    x = torch.randn(4, 6, 3)
    assert torch.equal(again(x), model(x))
    info.pop("target_offset")  # an export from before level_gain existed: offset 0, same as then
    assert forecaster_from_info(info).target_offset == 0.0


def test_forecaster_refuses_a_bad_head_or_horizon() -> None:
    with pytest.raises(ValueError, match=r"model\.head = 'seq2seq'"):
        build_model(ModelConfig(head="seq2seq"), n_features=3, target_index=0)
    with pytest.raises(ValueError, match=r"model\.horizon = 0"):
        build_model(ModelConfig(), n_features=3, target_index=0, horizon=0)


def lstm(hidden: int = 32, inp: int = 32) -> torch.nn.LSTM:
    return torch.nn.LSTM(inp, hidden, batch_first=True)


def test_xavier_and_kaiming_have_their_documented_spread() -> None:
    torch.manual_seed(0)
    net = lstm(64, 48)
    init_lstm(net, input_scheme="xavier_uniform", recurrent_scheme="kaiming_normal", forget_bias=None)
    w_ih = net.weight_ih_l0.detach()  # four [64, 48] blocks
    bound = math.sqrt(6.0 / (48 + 64))
    assert w_ih.abs().max() <= bound + 1e-6
    assert w_ih.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    w_hh = net.weight_hh_l0.detach()  # four [64, 64] blocks, fan_in 64, gain 1
    assert w_hh.std().item() == pytest.approx(1 / math.sqrt(64), rel=0.05)


def test_orthogonal_recurrent_blocks_and_forget_bias() -> None:
    net = lstm(16, 8)
    init_lstm(net, input_scheme="xavier_normal", recurrent_scheme="orthogonal", forget_bias=1.0)
    for block in net.weight_hh_l0.detach().split(16, dim=0):
        assert torch.allclose(block @ block.T, torch.eye(16), atol=1e-5)
    b_ih, b_hh = net.bias_ih_l0.detach(), net.bias_hh_l0.detach()
    assert torch.all(b_ih[16:32] == 1.0) and torch.all(b_ih[:16] == 0) and torch.all(b_ih[32:] == 0)
    assert torch.all(b_hh == 0)
    with pytest.raises(ValueError, match=r"model\.init = 'he'"):
        init_lstm(net, input_scheme="he", recurrent_scheme="default", forget_bias=None)


def test_l1_term_adds_l1_times_sign_to_the_gradient() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=4), n_features=3, target_index=0)
    x, y = torch.randn(8, 5, 3), torch.randn(8, 1)

    def grads(l1: float) -> dict[str, torch.Tensor]:
        model.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y) + l1 * l1_penalty(model)
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, penalised = grads(0.0), grads(0.01)
    for name, param in model.named_parameters():
        expected = 0.0 if "bias" in name else 0.01 * torch.sign(param.detach())
        assert torch.allclose(penalised[name] - plain[name], torch.as_tensor(expected).expand_as(param), atol=1e-6), (
            name
        )


def test_early_stopping_rule() -> None:
    assert early_stopping(math.inf, 0, 1.0, 0.0) == (1.0, 0)
    assert early_stopping(1.0, 0, 0.95, 0.1) == (0.95, 1)  # better, but by less than min_delta
    assert early_stopping(1.0, 1, 0.85, 0.1) == (0.85, 0)
    assert early_stopping(1.0, 2, 1.2, 0.0) == (1.0, 3)


def test_lr_decays_per_epoch_from_the_configured_rate(prepared_data: str, tmp_path: Path) -> None:
    flat = {"hidden_size": 4, "batch_size": 2048, "window": 6, "max_epochs": 3, "lr": 0.01, "lr_decay": 0.5}
    assert [epoch_lr(TrialConfig.from_flat(flat), e) for e in (1, 2, 3)] == [0.01, 0.005, 0.0025]
    assert epoch_lr(TrialConfig.from_flat({**flat, "lr_decay": 1.0}), 7) == 0.01
    session = DirSession(str(tmp_path))
    run_trial(
        TrialConfig.from_flat(flat),
        load_forecast_data(DataHandle(uri=prepared_data)),
        session,
        device=torch.device("cpu"),
    )
    assert [r[M.LEARNING_RATE] for r in session.reports] == pytest.approx([0.01, 0.005, 0.0025])


def test_early_stopping_stops_a_trial(prepared_data: str, tmp_path: Path) -> None:
    flat = {"hidden_size": 8, "batch_size": 1024, "window": 12, "max_epochs": 10, "patience": 2, "min_delta": 10.0}
    session = DirSession(str(tmp_path))
    cfg = TrialConfig.from_flat(flat)
    run_trial(cfg, load_forecast_data(DataHandle(uri=prepared_data)), session, device=torch.device("cpu"))
    # Epoch 1 improves on +inf; with min_delta 10 nothing improves after, so epochs 2 and 3 are the two bad ones.
    assert [r[M.EPOCH] for r in session.reports] == [1, 2, 3]
    assert replace(cfg.limits, patience=0).patience == 0


def test_decoder_trial_forecasts_six_hours_and_its_checkpoint_scores_every_step(tmp_path: Path) -> None:
    """A 6-hour dataset through the training loop with the decoder head: val/rmse covers all steps, the
    checkpoint reloads into the same model (summary path), and error grows with the step as it should."""
    from cluster.prep.data import prepare_default
    from cluster.results.scoring import baselines_for, score_checkpoint
    from trainables.storage import resolve

    root = tmp_path / "beijing-6h"
    prepare_default(resolve(str(root)), horizon=6, max_window=24)
    data = load_forecast_data(DataHandle(uri=str(root)), ("train", "val", "test"))
    flat = {"hidden_size": 16, "head": "decoder", "batch_size": 256, "window": 24, "max_epochs": 2, "lr": 5e-3}
    session = DirSession(str(tmp_path / "trial"))
    run_trial(TrialConfig.from_flat(flat), data, session, device=torch.device("cpu"))
    assert [r[M.EPOCH] for r in session.reports] == [1, 2]
    assert all(math.isfinite(r[M.VAL_RMSE]) for r in session.reports)
    _, scores = score_checkpoint(str(tmp_path / "trial" / "epoch-2"), data)
    assert scores["val"].rmse == pytest.approx(session.reports[-1][M.VAL_RMSE], rel=1e-5)
    test = scores["test"]
    assert len(test.rmse_by_step) == 6 and test.rmse_by_step[0] < test.rmse_by_step[5]
    persistence = baselines_for(data)["persistence"]["test"]
    assert persistence.rmse_by_step is not None and len(persistence.rmse_by_step) == 6
    # Two epochs of a 16-unit model: loose but meaningful, within 10% of persistence over the 6 steps.
    assert persistence.rmse is not None and test.rmse < 1.1 * persistence.rmse


def test_ordinal_codes_become_embeddings_and_a_trial_trains_on_them(tmp_path: Path) -> None:
    """Categorical codes go through nn.Embedding (one row per code) instead of entering the LSTM as numbers; the
    checkpoint reloads into the same model and scores what the trial reported."""
    from cluster.prep.data import bundled_beijing_path, prepare_forecast
    from cluster.results.scoring import score_checkpoint
    from trainables.data.forecast_prep import ForecastPrepConfig
    from trainables.storage import resolve

    model = build_model(ModelConfig(hidden_size=8), n_features=4, target_index=0, categorical=((2, 5),))
    assert model.encoder.lstm.input_size == 3 + 3  # three numeric features and a 3-wide embedding of 5 codes
    x = torch.randn(2, 6, 4)
    x[..., 2] = torch.tensor([1.0, 4.0]).view(2, 1)
    changed = x.clone()
    changed[..., 2] = torch.tensor([2.0, 4.0]).view(2, 1)  # another category for the first window only
    out, out2 = model(x), model(changed)
    assert not torch.equal(out[0], out2[0]) and torch.equal(out[1], out2[1])
    with pytest.raises(ValueError, match=r"model\.categorical"):
        build_model(ModelConfig(), n_features=4, target_index=2, categorical=((2, 5),))

    root = tmp_path / "ordinal"
    prepare_forecast(
        str(bundled_beijing_path()),
        ForecastPrepConfig(categorical_encoding="ordinal", max_window=24),
        resolve(str(root)),
        name="ordinal",
    )
    data = load_forecast_data(DataHandle(uri=str(root)), ("train", "val", "test"))
    session = DirSession(str(tmp_path / "trial"))
    flat = {"hidden_size": 16, "batch_size": 512, "window": 24, "max_epochs": 1}
    run_trial(TrialConfig.from_flat(flat), data, session, device=torch.device("cpu"))
    payload, scores = score_checkpoint(str(tmp_path / "trial" / "epoch-1"), data)
    assert payload["model_config"]["categorical"] == [list(c) for c in data.fitted.categorical_codes]
    assert scores["val"].rmse == pytest.approx(session.reports[-1][M.VAL_RMSE], rel=1e-5)
