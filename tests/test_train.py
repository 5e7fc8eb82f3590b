"""The training recipe on fixtures: losses finite and falling, resume exact, export round-trips."""
import csv
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

import segcodec
from segcodec import bits, entropy, zoo
from segcodec.train import data, export, loop, recipes
from segcodec.train.critic import Critic
from segcodec.train.losses import ContextRate, context_index, loss_dis

from conftest import FIXTURES, HIPPO, ISIC, isic_image

ISIC_NORM = {"kind": "fixed", "scale": 1 / 255, "mean": [0.7, 0.55, 0.5], "std": [0.15, 0.15, 0.17]}


def smoke_config(name: str, **overrides) -> recipes.Recipe:
    cfg = recipes.config(name)
    # Recipes name parent runs (init, init_segmentor) that the CLI resolves; tests pass paths.
    return dataclasses.replace(cfg, **{
        "steps": 30, "batch": 4, "rate_ramp": 0.0, "init": None, "init_segmentor": None,
        "teacher": None, "distil_weight": 0.0, "normalisation": cfg.normalisation or ISIC_NORM,
        **overrides})


def fixture_set(cfg: recipes.Recipe):
    if cfg.task_key == "isic":
        pairs = [(p, p.with_name(p.stem + "_segmentation.png")) for p in ISIC]
    else:
        pairs = [(p, FIXTURES / "hippocampus" / p.name.replace(".nii.gz", "_labels.nii.gz"))
                 for p in HIPPO]
    return data.load_set(pairs, cfg.normalisation, cfg.arch["n_classes"],
                         tuple(cfg.arch["work_shape"]))


def read_log(path):
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(open(path))]


@pytest.mark.parametrize("ndim", [2, 3])
def test_context_index_matches_the_coder(ndim):
    rng = np.random.default_rng(ndim)
    z = rng.integers(0, 2, (3, 4) + ((6, 7) if ndim == 2 else (4, 5, 6)), dtype=np.uint8)
    ctx = context_index(torch.from_numpy(z).float()).numpy()
    for i in range(len(z)):
        z4 = bits.as_grid4(z[i])
        for k in range(z.shape[1]):
            for phase in (0, 1):
                pos, expected = bits.phase_contexts(z4, k, phase, ndim)
                np.testing.assert_array_equal(ctx[i, k].reshape(-1)[pos], expected)


def test_rate_estimate_is_the_exported_tables_code_length():
    rng = np.random.default_rng(0)
    smooth = torch.nn.functional.avg_pool2d(torch.from_numpy(rng.random((64, 3, 16, 16))),
                                            3, 1, 1)
    z = (smooth > 0.5).float()
    rate = ContextRate(3, 2, decay=0.0)  # counts from this batch alone, like fit_table
    bpp = rate(z, z, n_pixels=1000).item()
    table = entropy.fit_table([zi.numpy().astype(np.uint8) for zi in z], 2)
    ideal = sum(entropy.ideal_bits(zi.numpy().astype(np.uint8), table, 2) for zi in z)
    assert bpp * 64 * 1000 == pytest.approx(ideal, rel=0.01)


def test_loss_dis_is_zero_for_the_truth_and_positive_otherwise():
    critic = Critic(2, 2, [8, 16])
    t = torch.zeros(2, 2, 16, 16)
    t[:, 0] = 1
    assert loss_dis(critic, t, t).item() == 0
    assert loss_dis(critic, t.flip(1), t).item() > 0


@pytest.mark.parametrize("name", ["isic-d4", "hippocampus-d4", "isic-d1", "isic-autoseg"])
def test_smoke_training_losses_finite_and_falling(name, tmp_path):
    cfg = smoke_config(name)
    x, t, _ = fixture_set(cfg)
    loop.train(cfg, x, t, tmp_path, log_every=1)
    rows = read_log(tmp_path / "log.csv")
    assert len(rows) == cfg.steps
    for row in rows:
        assert all(math.isfinite(v) for k, v in row.items() if k != "dice"), row
    if cfg.dis_weight:
        assert all(r["loss_dis"] > 0 for r in rows)
    if cfg.rate_weight:
        assert all(r["loss_cr_bpp"] > 0 for r in rows)
    first = np.mean([r["loss"] for r in rows[:5]])
    last = np.mean([r["loss"] for r in rows[-5:]])
    assert last < first, (first, last)
    assert (tmp_path / "losses.png").stat().st_size > 0


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    cfg = smoke_config("isic-d4", steps=8)
    x, t, _ = fixture_set(cfg)
    loop.train(cfg, x, t, tmp_path / "straight", log_every=1)

    def interrupt(step, total):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg, x, t, tmp_path / "resumed", save_every_s=0, progress=interrupt,
                   log_every=1)
    loop.train(cfg, x, t, tmp_path / "resumed", log_every=1)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert b["step"] == 8
    steps = [int(r["step"]) for r in read_log(tmp_path / "resumed" / "log.csv")]
    assert steps == [int(r["step"]) for r in read_log(tmp_path / "straight" / "log.csv")]
    for key in ("net", "critic", "rate"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), (key, name)


@pytest.mark.parametrize("sig, raised", [("SIGINT", KeyboardInterrupt), ("SIGTERM", SystemExit)])
def test_a_signal_during_a_step_saves_that_step_and_resumes_exactly(tmp_path, monkeypatch, sig,
                                                                    raised):
    import os
    import signal
    cfg = smoke_config("isic-d2", steps=6)
    x, t, _ = fixture_set(cfg)
    before = signal.getsignal(signal.SIGTERM)
    loop.train(cfg, x, t, tmp_path / "straight")
    calls = {"n": 0}
    real = loop.loss_seg

    def signalling(*args, **kwargs):  # the signal arrives in the middle of step 4
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), getattr(signal, sig))
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "loss_seg", signalling)
    with pytest.raises(raised):
        loop.train(cfg, x, t, tmp_path / "resumed", save_every_s=1e9)
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["step"] == 4
    monkeypatch.setattr(loop, "loss_seg", real)
    loop.train(cfg, x, t, tmp_path / "resumed")
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)["net"]
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["net"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    assert signal.getsignal(signal.SIGTERM) is before  # handlers given back


def test_export_then_encode_segment_matches_the_trained_network(tmp_path, monkeypatch):
    cfg = smoke_config("isic-d4", steps=5)
    x, t, full = fixture_set(cfg)
    loop.train(cfg, x, t, tmp_path / "run")
    net, _ = loop.load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    manifest, state, table, _ = export.build_model(net, cfg, x, "smoke-d4", False,
                                                   {"recipe": cfg.name})
    path = zoo.write_model_file(tmp_path / "models", manifest, state, table)
    monkeypatch.setenv(zoo.PATH_ENV, str(path.parent))
    zoo.reload()
    try:
        from conftest import isic_image
        for i in range(len(full)):
            labels = segcodec.segment(segcodec.encode(isic_image(i), model="smoke-d4"))
            with torch.no_grad():
                logits, _, _ = net(x[i:i + 1], stochastic=False)
            expected = segcodec.transforms.labels_from_logits(logits, full[i].shape)
            np.testing.assert_array_equal(labels, expected)
    finally:
        monkeypatch.delenv(zoo.PATH_ENV)
        zoo.reload()


def test_unknown_config_names_the_known_ones():
    with pytest.raises(ValueError, match="isic-d4"):
        recipes.config("isic-d9")


def test_rate_point_fine_tunes_its_parent_run(tmp_path):
    cfg = recipes.config("isic-d4-r2")
    assert cfg.init == "isic-d4"
    assert cfg.rate_weight > recipes.config("isic-d4").rate_weight
    assert cfg.select_from == 0.5  # not the parent's weights from its first steps
    (tmp_path / "isic2017").mkdir()
    from click.testing import CliRunner
    from segcodec.cli.main import main
    result = CliRunner().invoke(main, ["train", "isic-d4-r2", "--data", str(tmp_path),
                                       "--out", str(tmp_path / "runs" / "isic-d4-r2")])
    assert result.exit_code == 1
    assert "train that first" in result.output and "Traceback" not in result.output


def test_train_without_data_is_one_line_error(tmp_path):
    from click.testing import CliRunner
    from segcodec.cli.main import main
    result = CliRunner().invoke(main, ["train", "isic-d4", "--data", str(tmp_path)])
    assert result.exit_code == 1 and "no isic2017/" in result.output


def test_hippocampus_d4_starts_its_segmentor_from_the_seg_run(tmp_path):
    seg_cfg = smoke_config("hippocampus-seg", steps=2)
    x, t, _ = fixture_set(seg_cfg)
    loop.train(seg_cfg, x, t, tmp_path / "seg")
    seg, _ = loop.load_checkpoint(tmp_path / "seg" / "checkpoint.pt")
    cfg = smoke_config("hippocampus-d4", steps=1, lr=0.0,
                       init_segmentor=str(tmp_path / "seg" / "checkpoint.pt"))
    loop.train(cfg, x, t, tmp_path / "d4")
    net, _ = loop.load_checkpoint(tmp_path / "d4" / "checkpoint.pt")
    for name, value in seg.state_dict().items():
        if "running" not in name and "num_batches" not in name:  # BN statistics move
            assert torch.equal(value, net.segmentor.state_dict()[name]), name


def test_isic_d4_is_taught_by_the_seg_run_and_keeps_its_best_validation_weights(tmp_path):
    seg_cfg = smoke_config("isic-seg", steps=3)
    x, t, full = fixture_set(seg_cfg)
    loop.train(seg_cfg, x, t, tmp_path / "seg")
    teacher = str(tmp_path / "seg" / "checkpoint.pt")
    cfg = smoke_config("isic-d4", steps=6, rate_ramp=0.5, init_segmentor=teacher,
                       teacher=teacher, distil_weight=1.0)
    loop.train(cfg, x, t, tmp_path / "d4", val=(x, full))
    rows = read_log(tmp_path / "d4" / "log.csv")
    assert all(r["loss_distil"] > 0 for r in rows)
    val = list(csv.DictReader(open(tmp_path / "d4" / "val.csv")))
    assert [int(r["step"]) for r in val] == [1, 2, 3, 4, 5, 6]
    ck = torch.load(tmp_path / "d4" / "checkpoint.pt", weights_only=False)
    # Only weights past the rate ramp (step 3 of 6) may be picked: their rate is the final one.
    eligible = {int(r["step"]): float(r["val_dice"]) for r in val if int(r["step"]) >= 3}
    assert ck["best"]["step"] == max(eligible, key=eligible.get)
    picked, _ = loop.load_checkpoint(tmp_path / "d4" / "checkpoint.pt", best=True)
    for name, value in ck["best"]["net"].items():
        assert torch.equal(picked.state_dict()[name], value), name


def test_resuming_under_another_config_is_refused(tmp_path):
    cfg = smoke_config("isic-d2", steps=2)
    x, t, _ = fixture_set(cfg)
    loop.train(cfg, x, t, tmp_path)
    with pytest.raises(ValueError, match="steps=2"):
        loop.train(dataclasses.replace(cfg, steps=3), x, t, tmp_path)


def test_export_of_a_non_checkpoint_is_one_line_error(tmp_path):
    from click.testing import CliRunner
    from segcodec.cli.main import main
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(main, ["export", str(bogus), "--data", str(tmp_path),
                                       "--name", "x"])
    assert result.exit_code == 1 and "not a segcodec training checkpoint" in result.output
    assert "Traceback" not in result.output


def isic_folder(root):
    """A data folder in ../shared/data's ISIC layout, from the fixtures."""
    import shutil
    for split in ("train", "val"):
        for sub in ("images", "masks"):
            (root / "isic2017" / split / sub).mkdir(parents=True)
    for i, image in enumerate(ISIC * 2):  # 6 training cases, 3 test cases
        stem = f"ISIC_{i:07d}"
        for split in ("train",) + (("val",) if i < 3 else ()):
            base = root / "isic2017" / split
            shutil.copy(image, base / "images" / f"{stem}.jpg")
            shutil.copy(image.with_name(image.stem + "_segmentation.png"),
                        base / "masks" / f"{stem}_segmentation.png")
    return root


def test_validation_is_carved_from_training_and_never_touches_test(tmp_path):
    root = isic_folder(tmp_path)
    fit, val = data.task_pairs("isic", root, "fit"), data.task_pairs("isic", root, "val")
    assert len(val) == 3 and not set(fit) & set(val)
    assert sorted(fit + val) == data.task_pairs("isic", root, "train")
    assert all("/train/" in str(p) for p, _ in fit + val)
    assert val == data.task_pairs("isic", root, "val")  # seeded: the same every time


def test_run_trains_picks_on_validation_and_scores_the_test_set(tmp_path):
    from segcodec.train import run
    root = isic_folder(tmp_path / "data")
    summary = run.run("isic-seg", root, tmp_path / "runs" / "isic-seg", steps=6,
                      cache=None, log=lambda m: None)
    assert summary["train_cases"] == 3 and summary["val_cases"] == 3
    assert summary["test_cases"] == 3 and 0 <= summary["test"]["dice"][0] <= 1
    val = list(csv.DictReader(open(tmp_path / "runs" / "isic-seg" / "val.csv")))
    best = max(val, key=lambda r: float(r["val_dice"]))
    assert summary["picked"]["val_dice"] == pytest.approx(float(best["val_dice"]), abs=1e-5)
    with pytest.raises(ValueError, match="train that first.*--teacher RUN"):
        run.run("isic-d4", root, tmp_path / "elsewhere" / "isic-d4", steps=6, cache=None)
    # A seg run trained with --out elsewhere is named as the teacher.
    summary = run.run("isic-d4", root, tmp_path / "elsewhere" / "isic-d4", steps=2, cache=None,
                      teacher=tmp_path / "runs" / "isic-seg", log=lambda m: None)
    assert summary["steps"] == 2
    with pytest.raises(ValueError, match="isic-seg takes no teacher run"):
        run.run("isic-seg", root, tmp_path / "x", steps=2, cache=None, log=lambda m: None,
                teacher=tmp_path / "runs" / "isic-seg")


class _Planted:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (str(self.marker), "w"))


def test_checkpoints_and_caches_never_run_code(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"config": _Planted(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="not a segcodec training checkpoint"):
        export.export(tmp_path / "evil.pt", tmp_path, "x")
    # resume, a parent, lighten and a data cache read through read_checkpoint: one line each
    # (a 35-line UnpicklingError before)
    with pytest.raises(ValueError, match=r"evil.pt: not a file segcodec training wrote .*"
                                         r"UnpicklingError\); not loaded$"):
        loop.load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes((tmp_path / "evil.pt").read_bytes())
    from click.testing import CliRunner

    from segcodec.cli.main import main
    root = isic_folder(tmp_path / "data")
    result = CliRunner().invoke(main, ["train", "isic-seg", "--data", str(root), "--out",
                                       str(tmp_path / "run"), "--steps", "2", "--cache",
                                       str(tmp_path / "cache")])
    assert result.exit_code == 1 and "not loaded" in result.output
    assert "Traceback" not in result.output
    assert not marker.exists()


@pytest.mark.parametrize("ndim", [2, 3])
def test_affine_augmentation_moves_image_and_targets_together(ndim):
    gen = torch.Generator().manual_seed(3)
    grid = (24, 24) if ndim == 2 else (12, 16, 12)
    fg = (torch.rand((6, 1) + grid, generator=gen) > 0.7).float()
    fg = torch.nn.functional.avg_pool2d(fg.flatten(0, 1) if ndim == 3 else fg, 3, 1, 1) \
        .reshape(fg.shape)  # blobs, so a shift of one pixel keeps the maps correlated
    t = torch.cat([1 - fg, fg], 1)
    x = fg.repeat(1, 3 if ndim == 2 else 1, *([1] * ndim))
    xa, ta = loop.augment(x, t, torch.Generator().manual_seed(0), "affine")
    xb, tb = loop.augment(x, t, torch.Generator().manual_seed(0), "affine")
    assert torch.equal(xa, xb) and torch.equal(ta, tb)  # drawn from the run's generator
    assert xa.shape == x.shape and ta.shape == t.shape
    assert torch.allclose(ta.sum(1), torch.ones(()), atol=1e-5)  # still class fractions
    assert not torch.allclose(ta, loop.augment(x, t, torch.Generator().manual_seed(0))[1])
    for i in range(len(x)):  # the image moved with its targets: gain and offset aside
        r = torch.corrcoef(torch.stack([xa[i, 0].flatten(), ta[i, 1].flatten()]))[0, 1]
        assert r > 0.98, (i, float(r))
    with pytest.raises(ValueError, match="augmentation"):
        loop.augment(x, t, gen, "mixup")


# Keys configs gained after the first version; an older run's config lacks some of them.
NEWER_KEYS = ("fingerprint", "orientation", "distil_weight", "augment", "select_from", "init",
              "init_segmentor", "teacher", "precision", "init_compressor")


def written_before(ck_path, keys=NEWER_KEYS):
    """Rewrite a run's checkpoint as a version before ``keys`` existed wrote it."""
    ck = torch.load(ck_path, weights_only=False)
    ck["config"] = {k: v for k, v in ck["config"].items() if k not in keys}
    torch.save(ck, ck_path)


def test_a_g_that_interpolates_to_a_grid_that_is_not_square_follows_a_quarter_turn():
    """Training turns images by quarter turns (``augment``) whatever their grid: g that stops
    short of the working grid and interpolates there gives a turned image a turned map."""
    cfg = smoke_config("isic-d4", arch={**recipes.config("isic-d4").arch, "g_widths": [16, 8],
                                        "work_shape": [56, 72]})
    net = loop.build_net(cfg).eval()
    assert net.reconstructor.out_shape == (56, 72)
    for x in (torch.rand(2, 3, 56, 72), torch.rand(2, 3, 72, 56)):
        with torch.no_grad():
            out, _, _ = net(x, stochastic=False)
        assert out.shape[2:] == x.shape[2:]


def test_runs_written_before_augment_existed_resume_as_flips(tmp_path):
    cfg = smoke_config("isic-d2", steps=2, augment="flips")
    x, t, _ = fixture_set(cfg)
    loop.train(cfg, x, t, tmp_path)
    written_before(tmp_path / "checkpoint.pt", ("augment",))
    loop.train(cfg, x, t, tmp_path)  # same run: no error
    with pytest.raises(ValueError, match="augment=flips"):
        loop.train(dataclasses.replace(cfg, augment="affine"), x, t, tmp_path)


@pytest.fixture(scope="module")
def started_run(tmp_path_factory):
    """(config, images, targets, folder) of a finished two-step run to resume."""
    out = tmp_path_factory.mktemp("started")
    cfg = smoke_config("isic-d3", steps=2)
    x, t, _ = fixture_set(cfg)
    loop.train(cfg, x, t, out)
    return cfg, x, t, out


# A value other than the started run's for every field resume compares.
CHANGED = {"name": "isic-d3b", "task_key": "lesions", "design": "d4", "task": "another task",
           "labels": ["background", "mole"], "fingerprint": {"name": "lesions"},
           "arch": {**recipes.TASKS["isic"]["arch"], "latent_channels": 3},
           "normalisation": {"kind": "zscore"}, "orientation": "RAS", "compress": False,
           "target": "image", "critic_widths": [8, 8, 8], "dis_weight": 0.2,
           "rate_weight": 0.1, "rate_ramp": 0.25, "dice_weight": 0.5, "distil_weight": 1.0,
           "batch": 2, "lr": 1e-3, "steps": 3, "seed": 1, "augment": "flips",
           "precision": "bf16", "select_from": 0.5}


def test_resume_compares_every_field_but_the_parent_runs():
    fields = {f.name for f in dataclasses.fields(recipes.Recipe)}
    assert set(CHANGED) == fields - set(loop.RESUME_IGNORES)


@pytest.mark.parametrize("key", sorted(CHANGED))
def test_a_run_resumes_only_under_every_setting_it_started_with(started_run, key):
    cfg, x, t, out = started_run
    assert getattr(cfg, key) != CHANGED[key]
    with pytest.raises(ValueError, match=f"started with {key}="):
        loop.train(dataclasses.replace(cfg, **{key: CHANGED[key]}), x, t, out)


def test_a_run_resumes_with_its_parent_runs_moved(tmp_path):
    cfg = smoke_config("isic-d3", steps=2)
    x, t, _ = fixture_set(cfg)
    loop.train(cfg, x, t, tmp_path)
    moved = dataclasses.replace(cfg, init="moved/elsewhere", init_segmentor="moved/seg",
                                teacher="moved/teacher")
    loop.train(moved, x, t, tmp_path)


def test_a_resolved_recipe_round_trips_through_json(tmp_path):
    for name in recipes.names():
        cfg = recipes.config(name)
        resolved = json.loads(json.dumps(cfg.resolve()))
        assert set(resolved) == {f.name for f in dataclasses.fields(recipes.Recipe)}
        assert recipes.Recipe.load(resolved) == cfg
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(recipes.config("isic-d4-r2").resolve()))
    assert recipes.config(str(path)) == recipes.config("isic-d4-r2")


def test_an_old_config_loads_with_what_its_missing_keys_meant():
    old = {k: v for k, v in recipes.config("hippocampus-d4").resolve().items()
           if k not in NEWER_KEYS + ("critic_widths",)}
    old["critic_clip"] = 0.05  # written by the first version, read by none since
    cfg = recipes.Recipe.load(old)
    assert (cfg.augment, cfg.select_from, cfg.distil_weight, cfg.teacher) == \
        ("flips", None, 0.0, None)
    assert cfg.orientation == "RAS" and cfg.critic_widths == [16, 32]  # the task's
    # The shipped ISIC reference was trained before augment and orientation were keys.
    from safetensors import safe_open
    with safe_open(str(FIXTURES.parent / "bench" / "references" / "isic-seg.safetensors"),
                   "pt") as f:
        shipped = json.loads(f.metadata()["config"])
    assert "augment" not in shipped
    cfg = recipes.Recipe.load(shipped)
    assert (cfg.augment, cfg.orientation, cfg.name) == ("flips", None, "isic-seg")


def test_a_run_written_before_the_newer_keys_resumes_as_it_ran(tmp_path):
    cfg = smoke_config("hippocampus-d4", steps=2, augment="flips")
    x, t, _ = fixture_set(cfg)
    loop.train(cfg, x, t, tmp_path)
    written_before(tmp_path / "checkpoint.pt")
    loop.train(cfg, x, t, tmp_path)  # the task's orientation, flips, no teacher: as it ran
    _, loaded = loop.load_checkpoint(tmp_path / "checkpoint.pt")
    assert loaded == cfg


@pytest.mark.parametrize("change, error", [
    ({"stpes": 3}, r"unknown config key 'stpes' \(did you mean 'steps'\?\)"),
    ({"steps": "many"}, "config key 'steps': 'many' is not int"),
    ({"batch": True}, "config key 'batch': True is not int"),
    ({"labels": "lesion"}, "config key 'labels'"),
    ({"augment": "mixup"}, "config key 'augment': 'mixup' is not one of flips, affine"),
    ({"rate_ramp": 2}, "config key 'rate_ramp': 2 is not within 0 and 1"),
    ({"design": "d9"}, "config key 'design'"),
])
def test_a_bad_config_is_refused_naming_the_key(change, error):
    with pytest.raises(ValueError, match=error):
        recipes.Recipe.load({**recipes.config("isic-d4").resolve(), **change})


def test_a_config_without_a_key_every_version_wrote_is_refused():
    without = recipes.config("isic-d4").resolve()
    del without["steps"]
    with pytest.raises(ValueError, match="config key 'steps' missing"):
        recipes.Recipe.load(without)


def test_a_config_file_with_an_unknown_key_is_one_line_error(tmp_path):
    from click.testing import CliRunner
    from segcodec.cli.main import main
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({**recipes.config("isic-d4").resolve(), "lr_decay": 0.5}))
    result = CliRunner().invoke(main, ["train", str(path), "--data", str(tmp_path)])
    assert result.exit_code == 1 and "unknown config key 'lr_decay'" in result.output
    assert "Traceback" not in result.output


def test_a_rate_point_picks_only_from_its_second_half(tmp_path):
    cfg = smoke_config("isic-d4", steps=6, rate_ramp=0.0, select_from=0.5)
    x, t, full = fixture_set(cfg)
    loop.train(cfg, x, t, tmp_path, val=(x, full))
    val = list(csv.DictReader(open(tmp_path / "val.csv")))
    eligible = {int(r["step"]): float(r["val_dice"]) for r in val if int(r["step"]) >= 3}
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["best"]["step"] == max(eligible, key=eligible.get)


@pytest.mark.parametrize("narrow", [
    {"c_widths": [8, 16, 48], "g_widths": [16, 8]},
    {"c_widths": [8, 48], "c_first_stride": 2, "g_widths": [16, 8]},  # no layer on the full grid
])
def test_lighten_distils_a_narrower_c_and_g_to_fine_tune_or_export(tmp_path, monkeypatch, narrow):
    from segcodec.train import lighten
    root = isic_folder(tmp_path / "data")
    cfg = smoke_config("isic-d4", steps=2, normalisation=ISIC_NORM)
    x, t, _ = fixture_set(cfg)
    loop.train(cfg, x, t, tmp_path / "parent")
    parent, _ = loop.load_checkpoint(tmp_path / "parent" / "checkpoint.pt", best=True)
    scores = lighten.lighten(tmp_path / "parent" / "checkpoint.pt", narrow, root,
                             tmp_path / "init.pt", steps=3, batch=2, cache=None, log=lambda m: 0)
    assert all(0 <= d <= 1 for d in scores["parent_val_dice"] + scores["child_val_dice"])
    ck = torch.load(tmp_path / "init.pt", weights_only=True)
    assert ck["config"]["arch"] == {**cfg.arch, **narrow}
    assert ck["net"]["compressor.body.0.weight"].shape[0] == 8
    for name, value in parent.segmentor.state_dict().items():  # s is the parent's, untouched
        assert torch.equal(ck["net"][f"segmentor.{name}"], value), name
    child_cfg = dataclasses.replace(cfg, arch=ck["config"]["arch"], init=str(tmp_path / "init.pt"),
                                    steps=1, lr=0.0)
    torch.manual_seed(cfg.seed)
    fresh = loop.build_net(child_cfg).state_dict()  # what lighten starts C and g from
    for name in ("compressor.body.0.weight", "reconstructor.out.weight"):
        assert not torch.equal(ck["net"][name], fresh[name]), name  # they learned
    loop.train(child_cfg, x, t, tmp_path / "child")
    child, _ = loop.load_checkpoint(tmp_path / "child" / "checkpoint.pt")
    assert torch.equal(child.reconstructor.out.weight, ck["net"]["reconstructor.out.weight"])
    # ...or it is exported as it is, and codes and segments
    export.export(tmp_path / "init.pt", root, "light", tmp_path / "models", False, None)
    monkeypatch.setenv(zoo.PATH_ENV, str(tmp_path / "models"))
    zoo.reload()
    try:
        model = zoo.find("light")
        assert model.manifest.architecture.g_widths == (16, 8)
        assert model.manifest.training["recipe"] == "isic-d4-light"
        data = segcodec.encode(isic_image(0), model="light", force=True)
        assert segcodec.segment(data).shape == isic_image(0).shape[:2]
    finally:
        monkeypatch.delenv(zoo.PATH_ENV)
        zoo.reload()


def test_lighten_refuses_what_it_cannot_distil_in_one_line(tmp_path):
    from segcodec.train import lighten
    cfg = smoke_config("isic-d4", steps=1, normalisation=ISIC_NORM)
    x, t, _ = fixture_set(cfg)
    loop.train(cfg, x, t, tmp_path / "parent")
    for arch, why in (('{"g_widths": [8, 8, 8, 8]}', "architecture g_widths"),
                      ('{"c_first_stride": 2}', "C must keep the parent's latent grid")):
        with pytest.raises(SystemExit, match=f"^lighten: error: {why}[^\n]*$"):
            lighten.main([str(tmp_path / "parent" / "checkpoint.pt"), "--arch", arch,
                          "--data", str(tmp_path), "--out", str(tmp_path / "out.pt")])
        assert not (tmp_path / "out.pt").exists()


def test_train_refuses_zero_steps_and_logs_progress_without_a_terminal(tmp_path):
    """--steps 0 ran the whole recipe (hours); without a terminal the only progress shown was
    the recipe's name."""
    from click.testing import CliRunner

    from segcodec.cli.main import main
    root = isic_folder(tmp_path / "data")
    for option, value in (("--steps", "0"), ("--steps", "-5"), ("--threads", "0")):
        result = CliRunner().invoke(main, ["train", "isic-seg", "--data", str(root), "--out",
                                           str(tmp_path / "run"), option, value])
        assert result.exit_code == 2 and option in result.output
    assert not (tmp_path / "run").exists()
    result = CliRunner().invoke(main, ["train", "isic-seg", "--data", str(root), "--out",
                                       str(tmp_path / "run"), "--steps", "4", "--cache",
                                       str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "s a step" in line]
    assert lines[-1].startswith("isic-seg: step 4/4, ") and lines[-1].endswith("0 min left")
    assert len(lines) == 3  # steps 2, 3 and 4: every twentieth of 4 steps, timed from step 1
    again = CliRunner().invoke(main, ["train", "isic-seg", "--data", str(root), "--out",
                                      str(tmp_path / "run"), "--steps", "4", "--cache",
                                      str(tmp_path / "cache")])
    assert again.exit_code == 0, again.output
    assert f"isic-seg: resuming {tmp_path / 'run'} from step 4 of 4" in again.output


def test_a_widened_run_starts_as_its_parents_function(tmp_path):
    """More latent channels than the parent: C's first bits and g's output are the parent's,
    whatever the new bits are, so fine-tuning starts where the parent stands."""
    parent_cfg = smoke_config("isic-d4")
    torch.manual_seed(1)
    parent = loop.build_net(parent_cfg).eval()
    wide_cfg = dataclasses.replace(parent_cfg, arch={**parent_cfg.arch, "latent_channels": 8})
    wide = loop.build_net(wide_cfg).eval()
    loop.load_grown(wide, parent.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _, p_parent, z_parent = parent(x, stochastic=False)
        _, p_wide, z_wide = wide(x, stochastic=False)
        assert torch.equal(p_wide[:, :4], p_parent)
        z = torch.cat([z_parent, torch.randint(0, 2, z_parent.shape).float()], 1)
        assert torch.allclose(wide.decode_logits(z), parent.decode_logits(z_parent), atol=1e-6)
    narrow_cfg = dataclasses.replace(parent_cfg, arch={**parent_cfg.arch, "latent_channels": 2})
    with pytest.raises(ValueError, match="does not fit"):
        loop.load_grown(loop.build_net(narrow_cfg), parent.state_dict())


def test_a_run_may_start_its_c_from_a_shipped_model(tmp_path):
    """``init_compressor``: C starts as the model's C (the latents of the model's numpy C on
    the same input); a C of another shape is refused by name."""
    model = zoo.find("isic-lesion-v4")
    cfg = smoke_config("isic-d4", arch={**recipes.config("isic-d4").arch,
                                        "c_widths": list(model.manifest.architecture.c_widths),
                                        "latent_channels": 4, "c_first_stride": 1},
                       init_compressor="isic-lesion-v4")
    parts = loop._Parts.build(cfg, "cpu")
    parts.start_from_parents(cfg, "cpu")
    x = np.random.default_rng(0).normal(size=(3, 64, 64))
    with torch.no_grad():
        ours = parts.net.compressor(torch.as_tensor(x, dtype=torch.float32)[None])[0].numpy()
    assert np.array_equal(ours > 0, model.compressor(x) > 0)
    other = dataclasses.replace(cfg, arch={**cfg.arch, "c_widths": [8, 16, 24]})
    with pytest.raises(ValueError, match="c_widths"):
        loop._Parts.build(other, "cpu").start_from_parents(other, "cpu")
