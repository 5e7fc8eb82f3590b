"""Runs seeded from a shipped model and reference: the loop fine-tunes them, export gives
them back."""
import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import segcodec
from segcodec import entropy, zoo
from segcodec.train import data, export, loop, recipes, seed

from conftest import ISIC, isic_image

REPO = ISIC[0].parents[2]
REFERENCE = REPO / "bench" / "references" / "isic-seg.safetensors"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    return runs, seed.seed("isic-lesion-v4", runs, REFERENCE, (3, 9))


def test_the_parent_holds_the_models_networks_and_its_tables_as_rate_counts(seeded):
    runs, written = seeded
    model = zoo.find("isic-lesion-v4")
    assert written["init"] == runs / "isic-d4" / "checkpoint.pt"
    ck = torch.load(written["init"], weights_only=True)
    net, cfg = loop.network_of(ck, best=True)
    assert cfg.arch == model.manifest.architecture.to_json() and cfg.design == "d4"
    assert cfg.normalisation == model.manifest.normalisation
    assert "critic" not in ck  # D starts afresh
    for name, value in model.net.state_dict().items():
        assert torch.equal(net.state_dict()[name], value), name
    q = (ck["rate"]["ones"].double() + 0.5) / (ck["rate"]["total"].double() + 1)
    np.testing.assert_array_equal(np.round(q.numpy() * entropy.ONE), model.table)


def test_the_teacher_is_the_reference(seeded):
    _, written = seeded
    teacher, cfg = loop.load_checkpoint(written["teacher"], best=True)
    assert cfg.design == "seg" and cfg.task_key == "isic"
    for name, value in load_file(str(REFERENCE)).items():
        assert torch.equal(teacher.state_dict()[name], value), name


def test_the_model_exported_back_codes_the_same_bytes_and_labels(seeded, tmp_path, monkeypatch):
    _, written = seeded
    model = zoo.find("isic-lesion-v4")
    net, cfg = loop.load_checkpoint(written["init"], best=True)
    # export.export refits the tables on the training set; here the model's own are kept
    manifest, state, _, _ = export.build_model(net, cfg, torch.zeros(1, 3, 64, 64), "v4-back",
                                               False, {"recipe": cfg.name})
    zoo.write_model_file(tmp_path, manifest, state, model.table)
    monkeypatch.setenv(zoo.PATH_ENV, str(tmp_path))
    zoo.reload()
    try:
        for i in range(2):
            image = isic_image(i)
            a = segcodec.encode(image, model="isic-lesion-v4", force=True)
            b = segcodec.encode(image, model="v4-back", force=True)
            assert a[10:-4] == b[10:-4]  # all but the model id and the CRC over it
            np.testing.assert_array_equal(segcodec.segment(a), segcodec.segment(b))
    finally:
        monkeypatch.delenv(zoo.PATH_ENV)
        zoo.reload()


def test_a_rate_point_config_fine_tunes_the_seeded_runs(seeded, tmp_path):
    runs, written = seeded
    for n in (3, 9):
        cfg = recipes.config(str(written[f"div{n}"]))
        assert cfg.rate_weight == pytest.approx(recipes.TASKS["isic"]["rate_weight"] / n)
        assert cfg.init == str(written["init"]) and cfg.teacher == str(written["teacher"])
        assert cfg.select_from == 0.5 and cfg.lr == recipes.TASKS["isic"]["lr"] / 4
    cfg = dataclasses.replace(cfg, steps=1, batch=2, lr=0.0)
    pairs = [(p, p.with_name(p.stem + "_segmentation.png")) for p in ISIC]
    x, t, _ = data.load_set(pairs, cfg.normalisation, 2, tuple(cfg.arch["work_shape"]))
    loop.train(cfg, x, t, tmp_path / "run")
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    parent = torch.load(written["init"], weights_only=True)
    for name, value in parent["net"].items():  # lr 0: the weights are the parent's
        if "running" not in name and "num_batches" not in name:  # batch-norm statistics move
            assert torch.equal(ck["net"][name], value), name
    assert json.loads((tmp_path / "run" / "config.json").read_text())["rate_weight"] == \
        cfg.rate_weight


def test_seeding_never_overwrites(seeded):
    runs, _ = seeded
    with pytest.raises(FileExistsError, match="isic-d4"):
        seed.seed("isic-lesion-v4", runs)
