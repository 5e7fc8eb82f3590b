"""DICOM Segmentation output: made with highdicom from the source series, read back exactly."""
import highdicom as hd
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

import segcodec
from segcodec.cli.main import main
from segcodec.io import dicom

from test_io import write_lps_series, write_series


@pytest.fixture(scope="module")
def coded_series(tmp_path_factory):
    """A hippocampus volume written as a shuffled LPS DICOM series, and its .sgc."""
    tmp = tmp_path_factory.mktemp("seg")
    folder = write_lps_series(tmp / "series")
    sgc = segcodec.encode_file(folder, tmp / "x.sgc")
    return folder, sgc


def test_the_segmentation_holds_the_labels_of_each_source_slice(coded_series, tmp_path):
    folder, sgc = coded_series
    out = segcodec.segment_file(sgc, tmp_path / "seg.dcm", source=folder)
    labels = np.load(segcodec.segment_file(sgc, tmp_path / "labels.npy"))
    model = segcodec.decode(sgc.read_bytes()).model
    seg = hd.seg.segread(out)
    assert seg.SegmentationType == "BINARY" and seg.Modality == "SEG"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == model.labels[1:]
    assert seg.SegmentSequence[0].SegmentAlgorithmName == model.name
    series = dicom.series(folder)
    source = pydicom.dcmread(series[0][0])
    assert seg.PatientID == source.PatientID and seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    uids = [ds.SOPInstanceUID for _, ds in series]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                               combine_segments=True)
    assert labels.any()
    np.testing.assert_array_equal(frames, labels.transpose(2, 1, 0))
    again = pydicom.dcmread(out)  # plain pydicom reads it too
    assert again.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert int(again.NumberOfFrames) == len(uids) * (len(model.labels) - 1)


def test_a_segmentation_needs_its_own_source_series(coded_series, tmp_path):
    folder, sgc = coded_series
    with pytest.raises(segcodec.InputError, match="source series"):
        segcodec.segment_file(sgc, tmp_path / "seg.dcm")
    other = tmp_path / "other"
    other.mkdir()
    write_series(other, np.zeros((20, 30, 5), np.uint16))
    with pytest.raises(segcodec.InputError, match="not those of the source"):
        segcodec.segment_file(sgc, tmp_path / "seg.dcm", source=other)
    assert not list(tmp_path.glob("*.dcm")) and not list(tmp_path.glob(".*"))


def test_cli_writes_a_segmentation_with_source_and_refuses_one_without(coded_series, tmp_path):
    folder, sgc = coded_series
    runner = CliRunner()
    ok = runner.invoke(main, ["segment", str(sgc), "-o", str(tmp_path / "s.dcm"),
                              "--source", str(folder)])
    assert ok.exit_code == 0, ok.output
    assert hd.seg.segread(tmp_path / "s.dcm").NumberOfFrames > 0
    bad = runner.invoke(main, ["segment", str(sgc), "-o", str(tmp_path / "t.dcm")])
    assert bad.exit_code == 1 and "source series" in bad.output
    assert "Traceback" not in bad.output and len(bad.output.strip().splitlines()) == 1


def test_a_source_of_the_same_shape_but_another_geometry_is_refused(coded_series, tmp_path):
    """The .sgc carries the geometry: a SEG is never drawn mirrored or shifted in patient
    space onto a series that merely has the coded volume's shape."""
    from conftest import HIPPO
    folder, sgc = coded_series
    ras = segcodec.encode_file(HIPPO[0], tmp_path / "ras.sgc")  # the same volume, stored RAS
    assert segcodec.read_header(ras.read_bytes()).shape == \
        segcodec.read_header(sgc.read_bytes()).shape
    with pytest.raises(segcodec.InputError, match="stored in LPS order, the coded image in RAS"):
        segcodec.segment_file(ras, tmp_path / "seg.dcm", source=folder)
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    loaded = segcodec.io.read(folder)
    origin = np.diag([-1.0, -1.0, 1.0]) @ loaded.affine[:3, 3] + [0, 0, 2.0]
    write_series(shifted, loaded.array.astype(np.uint16), spacing=(1, 1, 1), origin=origin)
    with pytest.raises(segcodec.InputError, match="origin 2 mm"):
        segcodec.segment_file(sgc, tmp_path / "seg.dcm", source=shifted)
    finer = tmp_path / "finer"
    finer.mkdir()
    write_series(finer, loaded.array.astype(np.uint16), spacing=(0.9, 1, 1),
                 origin=np.diag([-1.0, -1.0, 1.0]) @ loaded.affine[:3, 3])
    with pytest.raises(segcodec.InputError, match="voxels of 0.9 x 1 x 1 mm"):
        segcodec.segment_file(sgc, tmp_path / "seg.dcm", source=finer)
    assert not list(tmp_path.glob("*.dcm")) and not list(tmp_path.glob(".*"))


def test_a_file_without_geometry_takes_only_a_source_in_its_models_orientation(coded_series,
                                                                               tmp_path):
    from conftest import HIPPO
    folder, _ = coded_series
    bare = segcodec.encode_file(HIPPO[0], tmp_path / "bare.sgc", geometry=False)  # RAS
    with pytest.raises(segcodec.InputError, match="has no geometry.*stored in LPS order"):
        segcodec.segment_file(bare, tmp_path / "seg.dcm", source=folder)
