"""bench validation: runs are measured on the carved validation cases, never on the tests."""
import json
import shutil

import pytest

from bench import validation
from segcodec.train import loop

from conftest import ISIC
from test_train import fixture_set, smoke_config


def test_a_run_is_exported_and_scored_on_validation_cases_only(tmp_path, monkeypatch):
    root = tmp_path / "data"
    train = root / "isic2017" / "train"
    for folder in ("images", "masks"):
        (train / folder).mkdir(parents=True)
    for image in ISIC:  # three training cases: one is carved off for validation
        shutil.copy(image, train / "images")
        shutil.copy(image.with_name(image.stem + "_segmentation.png"), train / "masks")
    # No isic2017/val: the reported test set is absent, so reading it would fail.
    cfg = smoke_config("isic-d4", steps=3)
    x, t, _ = fixture_set(cfg)
    loop.train(cfg, x, t, tmp_path / "runs" / "isic-d4")
    monkeypatch.setenv("SEGCODEC_MODEL_PATH", "")
    args = ["--data", str(root), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path)]
    validation.main([str(tmp_path / "runs" / "isic-d4"), *args])
    rows = json.loads((tmp_path / "validation.json").read_text())["rows"]
    assert len(rows) == 1
    row = rows[0]
    assert row["run"] == "isic-d4" and row["cases"] == 1 and row["steps"] == 3
    assert 0 < row["val_bpp"] < 1 and 0 <= row["val_dice"] <= 1
    assert "| isic-d4 |" in (tmp_path / "validation.md").read_text()
    with pytest.raises(SystemExit, match="no checkpoint.pt"):
        validation.main([str(tmp_path / "runs" / "missing"), *args])
