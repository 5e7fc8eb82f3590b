"""segcodec evaluate: per-case scores of a model on a data set folder, as a user's files."""
import csv
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

import segcodec
from segcodec import evaluate, metrics
from segcodec.cli.main import main

from conftest import FIXTURES, HIPPO, ISIC


def label_file(image):
    return FIXTURES / "hippocampus" / image.name.replace(".nii.gz", "_labels.nii.gz")


@pytest.fixture
def msd(tmp_path):
    """An MSD folder of the two hippocampus fixtures, the second in nnU-Net's naming, and a
    third case whose voxels are ten times too large for the model."""
    root = tmp_path / "Task04"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background"}}))
    shutil.copy(HIPPO[0], root / "imagesTr" / "a.nii.gz")
    shutil.copy(label_file(HIPPO[0]), root / "labelsTr" / "a.nii.gz")
    shutil.copy(HIPPO[1], root / "imagesTr" / "b_0000.nii.gz")
    shutil.copy(label_file(HIPPO[1]), root / "labelsTr" / "b.nii.gz")
    big = nib.load(HIPPO[0])
    nib.save(nib.Nifti1Image(np.asarray(big.dataobj), big.affine @ np.diag([10, 10, 10, 1])),
             root / "imagesTr" / "c.nii.gz")
    shutil.copy(label_file(HIPPO[0]), root / "labelsTr" / "c.nii.gz")
    return root


def test_msd_folder_is_scored_case_by_case_as_encode_and_segment_do(msd, tmp_path):
    summary = evaluate.run("hippocampus-v3", msd, tmp_path / "out")
    assert (summary["cases"], summary["coded"], summary["failed"]) == (3, 2, 1)
    rows = {r["case"]: r for r in csv.DictReader(open(tmp_path / "out" / "cases.csv"))}
    assert set(rows) == {"a", "b", "c"}
    assert "domain" in rows["c"]["error"] and rows["c"]["dice anterior hippocampus"] == ""
    data = segcodec.encode(msd / "imagesTr" / "a.nii.gz", model="hippocampus-v3")
    truth = np.asarray(nib.load(msd / "labelsTr" / "a.nii.gz").dataobj).astype(int)
    expected = metrics.scores(segcodec.segment(data), truth, 3)["dice"]
    assert float(rows["a"]["dice anterior hippocampus"]) == pytest.approx(expected[0])
    assert float(rows["a"]["bpp"]) == pytest.approx(len(data) * 8 / truth.size)
    mean = summary["mean"]["dice posterior hippocampus"]
    assert mean == pytest.approx(np.mean([float(rows[c]["dice posterior hippocampus"])
                                          for c in "ab"]), abs=1e-6)
    assert mean > 0.5
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary


def test_images_and_masks_folder_pairs_isic_style_names(tmp_path):
    root = tmp_path / "photos"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for image in ISIC:
        shutil.copy(image, root / "images")
        shutil.copy(image.with_name(image.stem + "_segmentation.png"), root / "masks")
    result = CliRunner().invoke(main, ["evaluate", "isic-lesion-v3", "--data", str(root),
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["coded"] == len(ISIC) and summary["mean"]["dice lesion"] > 0.7
    assert 0 < summary["mean"]["bpp"] < 0.05


def test_a_folder_without_a_data_set_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "isic-lesion-v3", "--data", str(tmp_path),
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and "no data set here" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_command_fails_when_a_case_was_not_coded(msd, tmp_path):
    """Like a batch: the scores of the cases that coded are written, and the exit status says
    that not every case is in them."""
    result = CliRunner().invoke(main, ["evaluate", "hippocampus-v3", "--data", str(msd),
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and "on 2 of 3 cases" in result.output
    assert "1 case(s) not coded" in result.output
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["coded"] == 2
