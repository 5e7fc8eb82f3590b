"""Bring your own data: data set folders, their fingerprint and plan, and a planned run that
trains, exports, encodes, segments and evaluates end to end."""
import dataclasses
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import segcodec
from segcodec import datasets, zoo
from segcodec.cli.main import main
from segcodec.errors import InputError
from segcodec.train import convert, data, plan, recipes, run

LPS = np.diag([-1.5, -1.5, 1.5, 1.0])


def phantom(rng, shape=(16, 22, 16)):
    """A CT-like volume: body at 40 HU in -1000 air, an organ of two labelled halves at
    120 and 200 HU, its place and size drawn per case."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    centre = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    r = (grid - centre) / (np.array(shape) * rng.uniform(0.18, 0.25))
    organ = (r ** 2).sum(-1) < 1
    labels = np.where(organ, np.where(grid[..., 1] < centre[1], 1, 2), 0).astype(np.uint8)
    image = np.full(shape, -1000.0)
    image[2:-2, 2:-2, 2:-2] = 40
    image[labels == 1], image[labels == 2] = 120, 200
    return (image + rng.normal(0, 15, shape)).astype(np.int16), labels


def msd_folder(root, n_train=12, n_test=3, seed=0):
    """An MSD-layout CT data set; one training case stored LPS, the rest RAS."""
    rng = np.random.default_rng(seed)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True)
    for i in range(n_train + n_test):
        image, labels = phantom(rng)
        affine = np.diag([1.5, 1.5, 1.5, 1.0])
        if i == 1:  # the same anatomy, stored with the first two axes reversed
            image, labels, affine = image[::-1, ::-1], labels[::-1, ::-1], LPS.copy()
            affine[:2, 3] = [15 * 1.5, 21 * 1.5]
        split = "Tr" if i < n_train else "Ts"
        nib.save(nib.Nifti1Image(image, affine), root / f"images{split}" / f"organ_{i:03d}.nii.gz")
        nib.save(nib.Nifti1Image(labels, affine), root / f"labels{split}" / f"organ_{i:03d}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "name": "Organ", "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "organ left", "2": "organ right"},
        "numTraining": n_train}))
    return root


def test_msd_folder_is_described_from_dataset_json(tmp_path):
    ds = datasets.open(msd_folder(tmp_path / "Task99_Organ"))
    assert (ds.name, ds.ndim, ds.channels, ds.modality) == ("Organ", 3, 1, "CT")
    assert ds.labels == ["background", "organ left", "organ right"]
    assert len(ds.training) == 12 and len(ds.test) == 3
    assert not {c.name for c in ds.training} & {c.name for c in ds.test}


def test_nnunet_v2_names_and_channel_suffix(tmp_path):
    root = msd_folder(tmp_path / "Dataset099_Organ", n_train=3, n_test=0)
    for p in sorted((root / "imagesTr").iterdir()):
        p.rename(p.with_name(p.name.replace(".nii.gz", "_0000.nii.gz")))
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "left": 1, "right": 2},
        "numTraining": 3, "file_ending": ".nii.gz"}))
    ds = datasets.open(root)
    assert ds.labels == ["background", "left", "right"] and ds.modality == "CT"
    assert [c.name for c in ds.training] == ["organ_000", "organ_001", "organ_002"]
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": [1, 2]}}))
    with pytest.raises(InputError, match="region labels"):
        datasets.open(root)


def test_fingerprint_plans_grid_orientation_and_ct_normalisation(tmp_path):
    fp = plan.fingerprint(datasets.open(msd_folder(tmp_path / "organ")))
    assert fp["orientation"] == "RAS"  # 11 of 12 cases
    assert fp["median_shape"] == [16, 22, 16] and fp["median_spacing"] == [1.5, 1.5, 1.5]
    # Foreground is the organ at 120 and 200 HU, never the air or the body.
    f = fp["foreground_intensity"]
    assert 60 < f["p00_5"] < 120 < 200 < f["p99_5"] < 260 and 120 < f["mean"] < 200
    task = plan.task(fp)
    assert task["normalisation"]["kind"] == "ct"
    assert task["arch"]["work_shape"] == [16, 24, 16]  # the nearest multiples of 8
    assert task["arch"]["n_classes"] == 3 and task["orientation"] == "RAS"
    assert plan.work_shape([400, 400, 300], 32 * 48 * 32) == [40, 40, 32]
    assert plan.work_shape([767, 1022], 64 * 64) == [56, 72]


def test_ct_normalisation_clips_then_uses_the_data_set_statistics():
    spec = {"kind": "ct", "low": -100.0, "high": 300.0, "mean": 100.0, "std": 50.0}
    x = segcodec.transforms.normalise(np.array([[-1000.0, 100.0, 3000.0]]), spec)
    assert x.flatten().tolist() == [-4.0, 0.0, 4.0]


def test_a_planned_data_set_trains_exports_encodes_segments_and_evaluates(tmp_path,
                                                                         monkeypatch):
    root = msd_folder(tmp_path / "Task99_Organ")
    runs = tmp_path / "runs"
    cli = CliRunner()
    result = cli.invoke(main, ["train", "--data", str(root), "--steps", "4"])
    assert result.exit_code == 1 and "train that first (--design seg)" in result.output
    for design, steps in (("seg", "40"), ("d4", "120")):
        result = cli.invoke(main, ["train", "--data", str(root), "--design", design,
                                   "--steps", steps, "--batch", "4",
                                   "--out", str(runs / f"organ-{design}"),
                                   "--cache", str(tmp_path / "cache")])
        assert result.exit_code == 0, result.output
    summary = json.loads(result.output.splitlines()[-1])
    assert (summary["train_cases"], summary["val_cases"], summary["test_cases"]) == (11, 1, 3)
    split = json.loads((runs / "organ-d4" / "split.json").read_text())
    assert len(split["val"]) == 1 and not set(split["val"]) & set(split["fit"])
    assert split["test"] == ["organ_012.nii.gz", "organ_013.nii.gz", "organ_014.nii.gz"]
    result = cli.invoke(main, ["export", str(runs / "organ-d4" / "checkpoint.pt"), "--data",
                               str(root), "--name", "organ-v1", "--out", str(tmp_path / "models"),
                               "--cache", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    monkeypatch.setenv(zoo.PATH_ENV, str(tmp_path / "models"))
    zoo.reload()
    try:
        m = zoo.find("organ-v1")
        assert m.labels == ["background", "organ left", "organ right"]
        assert m.manifest.normalisation["kind"] == "ct"
        assert m.manifest.orientation == "RAS"
        assert m.manifest.training["recipe"] == "organ-d4"
        # The LPS-stored training case segments in its own voxel order.
        case = root / "imagesTr" / "organ_001.nii.gz"
        labels = segcodec.segment(segcodec.encode(case, model="organ-v1"))
        assert labels.shape == (16, 22, 16)
        out = tmp_path / "eval"
        result = cli.invoke(main, ["evaluate", "organ-v1", "--data", str(root), "-o", str(out)])
        assert result.exit_code == 0, result.output
        scored = json.loads((out / "summary.json").read_text())
        assert scored["coded"] == 3 and scored["failed"] == 0
        # 0.65 and 0.62 measured after these few steps; a bad grid or normalisation learns
        # nothing.
        assert scored["mean"]["dice organ left"] > 0.5 and scored["mean"]["dice organ right"] > 0.5
        # a whole body is not an organ: more voxels than its domain's largest field of view
        with pytest.raises(InputError, match="more than model organ-v1 takes .* even with force"):
            segcodec.encode(np.zeros((200, 200, 200), np.int16), model="organ-v1",
                            affine=np.eye(4))
        with pytest.raises(InputError, match="outside model organ-v1's domain: voxel size 3 mm"):
            segcodec.encode(np.zeros((40, 40, 40), np.int16), model="organ-v1",
                            affine=np.diag([3.0, 3.0, 3.0, 1.0]))
    finally:
        monkeypatch.delenv(zoo.PATH_ENV)
        zoo.reload()


def test_images_and_masks_folder_plans_a_photograph_task(tmp_path):
    from conftest import FIXTURES
    root = tmp_path / "lesions"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for image in sorted((FIXTURES / "isic").glob("ISIC_*[0-9].jpg")):
        shutil.copy(image, root / "images")
        shutil.copy(image.with_name(image.stem + "_segmentation.png"), root / "masks")
    ds = datasets.open(root)
    assert (ds.ndim, ds.channels, ds.modality, ds.labels) == (2, 3, "RGB",
                                                              ["background", "label 1"])
    grey = sorted((root / "images").iterdir())[-1]  # a grey photograph among RGB ones
    Image.open(grey).convert("L").save(grey)
    cfg = recipes.for_dataset(root, "d4", 2)
    assert cfg.name == "lesions-d4-r2" and cfg.init == "lesions-d4"
    assert cfg.normalisation == {"kind": "fixed"} and cfg.arch["in_channels"] == 3
    cfg = dataclasses.replace(cfg, normalisation=data.normalisation_for(cfg, root))
    assert len(cfg.normalisation["mean"]) == 3
    x, _, _ = data.cached_set(cfg, root, "train", None)  # the grey one repeated, as encode does
    norm = cfg.normalisation
    pixels = [x[-1, c] * norm["std"][c] + norm["mean"][c] for c in range(3)]
    assert x.shape[1] == 3 and torch.allclose(pixels[0], pixels[1], atol=1e-5)
    with pytest.raises(ValueError, match="rate points"):
        recipes.for_dataset(root, "seg", 2)
    # Photographs' C starts from the default 2D model's, whose C the plan builds; s does not.
    assert recipes.for_dataset(root, "d4").init_compressor == zoo.default_for(2).name
    assert recipes.for_dataset(root, "seg").init_compressor is None


def test_a_planned_volume_task_builds_the_default_3d_model_s_c_and_starts_from_its_weights(
        tmp_path):
    cfg = recipes.for_dataset(msd_folder(tmp_path / "Task99_Organ"), "d4")
    shipped = zoo.default_for(3).manifest.architecture
    assert (cfg.arch["c_widths"], cfg.arch["c_first_stride"], cfg.arch["latent_channels"]) == \
        (list(shipped.c_widths), shipped.c_first_stride, shipped.latent_channels)
    assert cfg.init_compressor == zoo.default_for(3).name
    assert cfg.arch["g_widths"] == recipes.TASKS["hippocampus"]["arch"]["g_widths"]


def shared_data_tree(root):
    """../shared/data's layout in miniature: isic2017/{train,val}/{images,masks} and
    msd_hippocampus/{imagesTr,labelsTr}, from the fixtures."""
    from conftest import FIXTURES
    for i, image in enumerate(sorted((FIXTURES / "isic").glob("ISIC_*[0-9].jpg")) * 3):
        for split in ("train",) + (("val",) if i < 2 else ()):
            base = root / "isic2017" / split
            (base / "images").mkdir(parents=True, exist_ok=True)
            (base / "masks").mkdir(exist_ok=True)
            shutil.copy(image, base / "images" / f"ISIC_{i:07d}.jpg")
            Image.open(image.with_name(image.stem + "_segmentation.png")).save(
                base / "masks" / f"ISIC_{i:07d}_segmentation.png")
    hippo = root / "msd_hippocampus"
    (hippo / "imagesTr").mkdir(parents=True)
    (hippo / "labelsTr").mkdir()
    names = json.loads(data.SPLIT_FILE.read_text())
    fixtures = sorted((FIXTURES / "hippocampus").glob("hippocampus_*[0-9].nii.gz"))
    for i, name in enumerate(names["train"] + names["test"]):  # all 220: the split names them
        source = fixtures[i % len(fixtures)]
        (hippo / "imagesTr" / name).symlink_to(source)
        (hippo / "labelsTr" / name).symlink_to(
            source.with_name(source.name.replace(".nii.gz", "_labels.nii.gz")))
    return root


def test_converted_shared_data_gives_the_recipes_the_same_cases(tmp_path):
    shared = shared_data_tree(tmp_path / "shared")
    out = tmp_path / "converted"
    written = convert.convert(shared, out)
    assert sorted(written) == ["hippocampus", "isic"]
    for task in ("isic", "hippocampus"):
        ds = datasets.open(out / task)
        assert ds.labels == recipes.TASKS[task]["labels"]
        for split in ("train", "fit", "val", "test"):
            old = data.task_pairs(task, shared, split)
            new = data.task_pairs(task, out / task, split)
            assert [p.name.split(".")[0] for p, _ in old] == \
                [p.name.split(".")[0] for p, _ in new], (task, split)
            for (a_image, a_label), (b_image, b_label) in zip(old, new):
                a, b = data.read_pair(a_image, a_label), data.read_pair(b_image, b_label)
                np.testing.assert_array_equal(a[0], b[0])
                np.testing.assert_array_equal(a[1], b[1])
    # A recipe takes the converted folder as it takes ../shared/data.
    data.check_root(out / "isic", "isic")
    with pytest.raises(ValueError, match="isic2017/ or imagesTr/"):
        data.check_root(tmp_path, "isic")
    assert recipes.config("hippocampus-d4").orientation == "RAS"
    # A planned run is the data set's own, even named as a shipped task (MSD's dataset.json
    # says "Hippocampus"): not the shipped recipe's run name, nor its 20 validation cases.
    planned = run.recipe_for(None, out / "hippocampus", "seg")
    assert planned.task_key == "hippocampusown" and planned.name == "hippocampusown-seg"
    assert data.validation_cases(planned.task_key, 8) == 1


def test_data_sets_segcodec_cannot_train_on_are_refused_in_one_line(tmp_path):
    root = msd_folder(tmp_path / "multi", n_train=2, n_test=0)
    for sub in ("imagesTr", "labelsTr"):  # a four-digit case number is not a channel
        (root / sub / "organ_001.nii.gz").rename(root / sub / "organ_0001.nii.gz")
    assert len(datasets.open(root).training) == 2
    first = sorted((root / "imagesTr").iterdir())[0]
    shutil.copy(first, first.with_name(first.name.replace(".nii.gz", "_0001.nii.gz")))
    with pytest.raises(InputError, match="several channel files .*one channel per case"):
        datasets.open(root)
    root = msd_folder(tmp_path / "4d", n_train=2, n_test=0)
    for p in (root / "imagesTr").iterdir():
        img = nib.load(p)
        nib.save(nib.Nifti1Image(np.stack([img.get_fdata()] * 2, -1), img.affine), p)
    with pytest.raises(InputError, match="2 channels in one 4D file"):
        datasets.open(root)


def test_cases_to_score_need_only_file_names(tmp_path):
    root = msd_folder(tmp_path / "scored", n_train=2, n_test=2)
    shutil.rmtree(root / "imagesTr")
    shutil.rmtree(root / "labelsTr")
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": [1, 2]}}))
    assert [c.name for c in datasets.cases(root)] == ["organ_002", "organ_003"]


def test_own_data_sets_convert_with_held_out_videos_and_patients(tmp_path, monkeypatch):
    """CVC-ClinicDB holds out the end of its frame order, ACDC whole patients."""
    from conftest import FIXTURES
    shared = tmp_path / "shared"
    for sub in ("images", "masks"):
        (shared / "cvc_clinicdb" / sub).mkdir(parents=True)
    photo = sorted((FIXTURES / "isic").glob("ISIC_*[0-9].jpg"))[0]
    for n in range(1, 13):  # numbered frames: 10 sorts after 9, as frame order does
        shutil.copy(photo, shared / "cvc_clinicdb" / "images" / f"{n}.jpg")
        Image.fromarray(((np.arange(64)[:, None] > 30) * 255).astype(np.uint8).repeat(
            64, 1)).save(shared / "cvc_clinicdb" / "masks" / f"{n}.png")
    acdc = shared / "acdc"
    (acdc / "imagesTr").mkdir(parents=True)
    (acdc / "labelsTr").mkdir()
    (acdc / "dataset.json").write_text(json.dumps({
        "name": "ACDC", "channel_names": {"0": "MRI"}, "file_ending": ".nii.gz",
        "labels": {"background": 0, "RV": 1, "MYO": 2, "LV": 3}}))
    rng = np.random.default_rng(0)
    for patient in (1, 2, 7, 8, 11, 13, 19, 22):
        for frame in (1, 2):
            stem = f"patient{patient:03d}_frame{frame:02d}"
            image, labels = phantom(rng, (16, 22, 16))
            nib.save(nib.Nifti1Image(image, np.eye(4)), acdc / "imagesTr" / f"{stem}_0000.nii.gz")
            nib.save(nib.Nifti1Image(labels, np.eye(4)), acdc / "labelsTr" / f"{stem}.nii.gz")
    monkeypatch.setattr(convert, "CVC_TEST", 3)
    assert convert.convert(shared, tmp_path / "out") == ["cvc", "acdc"]
    cvc = datasets.open(tmp_path / "out" / "cvc")
    assert [c.name for c in cvc.test] == ["cvc_010", "cvc_011", "cvc_012"]
    assert len(cvc.training) == 9 and cvc.labels == ["background", "polyp"]
    heart = datasets.open(tmp_path / "out" / "acdc")
    held = {c.name.split("_")[0] for c in heart.test}
    assert held == {"patient008", "patient022"}  # every fourth patient, both frames
    assert len(heart.test) == 4 and not held & {c.name.split("_")[0] for c in heart.training}
