"""Volumes in any orientation segment as the model's own orientation does (format_spec.md §2.3)."""
import itertools
import warnings

import nibabel as nib
import numpy as np
import pytest

import segcodec
from segcodec import orientation, zoo

from conftest import HIPPO, dice, hippo_labels


@pytest.fixture(scope="module")
def oriented_model(tmp_path_factory):
    """The default 3D model, declaring RAS+ as its orientation when it does not already."""
    model = zoo.default_for(3)
    if model.manifest.orientation == "RAS":
        yield model
        return
    folder = tmp_path_factory.mktemp("models")
    manifest = {**model.manifest.to_json(), "name": model.name + "-ras", "default": False,
                "orientation": "RAS"}
    path = zoo.write_model_file(folder, manifest, model.net.state_dict(), model.table)
    mp = pytest.MonkeyPatch()
    mp.setenv(zoo.PATH_ENV, str(folder))
    zoo.reload()
    yield zoo.load_file(path)
    mp.undo()
    zoo.reload()


ORIENTATIONS = [(perm, flips) for perm in itertools.permutations(range(3))
                for flips in itertools.product((1, -1), repeat=3)]


def test_transform_round_trips_every_orientation():
    array = np.arange(2 * 3 * 5).reshape(2, 3, 5)
    for perm, flips in ORIENTATIONS:
        affine = np.eye(4)
        affine[:3, :3] = np.eye(3)[:, perm] * flips
        ornt = orientation.transform(affine, "RAS")
        seen = orientation.to_model(array[None], ornt)[0]
        assert seen.shape == orientation.model_shape(array.shape, ornt)
        np.testing.assert_array_equal(orientation.to_input(seen, ornt), array)
    assert orientation.transform(np.eye(4), "RAS") is None
    assert orientation.transform(None, "RAS") is None


def test_all_48_orientations_give_the_same_labels_in_world_space(oriented_model):
    img = nib.load(HIPPO[0])
    img = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)
    reference = segcodec.segment(segcodec.encode(np.asarray(img.dataobj), affine=img.affine,
                                                 model=oriented_model))
    assert dice(reference, hippo_labels(0), 1) > 0.7
    for perm, flips in ORIENTATIONS:
        ornt = np.array([[p, f] for p, f in zip(perm, flips)], dtype=float)
        moved = img.as_reoriented(ornt)
        data = segcodec.encode(np.asarray(moved.dataobj), affine=moved.affine,
                               model=oriented_model)
        labels = segcodec.segment(data)
        assert labels.shape == moved.shape
        back = nib.Nifti1Image(labels, moved.affine).as_reoriented(
            nib.orientations.io_orientation(moved.affine))
        np.testing.assert_array_equal(np.asarray(back.dataobj), reference,
                                      err_msg=f"axes {perm}, flips {flips}")


def test_models_without_an_orientation_code_as_before_what_is_stored_as_they_were_trained(
        volume, tmp_path):
    """hippocampus-v0 and -v1 code volumes as stored and were trained on RAS ones: a volume
    stored otherwise got Dice 0.00-0.13, silently, with or without its geometry; it is
    refused.  Their files decode as before (the golden tests)."""
    array, affine = volume
    flipped = affine @ np.diag([-1.0, 1.0, 1.0, 1.0])
    model = next(m for m in zoo.installed().values() if m.name == "hippocampus-v1")
    assert model.manifest.orientation is None
    data = segcodec.encode(array, affine=affine, model=model)
    assert segcodec.encode(array, affine=affine @ np.diag([1.0, 1.0, 2.0, 1.0]), model=model,
                           geometry=False) == segcodec.encode(array, model=model)
    for geometry in (True, False):
        with pytest.raises(segcodec.InputError, match="stored in LAS order; model "
                                                      "hippocampus-v1 codes volumes as they"):
            segcodec.encode(array, affine=flipped, model=model, geometry=geometry)
    # reoriented() brings it to RAS for them too: what send --no-geometry does
    there, moved, restore = segcodec.reoriented(np.flip(array, 0), flipped, model=model)
    np.testing.assert_array_equal(there, array)
    np.testing.assert_array_equal(restore(segcodec.segment(data)),
                                  np.flip(segcodec.segment(data), 0))


def test_a_dicom_series_segments_as_its_nifti_does(oriented_model, tmp_path):
    from test_io import write_series
    from segcodec import io as sgio
    img = nib.load(HIPPO[0])
    # The volume as an LPS scanner stores it: columns towards the patient's left, rows
    # towards posterior; each slice's position in LPS.
    lps = img.as_reoriented(np.array([[0, -1], [1, -1], [2, 1]], dtype=float))
    origin = np.diag([-1.0, -1.0, 1.0]) @ lps.affine[:3, 3]
    write_series(tmp_path, np.asarray(lps.dataobj).astype(np.uint16), spacing=(1, 1, 1),
                 origin=tuple(origin))
    loaded = sgio.read(tmp_path)
    np.testing.assert_allclose(loaded.affine, lps.affine, atol=1e-5)
    from_dicom = segcodec.segment(segcodec.encode(loaded.array, affine=loaded.affine,
                                                  model=oriented_model))
    back = nib.Nifti1Image(from_dicom, loaded.affine).as_reoriented(
        nib.orientations.io_orientation(loaded.affine))
    from_nifti = segcodec.segment(segcodec.encode(
        np.asarray(img.dataobj).astype(np.uint16), affine=img.affine, model=oriented_model))
    truth = hippo_labels(0)
    for label in (1, 2):
        assert abs(dice(np.asarray(back.dataobj), truth, label)
                   - dice(from_nifti, truth, label)) <= 0.005


def test_a_singular_affine_is_a_one_line_error(oriented_model, volume):
    array, affine = volume
    with pytest.raises(segcodec.InputError, match="singular"):
        segcodec.encode(array, affine=affine @ np.diag([1.0, 0.0, 1.0, 1.0]),
                        model=oriented_model)


@pytest.mark.parametrize("entry", [(0, 0), (1, 3)])  # a zoom, a translation
@pytest.mark.parametrize("value", [1e39, np.inf, np.nan])
def test_an_affine_beyond_float32_is_a_one_line_error(entry, value):
    """The geometry section stores float32: a value it cannot hold is refused as such, before
    the orientation is worked out from its overflowed copy."""
    affine = np.eye(4)
    affine[entry] = value
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow on the way to the refusal
        with pytest.raises(segcodec.InputError, match="finite 4x4 matrix of float32 values"):
            segcodec.encode(np.ones((30, 40, 30), np.float32), kind="3d", affine=affine)


def test_axis_aligned_blocks_give_nibabels_orientation_without_its_svd(monkeypatch):
    """Every axis-aligned block reaches nibabel's SVD as one of the 48 signed permutation
    matrices (with zeros of either sign): the shortcut gives its results, all of them."""
    from nibabel import orientations
    nibabels = orientations.io_orientation
    monkeypatch.setattr(orientations, "io_orientation",
                        lambda affine: pytest.fail("an axis-aligned block reached nibabel"))
    for (perm, flips), zero_signs in itertools.product(ORIENTATIONS,
                                                       itertools.product((0.0, -0.0), repeat=6)):
        block, zeros = np.zeros((3, 3)), iter(zero_signs)
        for row, col in itertools.product(range(3), range(3)):
            block[row, col] = next(zeros) if perm[col] != row else 0.0
        block[list(perm), [0, 1, 2]] = np.multiply(flips, (0.7, 1e-30, 3e30))
        affine = np.eye(4)
        affine[:3, :3] = block
        affine = orientation.stored_affine(affine)
        want = nibabels(affine)
        got = orientation._io_orientation(affine)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


def test_transform_is_computed_once_per_block_and_handed_out_fresh():
    """transform caches by the stored 3x3 block (translations do not change it); each call
    gets its own array, and oblique and singular affines are nibabel's as before."""
    orientation._transform.cache_clear()
    flip = np.diag([-1.0, 1, -1, 1])
    first = orientation.transform(flip, "RAS")
    first[:] = 7  # the caller's own: later calls are not affected
    moved = flip.copy()
    moved[:3, 3] = (12.5, -40, 3)
    assert np.array_equal(orientation.transform(moved, "RAS"), [[0, -1], [1, 1], [2, -1]])
    assert orientation._transform.cache_info()[:2] == (1, 1)  # (hits, misses): computed once
    assert orientation.transform(np.eye(4), "RAS") is None
    c = np.sqrt(0.5)
    oblique = np.array([[c, -c, 0, 0], [c, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    from nibabel import orientations
    want = orientations.ornt_transform(orientations.io_orientation(orientation.stored_affine(
        oblique)), orientations.axcodes2ornt("LPS"))
    assert np.array_equal(orientation.transform(oblique, "LPS"), want)
    for _ in range(2):  # not cached as a result: raised every time
        with pytest.raises(ValueError, match="singular"):
            orientation.transform(np.diag([1.0, 0, 1, 1]), "RAS")


@pytest.mark.parametrize("codes", ["PSR", "RPS", "LPS"])
def test_without_geometry_a_volume_not_in_the_models_orientation_is_refused(oriented_model,
                                                                            tmp_path, codes):
    """Dropping the affine dropped the orientation too, and the labels came back silently
    wrong (Dice 0.00-0.37); now it is refused, and ``reoriented`` codes it right."""
    img = nib.load(HIPPO[0])
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine),
                                           nib.orientations.axcodes2ornt(codes))
    moved = img.as_reoriented(ornt)
    array = np.asarray(moved.dataobj)
    with pytest.raises(segcodec.InputError, match=f"stored in {codes} order, not RAS"):
        segcodec.encode(array, affine=moved.affine, geometry=False, model=oriented_model)
    nib.save(moved, tmp_path / "v.nii.gz")
    with pytest.raises(segcodec.InputError, match=f"v.nii.gz: the volume is stored in {codes}"):
        segcodec.encode_file(tmp_path / "v.nii.gz", geometry=False, model=oriented_model)
    assert not (tmp_path / "v.sgc").exists()
    there, affine, restore = segcodec.api.reoriented(array, moved.affine, model=oriented_model)
    data = segcodec.encode(there, affine=affine, geometry=False, model=oriented_model)
    assert segcodec.read_header(data).affine is None
    np.testing.assert_array_equal(
        restore(segcodec.segment(data)),
        segcodec.segment(segcodec.encode(array, affine=moved.affine, model=oriented_model)))
    # Stored in the model's orientation already, a volume drops its geometry as before.
    ras = segcodec.encode(np.asarray(img.dataobj), affine=img.affine, geometry=False,
                          model=oriented_model)
    assert ras == segcodec.encode(np.asarray(img.dataobj), model=oriented_model)
