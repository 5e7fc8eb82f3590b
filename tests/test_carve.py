"""The validation carve of a data set folder keeps look-alike cases on one side."""
import json

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from segcodec.cli.main import main
from segcodec.train import carve, data, run
from test_datasets import msd_folder


def patients_folder(root, n_patients=10, seed=0):
    """An MSD-layout MRI data set of two phases per patient: each patient's own volume, and
    the same with a little noise (no layout ties the two together)."""
    rng = np.random.default_rng(seed)
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    for p in range(n_patients):
        heart = rng.normal(100, 30, (16, 18, 8))
        for phase in (1, 2):
            image = heart + rng.normal(0, 2, heart.shape)
            labels = (image > 110).astype(np.uint8)
            name = f"patient{p:03d}_frame{phase:02d}.nii.gz"
            nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), root / "imagesTr" / name)
            nib.save(nib.Nifti1Image(labels, np.eye(4)), root / "labelsTr" / name)
    (root / "dataset.json").write_text(json.dumps({
        "name": "Heart", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "heart"},
        "numTraining": 2 * n_patients}))
    return root


def test_a_patients_two_phases_land_on_the_same_side(tmp_path):
    root = patients_folder(tmp_path / "Task98_Heart")
    fit, val = data.task_pairs("heart", root, "fit"), data.task_pairs("heart", root, "val")
    assert sorted(fit + val) == data.task_pairs("heart", root, "train")
    patient = lambda pairs: {image.name[:10] for image, _ in pairs}  # noqa: E731
    # a tenth of 20 is 2: one patient, both phases, and no phase of it left in training
    assert len(val) == 2 and len(patient(val)) == 1 and not patient(val) & patient(fit)
    assert val == data.task_pairs("heart", root, "val")  # seeded: the same every time


def test_groups_are_drawn_whole_while_they_fit():
    rng = np.random.default_rng(1)
    cases = rng.normal(size=(30, 3, 20, 20))
    cases[10:15] = cases[10] + rng.normal(0, 0.05, (5, 3, 20, 20))  # five frames of one video
    cases[20:22] = cases[20] + rng.normal(0, 0.05, (2, 3, 20, 20))
    thumbs = np.stack([carve.thumbnail(c) for c in cases])
    groups = carve.lookalike_groups(thumbs)
    assert sorted(map(len, groups), reverse=True)[:3] == [5, 2, 1] and len(groups) == 25
    for seed in range(20):
        held = carve.draw(groups, 6, seed)
        assert len(held) <= 6 and held  # no group is split, so a draw may come out short
        for g in groups:
            assert set(g) <= held or not set(g) & held
    assert not carve.thumbnail(np.full((1, 8, 8), 3.0)).any()  # a flat image matches nothing


def test_cases_that_all_look_alike_are_drawn_one_at_a_time(tmp_path):
    # CT phantoms, a body in air each: one group, so the carve falls back to single cases.
    root = msd_folder(tmp_path / "Task99_Organ", n_train=20, n_test=0)
    pairs = data.task_pairs("organ", root, "train")
    thumbs = np.stack([carve.thumbnail(data.read_pair(*p)[0]) for p in pairs])
    assert len(carve.lookalike_groups(thumbs)) == 1
    assert len(data.task_pairs("organ", root, "val")) == data.validation_cases("organ", 20) == 2
    assert carve.draw([[0, 1], [2, 3], [4, 5], [6, 7]], 1, 0) in ({0, 1}, {2, 3}, {4, 5}, {6, 7})
    # groups far larger than a tenth: single cases, not a group of 40 held out for 10
    assert len(carve.draw([list(range(40)), list(range(40, 100))], 10, 0)) == 10


def test_splits_final_json_names_the_validation_cases(tmp_path):
    """nnU-Net's splits file, where the user knows the patients better than thumbnails do."""
    root = patients_folder(tmp_path / "Task98_Heart", n_patients=4)
    chosen = ["patient001_frame01", "patient001_frame02.nii.gz", "patient003_frame01"]
    (root / "splits_final.json").write_text(json.dumps([{"train": [], "val": chosen}]))
    val = data.task_pairs("heart", root, "val")
    assert [image.name for image, _ in val] == [f"{name.split('.')[0]}.nii.gz" for name in chosen]
    assert len(data.task_pairs("heart", root, "fit")) == 5
    for splits, message in (([{"val": ["patient009_frame01"]}], "not training cases here"),
                            ({"val": chosen}, "not nnU-Net's splits"),
                            ([{"val": []}], "leaves no training case"),
                            ([{"val": "patient001_frame01"}], "not a list of case names")):
        (root / "splits_final.json").write_text(json.dumps(splits))
        result = CliRunner().invoke(main, ["train", "--data", str(root), "--design", "seg",
                                           "--steps", "1", "--out", str(tmp_path / "run")])
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_run_does_not_resume_on_another_validation_split(tmp_path):
    root = patients_folder(tmp_path / "Task98_Heart", n_patients=4)
    out = tmp_path / "runs" / "heart-seg"
    run.run(None, root, out, design="seg", steps=2, batch=2, cache=None, log=lambda m: None)
    (root / "splits_final.json").write_text(json.dumps([{"val": ["patient002_frame01"]}]))
    with pytest.raises(ValueError, match="another validation split"):
        run.run(None, root, out, design="seg", steps=2, batch=2, cache=None, log=lambda m: None)
