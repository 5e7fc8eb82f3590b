"""encode -> segment on real fixtures, through the public API."""
import numpy as np
import pytest
import torch

import segcodec
from segcodec import transforms, zoo
from segcodec.errors import InputError, SgcFormatError, UnknownModelError

from conftest import dice, hippo_labels, hippo_volume, isic_image, isic_mask


def test_2d_round_trip(rgb):
    data = segcodec.encode(rgb)
    header = segcodec.read_header(data)
    assert header.shape == (256, 256) and header.channels == 3 and header.affine is None
    labels = segcodec.segment(data)
    assert labels.shape == rgb.shape[:2] and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1}
    assert len(data) * 8 / labels.size < 0.05  # a few dozen bytes, header included


def test_2d_labels_find_the_lesion():
    scores = [dice(segcodec.segment(segcodec.encode(isic_image(i))), isic_mask(i), 1)
              for i in range(3)]
    assert np.mean(scores) > 0.85, scores  # isic-lesion-v1: 0.914, 0.938, 0.927


def test_3d_round_trip_keeps_geometry(volume):
    array, affine = volume
    data = segcodec.encode(array, affine=affine)
    header = segcodec.read_header(data)
    np.testing.assert_allclose(header.affine, affine, atol=1e-5)
    labels = segcodec.segment(data)
    assert labels.shape == array.shape and set(np.unique(labels)) <= {0, 1, 2}


def test_3d_labels_find_the_hippocampus():
    scores = []
    for i in range(2):
        pred = segcodec.segment(segcodec.encode(hippo_volume(i)[0]))
        truth = hippo_labels(i)
        scores += [dice(pred, truth, 1), dice(pred, truth, 2)]
    assert np.mean(scores) > 0.75, scores  # hippocampus-v1: 0.866, 0.836, 0.848, 0.812


def test_decode_gives_the_latents_the_encoder_made(rgb):
    data = segcodec.encode(rgb)
    decoded = segcodec.decode(data)
    m = decoded.model
    from segcodec import bits
    from segcodec.transforms import working_grid
    with torch.no_grad():
        x = working_grid(np.moveaxis(rgb, -1, 0), m.manifest.normalisation,
                         m.manifest.architecture.work_shape)
        z = bits.threshold(m.net.compressor(x)[0].numpy())
    np.testing.assert_array_equal(decoded.latents, z)


def test_identical_bits_and_labels_with_one_and_two_threads(rgb, volume):
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            d2, d3 = segcodec.encode(rgb), segcodec.encode(volume[0])
            results.append((d2, d3, segcodec.segment(d2).tobytes(),
                            segcodec.segment(d3).tobytes()))
        assert results[0] == results[1]
    finally:
        torch.set_num_threads(before)


def test_gray_image_goes_to_the_rgb_model_only_when_forced(rgb):
    gray = rgb.mean(-1).astype(np.uint8)
    with pytest.raises(InputError, match="grey images, where the model takes RGB"):
        segcodec.encode(gray)
    data = segcodec.encode(gray, force=True)
    assert segcodec.read_header(data).channels == 1
    assert segcodec.segment(data).shape == gray.shape


def test_any_size_comes_back_at_its_size():
    rng = np.random.default_rng(0)
    for shape in [(75, 300, 3), (1000, 640, 3), (5, 5)]:  # up to 4:1, the photo bound
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        # noise is outside every domain: forced, since only the shapes are tested here
        assert segcodec.segment(segcodec.encode(img, force=True)).shape == shape[:2]
    vol = rng.normal(size=(20, 70, 9)).astype(np.float32)
    assert segcodec.segment(segcodec.encode(vol, force=True)).shape == vol.shape


def test_metadata_round_trip(rgb):
    data = segcodec.encode(rgb, metadata={"site": "clinic-7"})
    assert segcodec.read_header(data).metadata == {"site": "clinic-7"}


def test_model_override_and_unknown_model(rgb):
    m = zoo.default_for(2)
    assert segcodec.read_header(segcodec.encode(rgb, model=m.name)).model_id == m.model_id
    with pytest.raises(UnknownModelError, match="nosuchmodel"):
        segcodec.encode(rgb, model="nosuchmodel")
    with pytest.raises(InputError, match="takes 3D"):
        segcodec.encode(rgb, model=zoo.default_for(3).name)


def test_file_with_unknown_model_id_is_refused_naming_it(rgb):
    from segcodec import container
    header, payload = container.read(segcodec.encode(rgb))
    forged = container.write(
        segcodec.Header(model_id=bytes.fromhex("deadbeef0042"), shape=header.shape,
                        channels=header.channels, latent_shape=header.latent_shape), payload)
    with pytest.raises(UnknownModelError, match="deadbeef0042"):
        segcodec.segment(forged)


def test_latent_shape_must_match_the_model(rgb):
    from segcodec import container
    header, payload = container.read(segcodec.encode(rgb))
    forged = container.write(
        segcodec.Header(model_id=header.model_id, shape=header.shape, channels=3,
                        latent_shape=(4, 8, 8)), payload)
    with pytest.raises(SgcFormatError, match="latent shape"):
        segcodec.segment(forged)


BAD_INPUTS = [
    (np.full((64, 64, 3), np.nan, np.float32), "NaN or infinite"),
    (np.array([[1.0, np.inf], [0.0, 1.0]]), "NaN or infinite"),
    (np.zeros((0, 64, 3), np.uint8), "empty"),
    (np.zeros(64, np.uint8), "must have 3 dimensions"),
    (np.zeros((4, 4, 4, 4, 4), np.uint8), "must have 3 dimensions"),
    (np.zeros((64, 64, 4), np.uint8), "1 or 3 channels"),
    (np.zeros((64, 64), np.complex64), "unsupported dtype"),
    (np.array([["a", "b"], ["c", "d"]]), "unsupported dtype"),
    (np.zeros((70000, 2), np.uint8), "shape\\[0\\] = 70000"),
    (np.zeros((9000, 9000), np.bool_), "more than the limit"),
    (np.zeros((5000, 2, 2), np.uint8), "shape\\[0\\] = 5000"),
]


@pytest.mark.parametrize("array, message", BAD_INPUTS)
def test_bad_arrays_get_clear_errors(array, message):
    with pytest.raises(InputError, match=message):
        segcodec.encode(array)


def test_explicit_kind_and_bad_affine(rgb):
    with pytest.raises(InputError, match="3 dimensions"):
        segcodec.encode(rgb[..., 0], kind="3d")
    with pytest.raises(InputError, match="affine"):
        segcodec.encode(rgb, affine=np.full((4, 4), np.nan))


def test_mutated_real_files_only_raise_sgc_errors(rgb):
    """Flipped, cut or inserted bytes, CRC repaired or not, through parsing, model lookup and
    entropy decoding (segment() adds only g and s, which take any latents)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from test_container import recrc

    original = segcodec.encode(rgb)

    @settings(max_examples=150, deadline=None)
    @given(st.integers(0, len(original) - 1), st.integers(0, 255),
           st.sampled_from(["set", "cut", "insert"]), st.booleans())
    def check(i, value, op, fix_crc):
        blob = bytearray(original)
        if op == "set":
            blob[i] = value
        elif op == "cut":
            del blob[i:]
        else:
            blob[i:i] = bytes([value])
        blob = bytes(blob)
        if fix_crc and len(blob) >= 4:
            blob = recrc(blob)
        try:
            decoded = segcodec.decode(blob)
        except segcodec.SgcError:
            return
        assert decoded.latents.shape == decoded.model.latent_shape

    check()


def test_photographs_in_any_dtype_convention_segment_alike():
    image, truth = isic_image(0), isic_mask(0)
    reference = segcodec.segment(segcodec.encode(image))
    for variant in (image / 255.0, (image / 255.0).astype(np.float32),
                    image.astype(np.uint16) * 257):
        labels = segcodec.segment(segcodec.encode(variant))
        assert dice(labels, reference, 1) > 0.99, variant.dtype
        assert dice(labels, truth, 1) > 0.85, variant.dtype


@pytest.mark.parametrize("image, message", [
    (np.full((64, 64, 3), 200.0), "float images in \\[0, 1\\]"),
    (np.full((64, 64, 3), -3, np.int16), "negative values"),
    (np.zeros((3, 64, 64), np.uint8), "np.moveaxis"),
    (np.linspace(-1000, 1200, 64 * 64).reshape(64, 64), "more likely a CT or MR slice"),
    (np.full((64, 64), -3, np.int16), "negative values; .* CT or MR slice"),
    (np.zeros((64, 64, 4), np.uint8), "channels last, got shape \\(64, 64, 4\\) \\(drop the alpha"),
])
def test_photograph_conventions_that_would_mislead_are_refused(image, message):
    with pytest.raises(InputError, match=message) as info:
        segcodec.encode(image)
    assert ("CT or MR" in str(info.value)) == (image.ndim == 2)  # grey ones only
    assert ("scale it" in str(info.value)) == (image.dtype.kind == "f" and image.ndim == 3)


def test_encode_of_a_path_reads_the_file(tmp_path):
    from conftest import HIPPO
    out = segcodec.encode_file(HIPPO[0], tmp_path / "x.sgc")
    assert segcodec.encode(HIPPO[0]) == out.read_bytes() == segcodec.encode(str(HIPPO[0]))


def test_an_int64_photograph_is_read_by_its_values():
    image = isic_image(0)
    reference = segcodec.segment(segcodec.encode(image))
    assert dice(segcodec.segment(segcodec.encode(image.astype(np.int64))), reference, 1) > 0.99
    with pytest.raises(InputError, match="8- or 16-bit"):
        segcodec.encode(image.astype(np.int64) * 1000)


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "cuda:99", ""])
def test_unknown_or_missing_devices_are_refused_in_one_line(name):
    from segcodec.api import resolve_device
    with pytest.raises(segcodec.InputError, match="device"):
        resolve_device(name)


def test_cpu_and_auto_devices_resolve():
    from segcodec.api import resolve_device
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")


def test_a_batch_of_files_gets_each_files_own_labels_in_its_own_voxel_order():
    """The service's batched path (one g+s call for several files) orients each file's
    labels as ``segment`` does: a batch once returned them in the model's orientation."""
    array, affine = hippo_volume(0)
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = (array.shape[0] - 1) * affine[0, 0]
    files = [segcodec.encode(array, affine=affine),
             segcodec.encode(array[::-1], affine=affine @ flip),
             segcodec.encode(np.transpose(array, (1, 0, 2)),
                             affine=affine[:, [1, 0, 2, 3]])]
    decoded = [segcodec.api.decode(f) for f in files]
    together = segcodec.api.labels_of(decoded, "cpu")
    for data, labels in zip(files, together):
        np.testing.assert_array_equal(labels, segcodec.segment(data, device="cpu"))
    # and the reoriented copies are the same anatomy, labelled alike
    np.testing.assert_array_equal(together[1][::-1], together[0])
    np.testing.assert_array_equal(np.transpose(together[2], (1, 0, 2)), together[0])


def test_a_singular_affine_fails_its_own_file_at_decode():
    from segcodec import container
    array, affine = hippo_volume(0)
    good = segcodec.encode(array, affine=affine)
    header, payload = container.read(good)
    import dataclasses
    bad = container.write(dataclasses.replace(header, affine=np.diag([0.0, 1, 1, 1])), payload)
    with pytest.raises(SgcFormatError, match="singular"):
        segcodec.api.decode(bad)
    assert segcodec.api.labels_of([segcodec.api.decode(good)], "cpu")[0].shape == array.shape


@pytest.mark.parametrize("classes", [2, 3, 5])
@pytest.mark.parametrize("shape", [(37, 51), (64, 64), (20, 30), (700, 333), (36, 47, 41)])
def test_labels_from_logits_equal_the_argmax_of_the_upsampled_logits(classes, shape):
    """One class at a time, with a running maximum, gives argmax's labels, ties included."""
    from segcodec.transforms import labels_from_logits, resample
    g = torch.Generator().manual_seed(classes)
    logits = torch.randn(1, classes, *(8 if len(shape) == 3 else 64,) * len(shape), generator=g)
    logits[:, -1] = logits[:, 0]  # exact ties: the first class wins, as in argmax
    kept = logits.clone()
    expected = resample(logits, shape).argmax(1)[0].to(torch.uint8).numpy()
    assert np.array_equal(labels_from_logits(logits, shape), expected)
    assert torch.equal(logits, kept)  # the caller's logits are untouched


@pytest.mark.parametrize("grid, shape", [((64, 64), (767, 1022)), ((64, 16), (9000, 70)),
                                         ((5, 7), (600, 700)), ((32, 48, 32), (120, 160, 130)),
                                         ((32, 48, 32), (36, 47, 3000))])
def test_large_outputs_are_labelled_a_slab_at_a_time_bit_for_bit(grid, shape, monkeypatch):
    """Beyond SLAB_VOXELS no class is upsampled whole, and the labels are still argmax's of
    the whole upsampling: the classes differ by ~1e-6, so a value off by one rounding anywhere
    would flip thousands of labels."""
    g = torch.Generator().manual_seed(len(shape))
    base = torch.randn(1, 1, *grid, generator=g) * 3
    logits = torch.cat([base, base + 1e-6 * torch.randn(1, 1, *grid, generator=g),
                        base - 1e-6 * torch.rand(1, 1, *grid, generator=g)], 1)
    # One class at a time, as labels_from_logits upsamples: on one thread, PyTorch rounds a
    # three-channel upsampling differently from three one-channel ones.
    whole = torch.cat([transforms.resample(logits[:, c:c + 1], shape) for c in range(3)], 1)
    expected = whole.argmax(1)[0].to(torch.uint8).numpy()
    assert transforms._linear_arithmetic() is not None  # this machine's PyTorch reproduced
    sizes, resample = [], transforms.resample
    monkeypatch.setattr(transforms, "resample",
                        lambda x, s: sizes.append(int(np.prod(s))) or resample(x, s))
    labels = transforms.labels_from_logits(logits, shape)
    assert np.array_equal(labels, expected)
    assert 1 < np.bincount(labels.ravel()).min()  # near-ties: every class wins somewhere
    plane = int(np.prod(shape[1:]))
    assert max(sizes) <= transforms.SLAB_VOXELS + 2 * plane < np.prod(shape)


def test_errors_keep_their_cause_and_a_renamed_error_its_attributes(tmp_path):
    from segcodec.errors import naming
    from segcodec.remote import RemoteError
    (tmp_path / "bad.npy").write_bytes(b"not an array")
    with pytest.raises(InputError, match="bad.npy: cannot read .npy") as info:
        segcodec.encode_file(tmp_path / "bad.npy")
    assert info.value.__cause__ is not None  # the root cause stays for a debugger or a log
    with pytest.raises(RemoteError) as info:
        with naming("a.sgc"):
            raise RemoteError("server busy", status=503)
    assert str(info.value) == "a.sgc: server busy" and info.value.status == 503


def test_fixed_normalisation_is_the_three_roundings_and_leaves_the_input_alone():
    """normalise works in place on its own copy only: never on a caller's float32 array."""
    spec = zoo.default_for(2).manifest.normalisation
    mean = torch.tensor(spec["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec["std"], dtype=torch.float32).view(1, -1, 1, 1)
    rgb = np.moveaxis(isic_image(0), -1, 0)
    for image in (rgb, np.ascontiguousarray(rgb), rgb.astype(np.float32),
                  np.ascontiguousarray(rgb, dtype=np.float32), rgb / 1.0):
        before = image.copy()
        x = transforms.normalise(image, spec)
        ref = torch.from_numpy(np.ascontiguousarray(before, dtype=np.float32))[None]
        assert torch.equal(x, (ref * spec["scale"] - mean) / std)
        np.testing.assert_array_equal(image, before)


def test_zscore_normalisation_is_the_float32_volume_in_float64_bit_for_bit():
    """normalise ('zscore') copies a volume once, straight to float64 where float32 holds its
    values (else rounded to float32 first), and scales it in place: the same tensor as
    (x64 - mean) / std of the float32 copy, in any dtype or layout, the input untouched."""
    spec = zoo.default_for(3).manifest.normalisation
    assert spec["kind"] == "zscore"

    def earlier(image):
        x64 = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].double()
        std = x64.std().item()
        return ((x64 - x64.mean()) / (std if std > 0 else 1.0)).float()

    vol = hippo_volume(0)[0][None]
    rng = np.random.default_rng(2)
    noise = rng.normal(3, 2, (2, 17, 19, 23))
    for image in (vol, np.asfortranarray(vol), vol[:, ::-1, :, ::2], vol.astype(np.int16),
                  vol.astype(np.uint8), vol.astype(np.float64) * 1.0000001, vol > vol.mean(),
                  noise, noise.transpose(0, 3, 1, 2), (noise * 1e8).astype(np.int64),
                  (noise * 1e8).astype(np.int32), noise.astype(np.float16),
                  np.abs(noise * 1e8).astype(np.uint32), np.full((1, 5, 6, 7), 3.0)):
        before = image.copy()
        x, ref = transforms.normalise(image, spec), earlier(image)
        assert x.dtype == ref.dtype and x.stride() == ref.stride()
        assert x.numpy().tobytes() == ref.numpy().tobytes()
        np.testing.assert_array_equal(image, before)


def test_fixed_normalisation_takes_a_scalar_mean_and_std():
    """A one-channel model's manifest may give its mean and std as plain numbers."""
    spec = {"kind": "fixed", "scale": 1 / 255, "mean": 0.5, "std": 0.25}
    x = transforms.normalise(np.full((1, 2, 2), 255, np.uint8), spec)
    assert x.shape == (1, 1, 2, 2) and torch.allclose(x, torch.full_like(x, 2.0))


def test_segment_decode_and_read_header_take_a_files_path(tmp_path, rgb):
    """``encode`` takes paths; so do its counterparts, and anything else is an SgcError."""
    data = segcodec.encode(rgb)
    (tmp_path / "a.sgc").write_bytes(data)
    for path in (tmp_path / "a.sgc", str(tmp_path / "a.sgc")):
        np.testing.assert_array_equal(segcodec.segment(path), segcodec.segment(data))
        assert segcodec.read_header(path) == segcodec.read_header(data)
        assert segcodec.decode(path).header == segcodec.read_header(data)
    with pytest.raises(segcodec.InputError, match=r"b.sgc: no such file or folder$"):
        segcodec.segment(tmp_path / "b.sgc")
    (tmp_path / "c.sgc").write_bytes(b"not a file of ours, though long")
    with pytest.raises(segcodec.SgcFormatError, match=r"c.sgc: not a .sgc file"):
        segcodec.read_header(tmp_path / "c.sgc")
    for wrong in (3, None, [1, 2], np.zeros(40, np.uint8)):
        with pytest.raises(segcodec.InputError, match="a .sgc file is bytes or a file's path"):
            segcodec.segment(wrong)


@pytest.mark.parametrize("model", ["isic-lesion-v4", "hippocampus-v1"])
def test_a_file_with_singular_geometry_is_invalid_for_every_model(model, rgb, volume,
                                                                  tmp_path):
    """All-zero geometry decoded for the 2D models and hippocampus-v0/v1; writing the labels
    as NIfTI then died in nibabel with a traceback, after g and s had run."""
    import dataclasses

    from click.testing import CliRunner

    from segcodec import container
    from segcodec.cli.main import main
    image, affine = (rgb, np.eye(4)) if model.startswith("isic") else volume
    header, payload = container.read(segcodec.encode(image, affine=affine, model=model))
    zero = np.diag([0.0, 0.0, 0.0, 1.0])
    bad = container.write(dataclasses.replace(header, affine=zero), payload)
    with pytest.raises(SgcFormatError, match="geometry is singular"):
        segcodec.segment(bad)
    with pytest.raises(InputError, match="the affine is singular"):
        segcodec.encode(image, affine=zero, model=model)
    (tmp_path / "bad.sgc").write_bytes(bad)
    (tmp_path / "good.sgc").write_bytes(segcodec.encode(image, affine=affine, model=model))
    (tmp_path / "out").mkdir()
    result = CliRunner().invoke(main, ["segment", str(tmp_path / "bad.sgc"),
                                       str(tmp_path / "good.sgc"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and "1 written, 1 failed" in result.output
    assert "Traceback" not in result.output and "geometry is singular" in result.output


def test_an_image_drops_its_geometry_whatever_its_affine(rgb):
    """Orientation is a volume's matter: a 2D image with a flipped affine was refused
    without its geometry, as if it were a volume of a model that does not reorient."""
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])
    assert segcodec.encode(rgb, affine=flipped, geometry=False) == segcodec.encode(rgb)
