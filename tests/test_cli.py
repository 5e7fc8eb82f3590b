"""The command line end to end on fixtures: outputs, defaults, errors without tracebacks."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from PIL import Image

import segcodec
from segcodec.cli.main import main

from conftest import HIPPO, ISIC


def run(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert (result.exit_code == 0) == ok, result.output
    return result


def test_encode_then_segment_nifti_defaults_beside_input(tmp_path):
    src = tmp_path / "in.nii.gz"
    shutil.copy(HIPPO[0], src)
    run("encode", src, tmp_path / "out.sgc")
    run("segment", tmp_path / "out.sgc")
    out = tmp_path / "out.labels.nii.gz"
    labels, image = nib.load(out), nib.load(src)
    assert labels.shape == image.shape
    np.testing.assert_allclose(labels.affine, image.affine, atol=1e-5)
    assert set(np.unique(np.asarray(labels.dataobj))) <= {0, 1, 2}


def test_labels_of_a_volume_coded_without_geometry_say_their_orientation_is_unknown(tmp_path):
    """format_spec §2.2: no geometry section, so the label map claims no orientation (NIfTI
    codes 0) rather than a made-up one; its voxels are the input's."""
    src = tmp_path / "in.nii.gz"
    shutil.copy(HIPPO[0], src)
    run("encode", "--no-geometry", src)
    run("segment", tmp_path / "in.sgc")
    labels = nib.load(tmp_path / "in.labels.nii.gz")
    assert int(labels.header["sform_code"]) == int(labels.header["qform_code"]) == 0
    assert labels.shape == nib.load(src).shape


def test_encode_png_and_segment_to_png_of_the_same_size(tmp_path):
    src = tmp_path / "lesion.jpg"
    shutil.copy(ISIC[0], src)
    run("encode", src)  # -> lesion.sgc beside it
    assert (tmp_path / "lesion.sgc").exists()
    run("segment", tmp_path / "lesion.sgc", "-o", tmp_path / "mask.png")
    # The pixels hold the label values the sidecar names (they were 0/255, where the sidecar
    # says lesion = 1), and the palette shows them in the sidecar's colours.
    with Image.open(tmp_path / "mask.png") as png:
        mask, palette = np.asarray(png), png.getpalette()
    sidecar = json.loads((tmp_path / "mask.json").read_text())
    lesion = next(label for label in sidecar["labels"] if label["name"] == "lesion")
    assert mask.shape == (256, 256) and set(np.unique(mask)) == {0, lesion["value"]}
    assert palette[3 * lesion["value"]:3 * lesion["value"] + 3] == lesion["colour"]
    np.testing.assert_array_equal(mask, segcodec.segment(tmp_path / "lesion.sgc"))
    run("segment", tmp_path / "lesion.sgc")
    assert (tmp_path / "lesion.labels.png").exists()


def test_npy_and_no_geometry(tmp_path):
    vol = np.asarray(nib.load(HIPPO[0]).dataobj)
    np.save(tmp_path / "vol.npy", vol)
    run("encode", "--no-geometry", tmp_path / "vol.npy", tmp_path / "vol.sgc")
    info = json.loads(run("info", "--json", tmp_path / "vol.sgc").output)
    assert info["affine"] is None and info["source"] == "array"
    run("segment", tmp_path / "vol.sgc")
    assert np.load(tmp_path / "vol.labels.npy").shape == vol.shape


def test_several_inputs_go_to_an_existing_folder_with_a_summary(tmp_path):
    for p in ISIC:
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "sgc").mkdir()
    (tmp_path / "labels").mkdir()
    result = run("encode", *[tmp_path / p.name for p in ISIC], tmp_path / "sgc")
    assert sorted(p.name for p in (tmp_path / "sgc").iterdir()) == \
        sorted(p.stem + ".sgc" for p in ISIC)
    assert f"{len(ISIC)} written, 0 failed" in result.output
    run("segment", tmp_path / "sgc", "-o", tmp_path / "labels")
    assert len(list((tmp_path / "labels").glob("*.labels.png"))) == len(ISIC)


def test_info_and_models(tmp_path):
    shutil.copy(ISIC[0], tmp_path / "a.jpg")
    run("encode", tmp_path / "a.jpg", tmp_path / "a.sgc")
    text = run("info", tmp_path / "a.sgc").output
    assert "256x256" in text and "22 header" in text
    d = json.loads(run("info", "--json", tmp_path / "a.sgc").output)
    assert d["header_bytes"] == 22 and d["file_bytes"] == (tmp_path / "a.sgc").stat().st_size
    # the public function the command prints: from the path or the bytes alike
    data = (tmp_path / "a.sgc").read_bytes()
    assert segcodec.info(tmp_path / "a.sgc") == segcodec.info(data) == d
    assert d["bpp"] == round(len(data) * 8 / (256 * 256), 6) and d["labels"][1] == "lesion"
    models = json.loads(run("models", "--json").output)
    assert d["model_id"] in {m["id"] for m in models}
    assert {m["ndim"] for m in models} == {2, 3}


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "x.sgc").write_bytes(b"SG\x01"), "truncated"),
    (lambda d: (d / "x.sgc").write_bytes(b"not a segcodec file at all"), "magic"),
    (lambda d: None, "x.sgc: no such file or folder"),
])
def test_bad_sgc_gives_one_line_and_no_output(tmp_path, make, message):
    make(tmp_path)
    before = set(tmp_path.iterdir())
    for command in ("segment", "info"):  # each names the file, in the same words
        result = run(command, tmp_path / "x.sgc", ok=False)
        assert message in result.output and result.output.count("\n") == 1
        assert f"{tmp_path / 'x.sgc'}: " in result.output
    assert set(tmp_path.iterdir()) == before


def test_corrupted_sgc_leaves_no_labels(tmp_path):
    shutil.copy(ISIC[0], tmp_path / "a.jpg")
    run("encode", tmp_path / "a.jpg", tmp_path / "a.sgc")
    data = bytearray((tmp_path / "a.sgc").read_bytes())
    data[25] ^= 0xFF
    (tmp_path / "a.sgc").write_bytes(bytes(data))
    result = run("segment", tmp_path / "a.sgc", ok=False)
    assert "CRC" in result.output
    assert not list(tmp_path.glob("*labels*"))


@pytest.mark.parametrize("name, content, message", [
    ("bad.png", b"\x89PNG not really", "cannot read image"),
    ("bad.nii.gz", b"garbage", "cannot read NIfTI"),
    ("bad.npy", b"garbage", "cannot read .npy"),
    ("bad.txt", b"hello", "unsupported input"),
])
def test_bad_inputs_give_one_line_and_no_sgc(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    result = run("encode", tmp_path / name, tmp_path / "out.sgc", ok=False)
    assert message in result.output and result.output.count("\n") == 1
    assert not (tmp_path / "out.sgc").exists()


def test_nan_volume_and_unknown_model(tmp_path):
    np.save(tmp_path / "nan.npy", np.full((8, 8, 8), np.nan, np.float32))
    assert "NaN" in run("encode", tmp_path / "nan.npy", ok=False).output
    shutil.copy(ISIC[0], tmp_path / "a.jpg")
    assert "unknown model 'zzz'" in run("encode", "--model", "zzz", tmp_path / "a.jpg",
                                        ok=False).output
    assert not list(tmp_path.glob("*.sgc"))


def test_real_process_prints_no_traceback(tmp_path):
    (tmp_path / "x.sgc").write_bytes(b"SGxxxxxxxxxxxxxxxxxxxxxxxxxx")
    env = {k: v for k, v in os.environ.items()}
    proc = subprocess.run([sys.executable, "-m", "segcodec.cli.main", "segment",
                           str(tmp_path / "x.sgc")], capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("segcodec: error:") and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    from segcodec import io as sgio

    def explode(tmp):
        Path(tmp).write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sgio.atomic_write(tmp_path / "out.sgc", explode)
    assert list(tmp_path.iterdir()) == []


# Destinations, as cp and gzip decide them (issue 11)

def test_existing_folder_after_several_inputs_is_the_destination(tmp_path):
    names = []
    for p in ISIC:
        shutil.copy(p, tmp_path / p.name)
        names.append(tmp_path / p.name)
    shutil.copy(HIPPO[0], tmp_path / "d.nii.gz")
    (tmp_path / "out").mkdir()
    result = run("encode", *names, tmp_path / "d.nii.gz", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        sorted([p.stem + ".sgc" for p in ISIC] + ["d.sgc"])
    assert "4 written, 0 failed" in result.output
    assert not list(tmp_path.glob("*.sgc"))


def test_a_typo_for_an_input_is_no_folder_to_create(tmp_path):
    shutil.copy(ISIC[0], tmp_path / "x.jpg")
    result = run("encode", tmp_path / "x.jpg", tmp_path / "cofee.jpg", ok=False)
    assert "cofee.jpg: no such file" in result.output and "1 failed" in result.output
    assert not (tmp_path / "cofee.jpg").exists()


def test_a_folder_coded_again_after_segmenting_skips_its_label_maps(tmp_path):
    """Resuming a folder batch must not code segcodec's own outputs as images: a label map
    coded as an MRI would come back as labels of labels, silently."""
    shutil.copy(HIPPO[0], tmp_path / "h.nii.gz")
    shutil.copy(ISIC[0], tmp_path / "i.jpg")
    run("encode", tmp_path)
    run("segment", tmp_path)
    assert {p.name for p in tmp_path.glob("*.labels.*")} >= {"h.labels.nii.gz", "i.labels.png"}
    result = run("encode", tmp_path, "--skip-existing")
    assert "0 written, 2 skipped, 0 failed" in result.output
    assert not list(tmp_path.glob("*.labels.sgc"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.labels.png").write_bytes(b"")  # not an image: still a destination
    run("encode", tmp_path / "i.jpg", tmp_path / "out")
    assert (tmp_path / "out" / "i.sgc").exists()


def test_several_inputs_need_an_existing_folder(tmp_path):
    shutil.copy(ISIC[0], tmp_path / "a.jpg")
    shutil.copy(ISIC[1], tmp_path / "b.jpg")
    run("encode", tmp_path / "a.jpg", tmp_path / "b.jpg")
    result = run("segment", tmp_path / "a.sgc", tmp_path / "b.sgc", "-o", tmp_path / "mask.png",
                 ok=False)
    assert "2 inputs need an existing folder" in result.output
    assert not (tmp_path / "mask.png").exists() and result.output.count("\n") == 1


def test_an_input_is_never_overwritten_and_outputs_need_force(tmp_path):
    np.save(tmp_path / "ok.npy", np.asarray(Image.open(ISIC[0]).convert("RGB")))
    before = (tmp_path / "ok.npy").read_bytes()
    result = run("encode", tmp_path / "ok.npy", "-o", tmp_path / "ok.npy", ok=False)
    assert "is an input" in result.output and "Traceback" not in result.output
    assert (tmp_path / "ok.npy").read_bytes() == before
    run("encode", tmp_path / "ok.npy")
    result = run("encode", tmp_path / "ok.npy", ok=False)
    assert "exists; --force replaces it" in result.output
    assert "ok.sgc: exists; skipped" in run("encode", tmp_path / "ok.npy", "--skip-existing").output
    run("encode", tmp_path / "ok.npy", "--force")
    (tmp_path / "y.npy").write_bytes(b"keep me")
    result = run("segment", tmp_path / "ok.sgc", "-o", tmp_path / "y.npy", ok=False)
    assert (tmp_path / "y.npy").read_bytes() == b"keep me"
    run("segment", tmp_path / "ok.sgc", "-o", tmp_path / "y.npy", "--force")
    assert np.load(tmp_path / "y.npy").shape == (256, 256)


def test_a_batch_carries_on_past_a_bad_file(tmp_path):
    shutil.copy(ISIC[0], tmp_path / "good.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "out").mkdir()
    result = run("encode", tmp_path / "bad.jpg", tmp_path / "good.jpg", tmp_path / "out",
                 ok=False)
    assert "1 written, 1 failed" in result.output and "bad.jpg" in result.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.sgc"]


def test_output_kind_is_checked_before_the_networks_run(tmp_path, monkeypatch):
    shutil.copy(ISIC[0], tmp_path / "a.jpg")
    run("encode", tmp_path / "a.jpg")

    def never(*args, **kwargs):
        raise AssertionError("g and s ran")

    monkeypatch.setattr("segcodec.api.labels_from_latents", never)
    result = run("segment", tmp_path / "a.sgc", "-o", tmp_path / "a.txt", ok=False)
    assert "a.txt: labels can be written as" in result.output


def test_an_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("segment", tmp_path / "empty", ok=False)
    assert "no .sgc files" in result.output


def test_help_version_info_and_models_do_not_import_torch(tmp_path):
    shutil.copy(ISIC[0], tmp_path / "a.jpg")
    run("encode", tmp_path / "a.jpg")
    code = ("import sys; from click.testing import CliRunner; from segcodec.cli.main import main; "
            "r = [CliRunner().invoke(main, a) for a in (['--help'], ['--version'], "
            f"['info', {str(tmp_path / 'a.sgc')!r}], ['models'])]; "
            "assert all(x.exit_code == 0 for x in r), [x.output for x in r]; "
            "assert 'isic-lesion' in r[2].output and '(default)' in r[3].output, r; "
            "print(sorted(m for m in ('torch', 'numba') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_nifti_encode_leaves_pydicom_unimported_and_dicom_still_reads(tmp_path):
    """nibabel's import of pydicom is a third of a volume's encode start-up: the command line
    skips it, and a DICOM series read afterwards in the same process still finds pydicom.  A
    library user's nibabel keeps its DICOM extension."""
    from pydicom.data import get_testdata_file
    dicom = get_testdata_file("CT_small.dcm")
    code = ("import sys; from click.testing import CliRunner; from segcodec.cli.main import main; "
            f"r = CliRunner().invoke(main, ['encode', {str(HIPPO[0])!r}, "
            f"{str(tmp_path / 'h.sgc')!r}]); assert r.exit_code == 0, r.output; "
            "print('pydicom' in sys.modules); import pydicom; "
            f"print(pydicom.dcmread({dicom!r}).Modality)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "CT"]
    assert (tmp_path / "h.sgc").read_bytes() == segcodec.encode(HIPPO[0])
    library = (f"import segcodec; segcodec.encode_file({str(HIPPO[0])!r}, "
               f"{str(tmp_path / 'l.sgc')!r}); import nibabel.nifti1 as n; print(n.have_dicom)")
    proc = subprocess.run([sys.executable, "-c", library], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.split() == ["True"], proc.stderr


def test_labels_come_with_a_sidecar_and_info_names_them(tmp_path):
    shutil.copy(HIPPO[0], tmp_path / "h.nii.gz")
    run("encode", tmp_path / "h.nii.gz")
    run("segment", tmp_path / "h.sgc")
    sidecar = json.loads((tmp_path / "h.labels.json").read_text())
    names = [entry["name"] for entry in sidecar["labels"]]
    assert names == ["background", "anterior hippocampus", "posterior hippocampus"]
    assert [entry["value"] for entry in sidecar["labels"]] == [0, 1, 2]
    info = run("info", tmp_path / "h.sgc").output
    assert "1 anterior hippocampus" in info
    assert "geometry    RAS, voxel size 1 x 1 x 1 mm, origin (" in info


@pytest.mark.parametrize("fixture", [ISIC[0], HIPPO[0]])
def test_overlay_is_a_picture_of_labels_over_the_source(tmp_path, fixture):
    src = tmp_path / fixture.name
    shutil.copy(fixture, src)
    run("encode", src, tmp_path / "x.sgc")
    result = run("segment", tmp_path / "x.sgc", "--overlay", tmp_path / "look.png", ok=False)
    assert "needs the original image (--source)" in result.output
    run("segment", tmp_path / "x.sgc", "--overlay", tmp_path / "look.png", "--source", src,
        "--force")
    picture = np.asarray(Image.open(tmp_path / "look.png"))
    assert picture.ndim == 3 and picture.shape[2] == 3 and min(picture.shape[:2]) >= 64
    # the label colours are in it: some pixels are tinted away from grey
    assert (np.ptp(picture.astype(int), axis=2) > 30).mean() > 0.005


def test_a_study_folder_gives_one_sgc_per_series_named_by_series_number(tmp_path):
    from test_io import write_series
    volume = np.asarray(nib.load(HIPPO[0]).dataobj).astype(np.uint16)
    study = tmp_path / "study"
    # folder names as scanners export them; two series share a number, one has none
    for folder, number in [("1.2.840.5.1", 3), ("1.2.840.5.2", 7), ("t1_repeat", 7),
                           ("localizer", None)]:
        (study / folder).mkdir(parents=True)
        write_series(study / folder, volume, spacing=(1, 1, 1), series_number=number)
        if number is None:
            for f in (study / folder).iterdir():
                ds = pydicom.dcmread(f)
                del ds.SeriesNumber
                ds.save_as(f)
    result = run("encode", study)
    assert "4 written, 0 failed" in result.output
    assert sorted(p.name for p in study.glob("*.sgc")) == \
        ["1.2.840.5.2.sgc", "localizer.sgc", "series3.sgc", "t1_repeat.sgc"]
    # a series of the study named on its own is named as in the study
    (study / "series3.sgc").unlink()
    run("encode", study / "1.2.840.5.1")
    assert (study / "series3.sgc").exists()


def test_overlay_never_replaces_the_source_or_the_labels(tmp_path):
    shutil.copy(ISIC[0], tmp_path / "a.jpg")
    run("encode", tmp_path / "a.jpg")
    before = (tmp_path / "a.jpg").read_bytes()
    result = run("segment", tmp_path / "a.sgc", "--source", tmp_path / "a.jpg",
                 "--overlay", tmp_path / "a.jpg", "--force", ok=False)
    assert "is the input" in result.output and (tmp_path / "a.jpg").read_bytes() == before
    result = run("segment", tmp_path / "a.sgc", "--source", tmp_path / "a.jpg", ok=False)
    assert "give one of them" in result.output


@pytest.mark.parametrize("device", ["tpu", "cuda:99"])
def test_an_unusable_device_is_a_one_line_error_and_writes_nothing(tmp_path, device):
    shutil.copy(ISIC[0], tmp_path / "a.jpg")
    run("encode", tmp_path / "a.jpg", tmp_path / "a.sgc")
    result = run("segment", tmp_path / "a.sgc", "--device", device, ok=False)
    assert "device" in result.output and "Traceback" not in result.output
    assert not list(tmp_path.glob("a.labels.*"))
    result = run("serve", "--device", device, ok=False)
    assert "device" in result.output and len(result.output.strip().splitlines()) == 1


def test_several_studies_share_a_destination_folder(tmp_path):
    from test_io import write_series
    volume = np.asarray(nib.load(HIPPO[0]).dataobj).astype(np.uint16)
    for study in ("a", "b"):  # both have a series 3
        (tmp_path / study / "1.2.3").mkdir(parents=True)
        write_series(tmp_path / study / "1.2.3", volume, spacing=(1, 1, 1), series_number=3)
    (tmp_path / "out").mkdir()
    result = run("encode", tmp_path / "a", tmp_path / "b", tmp_path / "out")
    assert "2 written, 0 failed" in result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        ["a_series3.sgc", "b_series3.sgc"]


def test_a_dicomdir_beside_the_slices_is_not_a_second_series(tmp_path):
    from pydicom.data import get_testdata_file

    from test_io import write_series
    folder = tmp_path / "series"
    folder.mkdir()
    write_series(folder, np.asarray(nib.load(HIPPO[0]).dataobj).astype(np.uint16),
                 spacing=(1, 1, 1))
    shutil.copy(get_testdata_file("DICOMDIR"), folder / "DICOMDIR")
    run("encode", folder, tmp_path / "s.sgc")
    alone = run("encode", folder / "DICOMDIR", tmp_path / "d.sgc", ok=False)
    assert "is a DICOMDIR (the index of a DICOM medium), not an image" in alone.output
    assert not (tmp_path / "d.sgc").exists()


def test_hidden_files_in_a_folder_are_not_inputs(tmp_path):
    """macOS leaves ._NAME beside each file copied to another file system."""
    (tmp_path / "in").mkdir()
    shutil.copy(ISIC[0], tmp_path / "in" / "a.jpg")
    (tmp_path / "in" / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "out").mkdir()
    result = run("encode", tmp_path / "in", tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.sgc"]
    (tmp_path / "out" / "._a.sgc").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    result = run("segment", tmp_path / "out", "-q")
    assert result.output == "" and (tmp_path / "out" / "a.labels.png").exists()


def test_a_folder_of_sgc_files_given_to_encode_says_so(tmp_path):
    shutil.copy(ISIC[0], tmp_path / "a.jpg")
    run("encode", tmp_path / "a.jpg", tmp_path / "sgc" / "a.sgc", ok=False)
    (tmp_path / "sgc").mkdir()
    run("encode", tmp_path / "a.jpg", tmp_path / "sgc" / "a.sgc")
    result = run("encode", tmp_path / "sgc", ok=False)
    assert "holds .sgc files, not images: `segcodec segment" in result.output


def test_quiet_prints_nothing_for_a_batch_that_succeeds(tmp_path):
    for i in (0, 1):
        shutil.copy(ISIC[i], tmp_path / f"{i}.jpg")
    result = run("encode", tmp_path / "0.jpg", tmp_path / "1.jpg", "-q")
    assert result.output == ""
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    result = run("encode", tmp_path / "bad.jpg", tmp_path / "0.jpg", "-q", "--force", ok=False)
    assert "1 written, 1 failed" in result.output


def test_a_last_folder_that_holds_images_is_said_to_be_an_input(tmp_path):
    """`encode DIR OUT/` reads as cp; where OUT/ holds images it is coded as one more input
    (as gzip would), and now the user is told so, with the option that makes it the
    destination."""
    for folder, i in (("in", 0), ("out", 1)):
        (tmp_path / folder).mkdir()
        shutil.copy(ISIC[i], tmp_path / folder / f"{i}.jpg")
    result = run("encode", tmp_path / "in", tmp_path / "out")
    assert f"note: {tmp_path / 'out'} holds images, so it is one more input" in result.output
    assert f"name it with -o alone: -o {tmp_path / 'out'})" in result.output
    assert (tmp_path / "in" / "0.sgc").exists() and (tmp_path / "out" / "1.sgc").exists()
    run("encode", tmp_path / "in", "-o", tmp_path / "out", "--force")
    assert (tmp_path / "out" / "0.sgc").exists()
    assert "note" not in run("encode", tmp_path / "in", tmp_path / "out", "-q",
                             "--force").output


def test_a_study_folder_with_its_dicomdir_gives_its_series(tmp_path):
    """A DICOM medium: DICOMDIR at the top, one folder per series below it."""
    from pydicom.data import get_testdata_file

    from test_io import write_series
    study = tmp_path / "study"
    for number in (3, 4):
        (study / f"s{number}").mkdir(parents=True)
        write_series(study / f"s{number}", np.asarray(nib.load(HIPPO[0]).dataobj
                                                     ).astype(np.uint16),
                     spacing=(1, 1, 1), series_number=number)
    shutil.copy(get_testdata_file("DICOMDIR"), study / "DICOMDIR")
    run("encode", study)
    assert sorted(p.name for p in study.glob("*.sgc")) == ["series3.sgc", "series4.sgc"]


def test_segment_leaves_an_existing_sidecar_unless_forced(tmp_path):
    """The NAME.json sidecar replaced a file of that name without a word."""
    shutil.copy(ISIC[0], tmp_path / "a.jpg")
    run("encode", tmp_path / "a.jpg")
    (tmp_path / "mask.json").write_text('{"mine": true}')
    result = run("segment", tmp_path / "a.sgc", "-o", tmp_path / "mask.png", ok=False)
    assert f"{tmp_path / 'mask.json'}: exists; --force replaces it" in result.output
    assert not (tmp_path / "mask.png").exists()
    assert (tmp_path / "mask.json").read_text() == '{"mine": true}'
    run("segment", tmp_path / "a.sgc", "-o", tmp_path / "mask.png", "--force")
    assert json.loads((tmp_path / "mask.json").read_text())["model"]
