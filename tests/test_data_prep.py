"""Data preparation of the bundled Beijing PM2.5 data: manifest, checksums, train-only scaling, no NaN in tensors."""

from __future__ import annotations

import hashlib
import lzma
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cluster.prep.data import bundled_beijing_csv, bundled_beijing_path, prepare_forecast, read_csv_bytes
from tests.conftest import SHARED_DATASETS
from trainables.data.forecast_prep import ForecastPrepConfig
from trainables.data.loader import DataHandle, load_forecast_data
from trainables.data.manifest import ManifestError, read_manifest
from trainables.data.shards import ShardError, read_split, verify_all
from trainables.evaluate import baseline_scores
from trainables.storage import resolve


def raw_frame() -> pd.DataFrame:
    return read_csv_bytes(bundled_beijing_csv(), "bundled")


def test_bundled_copy_is_the_shared_dataset() -> None:
    shared = SHARED_DATASETS / "beijing_pm25_hourly.csv"
    if not shared.exists():
        pytest.skip("../shared/datasets not present")
    assert hashlib.sha256(shared.read_bytes()).digest() == hashlib.sha256(bundled_beijing_csv()).digest()


def test_manifest_describes_splits_and_shards(prepared_data: str) -> None:
    root = resolve(prepared_data)
    manifest = read_manifest(root)
    assert manifest.source["rows"] == 43824 and manifest.source["missing_values"]["pm2.5"] == 2067
    assert sum(s.rows for s in manifest.splits.values()) == 43824
    assert manifest.splits["train"].context_rows == 0
    assert manifest.splits["val"].context_rows == manifest.splits["test"].context_rows == 168
    assert manifest.splits["train"].end < manifest.splits["val"].start < manifest.splits["test"].start
    for split in manifest.splits.values():
        for shard in split.shards:
            data = Path(prepared_data, shard.path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == shard.sha256 and len(data) == shard.bytes
        assert sum(s.rows for s in split.shards) == split.rows + split.context_rows
    verify_all(root, manifest)


def test_scaling_fitted_on_training_split_only(prepared_data: str) -> None:
    manifest = read_manifest(resolve(prepared_data))
    fitted = manifest.preprocessing["fitted"]
    train_rows = manifest.splits["train"].rows
    raw = raw_frame().iloc[:train_rows]  # the source is already in time order
    for col in ("pm2.5", "TEMP", "Iws"):
        values = raw[col].astype(float)
        assert fitted["centre"][col] == pytest.approx(values.mean(), rel=1e-12)
        assert fitted["scale"][col] == pytest.approx(values.std(ddof=0), rel=1e-12)
    whole = raw_frame()["pm2.5"].astype(float)
    assert fitted["centre"]["pm2.5"] != pytest.approx(whole.mean(), rel=1e-3), "scaler saw val/test rows"


def test_no_missing_value_reaches_a_tensor_and_cbwd_is_encoded(prepared_data: str) -> None:
    data = load_forecast_data(DataHandle(uri=prepared_data), ("train", "val", "test"))
    names = data.fitted.feature_names
    cbwd = [i for i, n in enumerate(names) if n.startswith("cbwd=")]
    assert [names[i] for i in cbwd] == ["cbwd=NE", "cbwd=NW", "cbwd=SE", "cbwd=cv"]
    for split, arrays in data.splits.items():
        assert np.isfinite(arrays.features.numpy()).all(), f"{split}: non-finite feature"
        assert np.isfinite(arrays.target.numpy()).all() and np.isfinite(arrays.target_raw).all()
        assert (arrays.features[:, cbwd].sum(dim=1) == 1).all(), f"{split}: cbwd one-hot rows must sum to 1"
    train = data.splits["train"]
    raw_missing = raw_frame()["pm2.5"].iloc[: len(train)].isna().to_numpy()
    assert (~train.observed.numpy() == raw_missing).all()
    indicator = train.features[:, names.index("pm2.5__missing")].numpy().astype(bool)
    assert (indicator == raw_missing).all()


def test_baselines_match_a_hand_computation(prepared_data: str) -> None:
    data = load_forecast_data(DataHandle(uri=prepared_data), ("train", "val", "test"))
    test = data.splits["test"]
    scores = baseline_scores(test, horizon=1, season_steps=24)
    raw = raw_frame()["pm2.5"].astype(float)
    n_test = read_manifest(resolve(prepared_data)).splits["test"].rows
    truth = raw.iloc[-n_test:]
    previous = raw.ffill().shift(1).iloc[-n_test:]
    mask = truth.notna()
    expected = float(np.sqrt(np.mean((previous[mask] - truth[mask]) ** 2)))
    assert scores["persistence"].rmse == pytest.approx(expected, rel=1e-9)
    assert scores["persistence"].count == int(mask.sum())


def test_multi_step_baselines_score_every_step_by_hand(prepared_data: str) -> None:
    """Horizon 3: step k is scored on every observed test hour whose forecast origin (k hours earlier) starts a
    full 3-step path inside the split; persistence repeats the origin's value for all steps."""
    data = load_forecast_data(DataHandle(uri=prepared_data), ("test",))
    scores = baseline_scores(data.splits["test"], horizon=3, season_steps=24)["persistence"]
    raw = raw_frame()["pm2.5"].astype(float)
    n_test = read_manifest(resolve(prepared_data)).splits["test"].rows
    squared = []
    for k in (1, 2, 3):
        keep = n_test - (3 - k)  # the last origins' paths would run past the split
        truth = raw.iloc[-n_test:].iloc[:keep]
        previous = raw.ffill().shift(k).iloc[-n_test:].iloc[:keep]
        mask = truth.notna()
        errors = (previous[mask] - truth[mask]).to_numpy()
        assert scores.rmse_by_step[k - 1] == pytest.approx(float(np.sqrt(np.mean(errors**2))), rel=1e-9)
        squared.append(errors**2)
    assert scores.rmse == pytest.approx(float(np.sqrt(np.mean(np.concatenate(squared)))), rel=1e-9)
    assert scores.rmse_by_step[0] < scores.rmse_by_step[2], "error grows with the horizon"


def copy_dataset(prepared_data: str, tmp_path: Path) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(prepared_data, dest)
    return dest


def test_corrupt_shard_is_named(prepared_data: str, tmp_path: Path) -> None:
    dest = copy_dataset(prepared_data, tmp_path)
    shard = dest / "val" / "part-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    root = resolve(str(dest))
    manifest = read_manifest(root)
    read_split(root, manifest, "train")  # untouched shards still read
    with pytest.raises(ShardError, match=r"shard .*val/part-00000\.parquet is corrupt"):
        verify_all(root, manifest)


def test_missing_shard_and_manifest_are_named(prepared_data: str, tmp_path: Path) -> None:
    dest = copy_dataset(prepared_data, tmp_path)
    (dest / "test" / "part-00000.parquet").unlink()
    with pytest.raises(ShardError, match=r"test/part-00000\.parquet is missing"):
        verify_all(resolve(str(dest)), read_manifest(resolve(str(dest))))
    (dest / "manifest.json").unlink()
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(resolve(str(dest)))


def write_csv(tmp_path: Path, frame: pd.DataFrame, name: str = "src.csv") -> str:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def test_bad_columns_and_options_are_named(tmp_path: Path) -> None:
    source = bundled_beijing_path()
    dest = resolve(str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"column\(s\) \['pm10'\] not in the source"):
        prepare_forecast(source, ForecastPrepConfig(target="pm10", numeric=("pm10",)), dest, name="x")
    with pytest.raises(ValueError, match=r"data\.horizon = 0"):
        prepare_forecast(source, ForecastPrepConfig(horizon=0), dest, name="x")
    with pytest.raises(ValueError, match=r"data\.split"):
        prepare_forecast(source, ForecastPrepConfig(split=(0.8, 0.2, 0.0)), dest, name="x")
    with pytest.raises(ValueError, match=r"data\.missing\[pm2\.5\] = 'drop'"):
        prepare_forecast(source, ForecastPrepConfig(missing_columns=(("pm2.5", "drop"),)), dest, name="x")
    raw = raw_frame()
    duplicated = write_csv(tmp_path, pd.concat([raw.iloc[:5000], raw.iloc[4999:5000], raw.iloc[5000:6000]]))
    with pytest.raises(ValueError, match="duplicate timestamp 2010-07-28 07:00:00"):
        prepare_forecast(duplicated, ForecastPrepConfig(max_window=24), dest, name="x")
    shuffled = write_csv(tmp_path, pd.concat([raw.iloc[3000:6000], raw.iloc[:3000]]), "shuffled.csv")
    with pytest.raises(ValueError, match="time goes backwards at 2010-01-01 00:00:00; sort the source"):
        prepare_forecast(shuffled, ForecastPrepConfig(max_window=24), dest, name="x")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*")), "a failed run left files"


def test_duplicates_gaps_and_policies(tmp_path: Path) -> None:
    raw = raw_frame().iloc[:4000]
    # Remove 10 hours (a gap) and duplicate one hour with a different value.
    dup = raw.iloc[[100]].assign(**{"pm2.5": 1000.0})
    frame = pd.concat([raw.iloc[:101], dup, raw.iloc[101:500], raw.iloc[510:]])
    source = write_csv(tmp_path, frame)
    cfg = ForecastPrepConfig(
        max_window=24,
        frequency="1h",
        duplicates="mean",
        lags=(24,),
        rolling=(6,),
        scaler="robust",
        missing_columns=(("TEMP", "interpolate"), ("PRES", "mask")),
    )
    manifest = prepare_forecast(source, cfg, resolve(str(tmp_path / "ok")), name="x")
    assert manifest.source["duplicates"] == 1 and manifest.source["gaps_filled"] == 10
    assert manifest.source["rows"] == 4000
    fitted = manifest.preprocessing["fitted"]
    assert {"pm2.5__lag24", "pm2.5__mean6", "pm2.5__std6", "PRES__missing"} <= set(fitted["feature_names"])
    data = load_forecast_data(DataHandle(uri=str(tmp_path / "ok")), ("train", "val", "test"))
    names = data.fitted.feature_names
    train = data.splits["train"]
    # The gap's TEMP is interpolated between its neighbours (hours 499 and 510 of the source).
    temp = train.features[:, names.index("TEMP")].numpy() * fitted["scale"]["TEMP"] + fitted["centre"]["TEMP"]
    before, after = raw["TEMP"].iloc[499], raw["TEMP"].iloc[510]
    assert temp[500:510] == pytest.approx(np.linspace(before, after, 12)[1:-1], abs=1e-4)
    assert (train.features[500:510, names.index("PRES__missing")] == 1).all()
    assert not train.observed[500:510].any(), "filled gap hours must never be targets"
    # Averaged duplicate.
    pm = train.target_raw[100]
    assert pm == pytest.approx((raw["pm2.5"].iloc[100] + 1000.0) / 2)


def test_malformed_csv_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not a readable CSV"):
        read_csv_bytes(lzma.decompress(lzma.compress(b'a,b\n1,"2\n3,4,5,6\n')), "broken.csv")


def test_ordinal_encoding_codes_categories_and_unseen_ones_are_zero(tmp_path: Path) -> None:
    raw = raw_frame()
    raw.loc[raw.index[-50:], "cbwd"] = "XX"  # a wind direction training never saw, in the test split
    source = tmp_path / "beijing.csv"
    raw.to_csv(source, index=False)
    cfg = ForecastPrepConfig(categorical_encoding="ordinal", max_window=24)
    prepare_forecast(str(source), cfg, resolve(str(tmp_path / "out")), name="ordinal")
    data = load_forecast_data(DataHandle(uri=str(tmp_path / "out")), ("train", "test"))
    fitted = data.fitted
    cats = fitted.categories["cbwd"]
    assert cats == ["NE", "NW", "SE", "cv"] and "cbwd__code" in fitted.feature_names
    assert not any(n.startswith("cbwd=") for n in fitted.feature_names), "no one-hot columns beside the code"
    index = fitted.feature_names.index("cbwd__code")
    assert fitted.categorical_codes == ((index, 5),)
    test = data.splits["test"]
    codes = test.features[:, index].numpy()
    expected = raw["cbwd"].iloc[-len(codes) :].map({c: i + 1 for i, c in enumerate(cats)}).fillna(0).to_numpy()
    assert (codes == expected).all()
    assert (codes[-50:] == 0).all() and set(np.unique(codes[:-50])) <= {1.0, 2.0, 3.0, 4.0}
    with pytest.raises(ValueError, match=r"data\.categorical_encoding = 'label': must be one of onehot, ordinal"):
        ForecastPrepConfig(categorical_encoding="label").validate()
