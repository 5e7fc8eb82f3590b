"""tools/gpu: the packed training sets that travel to a GPU machine read back as the loader's."""
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from segcodec.train import data as datasets
from segcodec.train import recipes

from conftest import ISIC

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools" / "gpu"))
import pack  # noqa: E402
import train_gpu  # noqa: E402


def isic_root(tmp_path) -> Path:
    """A data folder holding the ISIC fixtures as its training set."""
    root = tmp_path / "data"
    for folder in ("images", "masks"):
        (root / "isic2017" / "train" / folder).mkdir(parents=True)
    for image in ISIC:
        shutil.copy(image, root / "isic2017" / "train" / "images")
        shutil.copy(image.with_name(image.stem + "_segmentation.png"),
                    root / "isic2017" / "train" / "masks")
    return root


def test_a_packed_isic_set_reads_back_as_the_loader_gives_it(tmp_path, monkeypatch):
    root = isic_root(tmp_path)
    (tmp_path / "isic.npz.zst").write_bytes(pack.pack("isic", root, cache=None))
    monkeypatch.setattr(train_gpu, "PACKS", tmp_path)
    norm, (x, t), (xv, labels) = train_gpu.load_pack("isic")
    cfg = recipes.config("isic-seg")
    cfg = dataclasses.replace(cfg, normalisation=datasets.normalisation_for(cfg, root))
    assert norm == cfg.normalisation
    x0, t0, _ = datasets.cached_set(cfg, root, "fit", None)
    xv0, _, labels0 = datasets.cached_set(cfg, root, "val", None)
    # 8-bit pixels: within half a grey level, in units of the channel's spread.
    half_level = 0.5 / 255 / min(norm["std"]) + 1e-5
    np.testing.assert_allclose(x.numpy(), x0.numpy(), atol=half_level)
    np.testing.assert_allclose(xv.numpy(), xv0.numpy(), atol=half_level)
    np.testing.assert_allclose(t.numpy(), t0.numpy(), atol=0.5 / 255 + 1e-6)
    assert len(labels) == len(labels0) == 1
    np.testing.assert_array_equal(labels[0], labels0[0])


def test_the_gpu_plans_resolve_to_valid_chained_recipes(tmp_path, monkeypatch):
    """Every plan in tools/gpu/plans builds recipes (a misspelt key or a bad value fails here,
    not on the GPU), and each run after the first starts from the one before it."""
    monkeypatch.setattr(train_gpu, "PACKS", tmp_path / "packs")
    plans = sorted((Path(train_gpu.__file__).parent / "plans").glob("*.json"))
    assert plans
    for path in plans:
        plan = json.loads(path.read_text())
        for variant, chain in zip(plan.values(), train_gpu.plan_chains(plan, tmp_path / "runs"),
                                  strict=True):
            cfgs = [recipes.Recipe.load(spec["cfg"]) for spec in chain]
            assert cfgs[0].init is None or cfgs[0].init.startswith(str(tmp_path / "packs"))
            assert (cfgs[0].init is None) != (cfgs[0].init_segmentor is None)
            for before, after in zip(chain, cfgs[1:]):
                assert after.init == str(Path(before["out"]) / "checkpoint.pt")
                assert after.init_segmentor is None
            for cfg in cfgs:
                assert cfg.teacher.startswith(str(tmp_path / "packs" / "teachers"))
                assert cfg.arch.items() >= variant["arch"].items()


def test_a_plan_runs_each_chain_from_the_run_before(tmp_path, monkeypatch):
    """--plan end to end on the CPU: two fixed-step runs of one chain in a worker process,
    the second fine-tuning the first's weights, both in the phase's tar."""
    import tarfile

    import torch

    from segcodec.train import loop
    packs, runs, out = tmp_path / "packs", tmp_path / "runs", tmp_path / "out"
    packs.mkdir()
    (packs / "isic.npz.zst").write_bytes(pack.pack("isic", isic_root(tmp_path), cache=None))
    monkeypatch.setattr(train_gpu, "PACKS", packs)
    norm, (x, t), _ = train_gpu.load_pack("isic")
    teacher = dataclasses.replace(recipes.config("isic-seg"), normalisation=norm, steps=1)
    loop.train(teacher, x, t, packs / "teachers" / "isic-seg")
    plan = {"narrow": {"arch": {"c_widths": [8, 16, 24]}, "teacher": "isic-seg",
                       "phases": [["isic-d4", "-d4", None, {"steps": 2}],
                                  ["isic-d4-r2", "-r2", None, {"steps": 2}]]}}
    runs.mkdir()
    out.mkdir()
    results = train_gpu.phase(5, train_gpu.plan_chains(plan, runs), runs, out)
    assert {k: v["steps"] for k, v in results.items()} == {"narrow-d4": 2, "narrow-r2": 2}
    ck = torch.load(runs / "narrow-r2" / "checkpoint.pt", weights_only=True)
    assert ck["config"]["init"] == str(runs / "narrow-d4" / "checkpoint.pt")
    assert ck["config"]["arch"]["c_widths"] == [8, 16, 24]
    with tarfile.open(out / "phase5.tar") as tar:
        assert {"narrow-d4/checkpoint.pt", "narrow-r2/checkpoint.pt"} <= set(tar.getnames())
