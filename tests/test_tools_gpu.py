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


def test_a_packed_isic_set_reads_back_as_the_loader_gives_it(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for folder in ("images", "masks"):
        (root / "isic2017" / "train" / folder).mkdir(parents=True)
    for image in ISIC:
        shutil.copy(image, root / "isic2017" / "train" / "images")
        shutil.copy(image.with_name(image.stem + "_segmentation.png"),
                    root / "isic2017" / "train" / "masks")
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
        for variant, chain in zip(plan.values(),
                                  train_gpu.plan_chains(plan, tmp_path / "runs")):
            cfgs = [recipes.Recipe.load(spec["cfg"]) for spec in chain]
            assert cfgs[0].init is None or cfgs[0].init.startswith(str(tmp_path / "packs"))
            assert (cfgs[0].init is None) != (cfgs[0].init_segmentor is None)
            for before, after in zip(chain, cfgs[1:]):
                assert after.init == str(Path(before["out"]) / "checkpoint.pt")
                assert after.init_segmentor is None
            for cfg in cfgs:
                assert cfg.teacher.startswith(str(tmp_path / "packs" / "teachers"))
                assert cfg.arch.items() >= variant["arch"].items()
