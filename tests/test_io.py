"""Readers and writers: NIfTI geometry, DICOM files and series, raster modes, no PHI."""
import copy

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import segcodec
from segcodec import io as sgio
from segcodec.errors import InputError

from conftest import HIPPO, ISIC


def write_series(folder, volume, spacing=(0.9, 0.8, 1.5), origin=(10.0, -20.0, 30.0),
                 shuffle=True, series_number=None, rescale=(1, 0)):
    """A DICOM series of ``volume`` (column, row, slice) with axial orientation: voxel
    (i, j, k) at LPS ``origin`` + ``spacing`` * (i, j, k)."""
    template = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    template.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    template.PatientName, template.PatientID = "Doe^Jane", "PHI-12345"
    template.SeriesInstanceUID = generate_uid()
    if series_number is not None:
        template.SeriesNumber = series_number
    order = np.random.default_rng(0).permutation(volume.shape[2]) if shuffle \
        else np.arange(volume.shape[2])
    for n, k in enumerate(order):
        ds = copy.deepcopy(template)
        pixels = np.ascontiguousarray(volume[:, :, k].T.astype(np.uint16))
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = pixels.tobytes()
        ds.PixelSpacing = [spacing[1], spacing[0]]  # between rows, between columns
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[2]]
        ds.InstanceNumber = int(n + 1)
        ds.SOPInstanceUID = generate_uid()
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.save_as(folder / f"slice{n:03d}.dcm", enforce_file_format=True)


def write_lps_series(folder, nifti=HIPPO[0]):
    """A NIfTI volume as a scanner stores it (columns towards the patient's left, rows towards
    posterior, axial slices at their LPS positions), written as a shuffled DICOM series."""
    img = nib.load(nifti)
    lps = img.as_reoriented(np.array([[0, -1], [1, -1], [2, 1]], dtype=float))
    folder.mkdir(exist_ok=True)
    write_series(folder, np.asarray(lps.dataobj).astype(np.uint16), spacing=(1, 1, 1),
                 origin=tuple(np.diag([-1.0, -1.0, 1.0]) @ lps.affine[:3, 3]))
    return folder


@pytest.fixture
def series(tmp_path):
    volume = np.asarray(nib.load(HIPPO[0]).dataobj).astype(np.uint16)
    folder = tmp_path / "series"
    folder.mkdir()
    write_series(folder, volume)
    return folder, volume


def test_dicom_series_reads_in_slice_order_with_ras_geometry(series):
    folder, volume = series
    loaded = sgio.read(folder)
    np.testing.assert_array_equal(loaded.array, volume)
    # Voxel (i, j, k) sits at LPS origin + (0.9 i, 0.8 j, 1.5 k); RAS flips x and y.
    i, j, k = 3, 5, 7
    world = loaded.affine @ [i, j, k, 1]
    np.testing.assert_allclose(world[:3], [-(10 + 0.9 * i), -(-20 + 0.8 * j), 30 + 1.5 * k])


def test_no_patient_attribute_reaches_the_sgc(series, tmp_path):
    folder, _ = series
    out = segcodec.encode_file(folder, tmp_path / "s.sgc")
    data = out.read_bytes()
    for secret in (b"Doe", b"Jane", b"PHI-12345", b"MR1"):
        assert secret not in data
    header = segcodec.read_header(data)
    assert header.metadata is None and header.source == "dicom"
    labels = segcodec.segment_file(out)
    assert labels.name == "s.labels.nii.gz"
    assert nib.load(labels).shape == header.shape


def test_single_dicom_file_is_a_2d_image(tmp_path):
    loaded = sgio.read(get_testdata_file("CT_small.dcm"))
    assert loaded.kind == "2d" and loaded.array.shape == (128, 128)
    assert loaded.affine is not None and loaded.source == "dicom"
    # Hounsfield units are no photograph: the dermoscopy model refuses them, rather than
    # code a saturated image into a confident "lesion".
    with pytest.raises(InputError, match="isic-lesion.*-896..1167"):
        segcodec.encode(loaded.array, kind="2d", affine=loaded.affine, source="dicom")


def test_a_photograph_stored_in_12_of_16_bits_is_read_at_its_stated_depth(tmp_path):
    rgb = np.asarray(Image.open(ISIC[0]).convert("RGB"))[:64, :80]
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for key in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        if key in ds:
            delattr(ds, key)
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (rgb.astype(np.uint32) * 4095 // 255).astype(np.uint16).tobytes()  # 4095: white
    ds.save_as(tmp_path / "photo.dcm", enforce_file_format=True)
    loaded = sgio.read(tmp_path / "photo.dcm")
    assert loaded.array.dtype == np.uint16 and loaded.array.shape == rgb.shape
    # On the photograph rules' scale (uint16: 65535 is white) it is the 8-bit image.
    np.testing.assert_allclose(loaded.array / 65535, rgb / 255, atol=1.5 / 255)


def test_dicom_declaring_too_many_pixels_is_refused_before_decoding(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    write_series(folder, np.zeros((4, 4, 3), np.uint16), shuffle=False)
    for p in sorted(folder.iterdir()):  # three small files that claim 5000x5000 each
        ds = pydicom.dcmread(p)
        ds.Rows = ds.Columns = 5000
        ds.save_as(p)
    with pytest.raises(InputError, match="declares 75000000 pixels"):
        sgio.read(folder)
    ds = pydicom.dcmread(sorted(folder.iterdir())[0])
    ds.Rows = ds.Columns = 9000
    ds.save_as(tmp_path / "one.dcm")
    with pytest.raises(InputError, match="declares 81000000 pixels"):
        sgio.read(tmp_path / "one.dcm")


def test_folder_with_two_series_is_refused(series, tmp_path):
    folder, volume = series
    write_series(folder, volume[:, :, :3], shuffle=False)
    with pytest.raises(InputError, match="2 DICOM series"):
        sgio.read(folder)


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(InputError, match="no images or DICOM files"):
        sgio.read(tmp_path)


def test_nifti_labels_keep_the_affine(tmp_path):
    affine = np.array([[0, -1.2, 0, 5], [0.8, 0, 0, -3], [0, 0, 2.5, 7], [0, 0, 0, 1]])
    sgio.write_labels(tmp_path / "l.nii.gz", np.ones((4, 5, 6), np.uint8), affine, 3)
    img = nib.load(tmp_path / "l.nii.gz")
    np.testing.assert_allclose(img.affine, affine, atol=1e-6)
    assert img.get_data_dtype() == np.uint8


def test_4d_nifti_needs_a_volume_and_singleton_4d_is_3d(tmp_path):
    series = np.arange(4 * 4 * 4 * 2, dtype=np.float32).reshape(4, 4, 4, 2)
    nib.save(nib.Nifti1Image(series, np.eye(4)), tmp_path / "a.nii")
    with pytest.raises(InputError, match="4D NIfTI of 2 volumes; pick one with --volume N"):
        sgio.read(tmp_path / "a.nii")
    np.testing.assert_array_equal(sgio.read(tmp_path / "a.nii", volume=1).array, series[..., 1])
    with pytest.raises(InputError, match="out of range 0..1"):
        sgio.read(tmp_path / "a.nii", volume=2)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 1), np.float32), np.eye(4)), tmp_path / "b.nii")
    assert sgio.read(tmp_path / "b.nii").array.shape == (4, 4, 4)
    with pytest.raises(InputError, match="--volume applies to 4D"):
        sgio.read(tmp_path / "b.nii", volume=0)
    nib.save(nib.Nifti1Image(series[..., None], np.eye(4)), tmp_path / "c.nii")  # (X,Y,Z,T,1)
    np.testing.assert_array_equal(sgio.read(tmp_path / "c.nii", volume=1).array, series[..., 1])


def test_2d_nifti_is_a_2d_image(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((20, 30), np.float32), np.eye(4)), tmp_path / "a.nii")
    loaded = sgio.read(tmp_path / "a.nii")
    assert loaded.kind == "2d" and loaded.array.shape == (20, 30)


def test_declared_size_is_refused_before_any_voxel_is_read(tmp_path):
    import gzip
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape((1024, 1024, 1024))
    header.set_sform(np.eye(4), code=1)
    # 1 GiB of voxels declared, 1 KiB present: a reader that inflates first would choke.
    (tmp_path / "bomb.nii.gz").write_bytes(gzip.compress(header.binaryblock + b"\0" * 4
                                                         + bytes(1024)))
    with pytest.raises(InputError, match="declares 1073741824 voxels"):
        sgio.read(tmp_path / "bomb.nii.gz")


@pytest.mark.parametrize("mode, channels", [("RGBA", 3), ("P", 3), ("LA", None), ("I;16", None),
                                            ("1", None)])
def test_raster_modes(tmp_path, mode, channels):
    Image.new(mode, (20, 10)).save(tmp_path / "x.png")
    array = sgio.read(tmp_path / "x.png").array
    assert array.shape == ((10, 20, channels) if channels else (10, 20))


def test_png_labels_refuse_3d_and_jpeg_labels_are_refused(tmp_path):
    with pytest.raises(InputError, match="PNG holds 2D"):
        sgio.write_labels(tmp_path / "x.png", np.zeros((2, 2, 2), np.uint8), None, 2)
    with pytest.raises(InputError, match="not .jpg"):
        sgio.write_labels(tmp_path / "x.jpg", np.zeros((2, 2), np.uint8), None, 2)
    assert not list(tmp_path.iterdir())


def test_duplicate_slices_are_one_line_errors(series):
    folder, _ = series
    first = sorted(folder.iterdir())[0]
    (folder / "copy.dcm").write_bytes(first.read_bytes())
    with pytest.raises(InputError, match="share the position .* duplicate"):
        sgio.read(folder)


def test_a_missing_slice_is_an_error_not_a_uniform_spacing(series):
    folder, _ = series
    files = sorted(folder.iterdir(),
                   key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    files[5].unlink()
    with pytest.raises(InputError, match="not evenly spaced .* missing"):
        sgio.read(folder)


@pytest.mark.parametrize("tag, value", [("ImageOrientationPatient", [0, 1, 0, 0, 0, -1]),
                                        ("PixelSpacing", [0.8, 0.5])])
def test_a_slice_of_another_orientation_or_spacing_is_refused(series, tag, value):
    """One series UID may hold a localiser or a reformat: stacked in, it would make a volume
    whose geometry is made up."""
    folder, _ = series
    odd = sorted(folder.iterdir())[3]
    ds = pydicom.dcmread(odd)
    setattr(ds, tag, value)
    ds.save_as(odd)
    with pytest.raises(InputError, match=f"{odd.name} is oriented or spaced unlike"):
        sgio.read(folder)


def test_single_slice_has_its_slice_thickness_as_third_voxel_size():
    loaded = sgio.read(get_testdata_file("CT_small.dcm"))
    np.testing.assert_allclose(np.linalg.norm(loaded.affine[:3, 2]), 5.0)


def test_palette_images_are_looked_up_not_coded_as_indices():
    loaded = sgio.read(get_testdata_file("examples_palette.dcm"))
    assert loaded.array.ndim == 3 and loaded.array.shape[-1] == 3


def test_non_image_objects_are_refused_by_name(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    ds.save_as(tmp_path / "seg.dcm", enforce_file_format=True)
    with pytest.raises(InputError, match="DICOM Segmentation"):
        sgio.read(tmp_path / "seg.dcm")


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (200, 150, 120))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(tmp_path / "r.jpg", exif=exif)
    assert sgio.read(tmp_path / "r.jpg").array.shape == (40, 20, 3)


def test_a_planted_link_cannot_redirect_a_write(tmp_path):
    import os
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out = tmp_path / "out" / "x.sgc"
    out.parent.mkdir()
    for name in (f".{os.getpid()}.tmp.x.sgc", ".x.sgc.tmp", "x.sgc.tmp"):  # guessable names
        (out.parent / name).symlink_to(victim)
    sgio.write_bytes(out, b"new")
    assert victim.read_bytes() == b"precious" and out.read_bytes() == b"new"
    assert not out.is_symlink() and (out.stat().st_mode & 0o777) != 0o600


def test_sigterm_under_the_cli_leaves_no_temporary_file(tmp_path):
    import signal
    import subprocess
    import sys
    code = ("import sys, time; from pathlib import Path; "
            "from segcodec.cli.main import _exit_on_sigterm; from segcodec.io import atomic_write; "
            "_exit_on_sigterm(); "
            f"atomic_write(Path({str(tmp_path / 'out.nii.gz')!r}), lambda tmp: "
            "(Path(tmp).write_bytes(b'partial'), print('ready', flush=True), time.sleep(60)))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writers_temporaries_are_removed_and_nothing_else(tmp_path):
    """What a process killed mid-write (a lost cluster worker) leaves, ``remove_temporaries``
    deletes; others' hidden files and the temporaries of other names stay."""
    import subprocess
    import sys
    for name in ("x.sgc", "x.labels.nii.gz", "x.labels.json", "noext"):
        code = ("import os; from pathlib import Path; from segcodec.io import atomic_write; "
                f"atomic_write(Path({str(tmp_path / name)!r}), lambda tmp: "
                "(Path(tmp).write_bytes(b'partial'), os._exit(1)))")
        assert subprocess.run([sys.executable, "-c", code]).returncode == 1
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 4 and all(n.startswith(".") for n in left)  # hidden, none in place
    kept = [".x.sgc", ".bashrc", ".y.sgc.abcdefgh.sgc", ".x.sgc.abcdefgh.png", "x.sgc.abcdefgh.sgc"]
    for name in kept:
        (tmp_path / name).write_bytes(b"keep")
    sgio.remove_temporaries(tmp_path / n for n in ("x.sgc", "x.labels.nii.gz",
                                                   "x.labels.json", "noext", "z.sgc"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_a_png_declaring_more_pixels_than_the_format_takes_is_refused_from_its_header(
        tmp_path):
    """Checked by segcodec, not by changing Pillow's global MAX_IMAGE_PIXELS."""
    import struct
    import subprocess
    import sys
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))
    # 9000 x 8000 grey: 72 million pixels, no pixel data at all
    header = struct.pack(">IIBBBBB", 9000, 8000, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    (tmp_path / "huge.png").write_bytes(png)
    with pytest.raises(InputError, match="declares 9000x8000 pixels, more than the format"):
        sgio.read(tmp_path / "huge.png")
    fresh = subprocess.run([sys.executable, "-c", "from PIL import Image; before = "
                            "Image.MAX_IMAGE_PIXELS; import segcodec.io.raster; "
                            "print(before == Image.MAX_IMAGE_PIXELS)"],
                           capture_output=True, text=True, check=True)
    assert fresh.stdout.strip() == "True"


def test_an_unreadable_dicom_file_gets_no_advice_meant_for_pydicoms_api():
    """pydicom suggests its own force=True, which a user would take for segcodec's --force."""
    with pytest.raises(InputError, match="not a readable DICOM file") as info:
        sgio.read(get_testdata_file("rtstruct.dcm"))
    assert "force" not in str(info.value)


def write_multiframe(path, volume, spacing=(0.9, 0.8, 1.5), origin=(10.0, -20.0, 30.0),
                     positions=True, rescale=None):
    """``volume`` (column, row, slice) as one enhanced multi-frame object, as write_series
    writes it as a series, its frames in shuffled order, placed by functional groups."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    template = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    template.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    order = np.random.default_rng(1).permutation(volume.shape[2])
    pixels = np.ascontiguousarray(volume.transpose(2, 1, 0)[order].astype(np.uint16))
    template.NumberOfFrames = len(order)
    template.Rows, template.Columns = pixels.shape[1:]
    template.BitsAllocated, template.BitsStored, template.HighBit = 16, 16, 15
    template.PixelRepresentation, template.SamplesPerPixel = 0, 1
    template.PixelData = pixels.tobytes()
    for key in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
        delattr(template, key)

    def item(**values):
        ds = Dataset()
        for key, value in values.items():
            setattr(ds, key, value)
        return ds

    template.SharedFunctionalGroupsSequence = Sequence([item(
        PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]),
        PixelMeasuresSequence=Sequence([item(PixelSpacing=[spacing[1], spacing[0]],
                                             SliceThickness=spacing[2])]))])
    for key in ("RescaleSlope", "RescaleIntercept"):
        if key in template:
            delattr(template, key)
    frames = [item() for _ in order]
    for frame, k in zip(frames, order):
        if positions:
            frame.PlanePositionSequence = Sequence([item(ImagePositionPatient=[
                origin[0], origin[1], origin[2] + k * spacing[2]])])
        if rescale is not None:  # as enhanced CT holds Hounsfield units: per frame
            values = dict(zip(("RescaleSlope", "RescaleIntercept"), rescale))
            frame.PixelValueTransformationSequence = Sequence([item(
                **{k: v for k, v in values.items() if v is not None})])
    template.PerFrameFunctionalGroupsSequence = Sequence(frames)
    template.save_as(path, enforce_file_format=True)
    return path


def test_a_multi_frame_dicom_reads_as_the_series_of_its_frames(series, tmp_path):
    """Enhanced CT and MR store a volume in one file; it was refused ("4 dimensions" for
    colour, "not supported; pass a series folder" for grey, where there is no folder)."""
    folder, volume = series
    one = write_multiframe(tmp_path / "enhanced.dcm", volume)
    stacked, framed = sgio.read(folder), sgio.read(one)
    np.testing.assert_array_equal(framed.array, stacked.array)
    np.testing.assert_array_equal(framed.affine, stacked.affine)
    assert framed.kind == "3d" and framed.source == "dicom"
    assert segcodec.encode(one) == segcodec.encode(folder)
    # Stored values rescaled per frame, as enhanced CT's Hounsfield units are
    rescaled = sgio.read(write_multiframe(tmp_path / "ct.dcm", volume, rescale=(2, -100)))
    slope_only = sgio.read(write_multiframe(tmp_path / "s.dcm", volume, rescale=(2, None)))
    np.testing.assert_array_equal(slope_only.array, volume * 2.0)  # no intercept: 0, not 1
    (tmp_path / "ct").mkdir()
    write_series(tmp_path / "ct", volume, rescale=(2, -100))
    np.testing.assert_array_equal(rescaled.array, sgio.read(tmp_path / "ct").array)
    np.testing.assert_array_equal(rescaled.array, volume * 2.0 - 100)
    # In a folder of its own, as a series of one file
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "enhanced.dcm").write_bytes(one.read_bytes())
    np.testing.assert_array_equal(sgio.read(tmp_path / "alone").array, framed.array)
    with pytest.raises(InputError, match="without each frame's position"):
        sgio.read(write_multiframe(tmp_path / "cine.dcm", volume, positions=False))
    with pytest.raises(InputError, match="multi-frame source is not made yet"):
        segcodec.segment_file(segcodec.encode_file(one, tmp_path / "x.sgc"),
                              tmp_path / "seg.dcm", source=one)


def test_a_multi_frame_colour_dicom_is_refused_as_such():
    with pytest.raises(InputError, match=r"multi-frame colour DICOM \(2 frames"):
        sgio.read(get_testdata_file("SC_rgb_rle_2frame.dcm"))


def test_a_folder_that_is_no_series_says_what_it_holds(tmp_path, series):
    """It said "no images or DICOM files" of a folder of JPEGs and of a study folder."""
    (tmp_path / "photos").mkdir()
    for p in ISIC[:2]:
        (tmp_path / "photos" / p.name).write_bytes(p.read_bytes())
    with pytest.raises(InputError, match="a folder of 2 image.s., not a DICOM series: give one "
                                         "image"):
        segcodec.encode(tmp_path / "photos")
    folder, _ = series
    study = tmp_path / "study"
    study.mkdir()
    folder.rename(study / "s1")
    with pytest.raises(InputError, match="a folder of 1 folder.s., not a DICOM series: give "
                                         "one series folder"):
        sgio.read(study)


@pytest.mark.parametrize("damage, message", [
    (lambda ds: setattr(ds, "PixelSpacing", [0.8]), "PixelSpacing must hold 2 numbers"),
    (lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0]),
     "ImageOrientationPatient must hold 6 numbers"),
    (lambda ds: setattr(ds, "ImagePositionPatient", [1, 2]),
     "ImagePositionPatient must hold 3 numbers"),
    (lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 1, 0, 0]), "places no pixel"),
    (lambda ds: setattr(ds, "PixelSpacing", [0, 0.8]), "places no pixel"),
])
def test_malformed_dicom_geometry_is_one_line_naming_the_attribute(tmp_path, damage, message):
    """The audit's mutated files ended in IndexError and ValueError tracebacks, in a file or
    in one slice of a series (which stopped a batch)."""
    folder = tmp_path / "series"
    folder.mkdir()
    write_series(folder, np.arange(4 * 5 * 3, dtype=np.uint16).reshape(4, 5, 3))
    one = sorted(folder.iterdir())[1]
    ds = pydicom.dcmread(one)
    damage(ds)
    ds.save_as(one)
    with pytest.raises(InputError, match=message):
        sgio.read(folder)
    with pytest.raises(InputError, match=f"{one.name}: .*" + message):
        sgio.read(one)


def test_an_unreadable_slice_of_a_series_is_named_not_left_out(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    write_series(folder, np.arange(4 * 5 * 3, dtype=np.uint16).reshape(4, 5, 3))
    (folder / "notes.txt").write_text("not DICOM: left out")
    one = sorted(folder.glob("*.dcm"))[1]
    one.write_bytes(one.read_bytes()[:200])  # DICOM, cut short
    with pytest.raises(InputError, match=f"{one.name}") as raised:  # not left out silently
        sgio.read(folder)
    assert "\n" not in str(raised.value)


def test_an_unwritable_folder_names_the_output_not_our_temporary(tmp_path, monkeypatch):
    """(Root writes anywhere, so the read-only folder is played by mkstemp.)"""
    def refuse(prefix, suffix, dir):
        raise PermissionError(13, "Permission denied", f"{dir}/{prefix}k3j9x{suffix}")

    monkeypatch.setattr(sgio.tempfile, "mkstemp", refuse)
    with pytest.raises(InputError) as raised:
        sgio.write_bytes(tmp_path / "out.sgc", b"x")
    assert str(raised.value) == f"{tmp_path / 'out.sgc'}: cannot write it (Permission denied)"
