"""format_spec.md §7: label streams are lossless, small, self-describing and deterministic."""
import hashlib
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segcodec import labelcodec, labelkernels, wire
from segcodec.errors import InputError, SgcFormatError

from conftest import HIPPO, ISIC, hippo_labels, hippo_volume, isic_mask


@pytest.fixture(autouse=True, params=["numpy", "numba"])
def kernels(request, monkeypatch):
    """Every test runs with each kernel set: both must write and read the same streams."""
    monkeypatch.setattr(labelkernels, "fastest", labelkernels.KERNELS[request.param])
    return request.param


@pytest.mark.parametrize("block, expected", [("", "numba numpy, fastest numba"),
                                              ("sys.modules['numba'] = None; ",
                                               "numpy, fastest numpy")])
def test_numba_is_used_where_installed_and_numpy_where_not(block, expected):
    code = (f"import sys; {block}from segcodec import labelkernels as k; "
            "print(' '.join(sorted(k.KERNELS)) + ', fastest', "
            "*[n for n, v in k.KERNELS.items() if v is k.fastest])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == expected


def recrc(data: bytes) -> bytes:
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


def blobs(shape, classes, seed=0):
    """Smooth label maps: thresholded smoothed noise, like segmentations."""
    rng = np.random.default_rng(seed)
    field = rng.normal(size=shape)
    for axis in range(len(shape)):
        field = sum(np.roll(field, s, axis) for s in range(-3, 4))
    edges = np.quantile(field, np.linspace(0, 1, classes + 1)[1:-1])
    return np.digitize(field, edges).astype(np.uint8)


def round_trip(labels, classes=None, **kw) -> bytes:
    data = labelcodec.encode(labels, classes, **kw)
    got = labelcodec.decode(data)
    np.testing.assert_array_equal(got.labels, labels)
    assert got.labels.dtype == np.uint8 and got.labels.shape == labels.shape
    return data


@pytest.mark.parametrize("i", range(len(ISIC)))
def test_isic_masks_cost_a_few_dozen_bytes(i):
    mask = isic_mask(i)
    data = round_trip(mask, 2, source="raster")
    png = ISIC[i].with_name(ISIC[i].stem + "_segmentation.png").stat().st_size
    assert len(data) * 8 / mask.size < 0.015 and len(data) < png / 3


@pytest.mark.parametrize("i", range(len(HIPPO)))
def test_hippocampus_labels_with_geometry(i):
    labels = hippo_labels(i).astype(np.uint8)
    affine = hippo_volume(i)[1]
    data = round_trip(labels, 3, affine=affine, source="nifti")
    got = labelcodec.decode(data)
    np.testing.assert_allclose(got.affine, affine, atol=1e-5)
    assert got.classes == 3 and got.source == "nifti"
    gz = HIPPO[i].with_name(HIPPO[i].name.replace(".nii.gz", "_labels.nii.gz")).stat().st_size
    assert len(data) * 8 / labels.size < 0.08 and len(data) < gz / 2


def test_stream_is_identical_on_every_machine():
    # Integer-only probabilities (§7.5): these digests must never change for version 1.
    small = blobs((9, 13), 3, seed=1)
    assert labelcodec.encode(small).hex() == GOLDEN_SMALL
    assert hashlib.sha256(labelcodec.encode(isic_mask(0), 2)).hexdigest()[:16] == GOLDEN_ISIC
    vol = blobs((12, 10, 14), 12, seed=2)  # > 9 classes: escapes (§7.4)
    assert hashlib.sha256(labelcodec.encode(vol)).hexdigest()[:16] == GOLDEN_VOLUME


GOLDEN_SMALL = "534c010002090d0271cde0902497b5105c67a703f977fd1408440c64af64156cf5dfd0b763d42761"
GOLDEN_ISIC = "0c41afebbdf6ceab"
GOLDEN_VOLUME = "4d9c3283426166e4"


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=3, max_side=9)),
       st.integers(0, 255))
def test_any_label_map_round_trips(labels, top):
    labels = (labels.astype(np.int64) % (top + 1)).astype(np.uint8)
    round_trip(labels, top + 1 if top % 2 else None)


@pytest.mark.parametrize("shape, classes", [((1, 1), 1), ((1, 300), 2), ((300, 1), 5),
                                            ((1, 1, 40), 3), ((7, 1, 9), 200), ((33, 17), 256)])
def test_odd_shapes_and_class_counts(shape, classes):
    labels = blobs(shape, min(classes, 16), seed=3).astype(np.int64) * (classes // 16 or 1)
    round_trip((labels % classes).astype(np.uint8), classes)


def test_one_class_is_header_only_and_affine_forms():
    data = round_trip(np.zeros((300, 200), np.uint8), 1)
    assert len(data) == 14  # §7.1: 2 + 1 + 1 + 1 + 2 + 2 varint bytes + 1 + 4 of CRC
    oblique = np.array([[0.9, 0.1, 0, 5], [-0.1, 0.9, 0, 6], [0, 0, 2, 7], [0, 0, 0, 1]])
    for affine, extra in [(np.diag([2.0, 3.0, 4.0, 1.0]), 24), (oblique, 48)]:
        with_geometry = round_trip(np.zeros((300, 200), np.uint8), 1, affine=affine)
        assert len(with_geometry) == 14 + extra
        np.testing.assert_allclose(labelcodec.decode(with_geometry).affine, affine, atol=1e-6)


@pytest.mark.parametrize("labels, classes, message", [
    (np.zeros((4, 4), np.float32), None, "integers"),
    (np.full((4, 4), 3, np.uint8), 3, "0..2"),
    (np.zeros((4, 4, 4, 4), np.uint8), None, "2D or 3D"),
    (np.zeros((4, 4), np.int16) - 1, None, "0..255"),
    (np.zeros((4, 4), np.uint8), 257, "1..256"),
])
def test_bad_labels(labels, classes, message):
    with pytest.raises(InputError, match=message):
        labelcodec.encode(labels, classes)


def test_damaged_streams_name_the_problem():
    data = labelcodec.encode(blobs((20, 20), 3), affine=np.eye(4))
    cases = [
        (data[:5], "at least"), (b"XX" + data[2:], "magic"), (data[:-1], "CRC"),
        (recrc(data[:2] + b"\x02" + data[3:]), "version"),
        (recrc(data[:3] + bytes([data[3] | 0x80]) + data[4:]), "reserved"),
        (recrc(data[:4] + b"\x04" + data[5:]), "ndim"),
        (recrc(data[:5] + b"\x00" + data[6:]), r"shape\[0\] = 0"),
        (recrc(data[:8] + b"\x00" * 4), "geometry runs past the end"),
    ]
    for bad, message in cases:
        with pytest.raises(SgcFormatError, match=message) as err:
            labelcodec.decode(bad)
        assert "\n" not in str(err.value)


def spec_encode(labels: np.ndarray, classes: int) -> bytes:
    """format_spec.md §7, written out pixel by pixel from the text alone."""
    import constriction
    x = labels[None] if labels.ndim == 2 else labels
    ni, nj, nk = x.shape
    at = lambda i, j, k: int(x[i, j, k]) if 0 <= i < ni and 0 <= j < nj and 0 <= k < nk else 0
    offsets = ([(0, 0, -1), (0, -1, 0), (0, -1, -1), (0, -1, 1)] if labels.ndim == 2 else
               [(-1, 0, 0), (0, 0, -1), (0, -1, 0), (-1, 1, 0), (-1, 0, 1), (-1, -1, 0),
                (-1, 0, -1)])
    front = (lambda i, j, k: 2 * j + k) if labels.ndim == 2 else (lambda i, j, k: 2 * i + j + k)
    a = classes if classes <= 9 else 9
    tables = {"main": [[1] * a for _ in range(4 << (len(offsets) - 1))],
              "esc": [[1] * max(1, classes - 8)]}

    def dist(row):
        q = [1 + n * (65536 - len(row)) // sum(row) for n in row]
        q[row.index(max(row))] += 65536 - sum(q)
        return [v / 65536 for v in q]

    encoder = constriction.stream.queue.RangeEncoder()
    model = constriction.stream.model.Categorical(perfect=False)
    positions = sorted(np.ndindex(x.shape), key=lambda p: (front(*p), p))
    for f in sorted({front(*p) for p in positions}) if classes > 1 else []:
        coded = {"main": [], "esc": []}
        for i, j, k in (p for p in positions if front(*p) == f):
            c = [at(i + di, j + dj, k + dk) for di, dj, dk in offsets]
            ctx = sum(1 << (t - 1) for t in range(1, len(c)) if c[t] == c[0]) * 4 + min(c[0], 3)
            distinct = list(dict.fromkeys(c))
            v = at(i, j, k)
            r = distinct.index(v) if v in distinct else \
                len(distinct) + v - sum(1 for u in distinct if u < v)
            coded["main"].append((ctx, r if classes <= 9 else min(r, 8)))
            if classes > 9 and r >= 8:
                coded["esc"].append((0, r - 8))
        for name, items in coded.items():
            if items:
                table = tables[name]
                encoder.encode(np.array([s for _, s in items], dtype=np.int32), model,
                               np.array([dist(table[ctx]) for ctx, _ in items]))
                for ctx, s in items:
                    table[ctx][s] += 32
                for row in table:
                    while sum(row) > 8192:
                        row[:] = [(n + 1) >> 1 for n in row]
    payload = encoder.get_compressed().astype(">u4").tobytes()
    return payload[:len(payload) - min(3, len(payload) - len(payload.rstrip(b"\0")))]


@pytest.mark.parametrize("shape, classes", [((9, 13), 3), ((5, 6, 7), 2), ((4, 5, 6), 12),
                                            ((11, 4), 40)])
def test_the_spec_text_alone_gives_the_same_payload(shape, classes):
    labels = blobs(shape, min(classes, 16), seed=5) * (classes // 16 or 1) % classes
    stream = labelcodec.encode(labels, classes)
    spec = spec_encode(labels, classes)
    assert stream[-4 - len(spec):-4] == spec and len(stream) - len(spec) == 4 + 5 + labels.ndim + 1


def test_a_stream_must_be_used_up_and_not_empty(monkeypatch):
    def recrc(body):
        return body + struct.pack("<I", zlib.crc32(body))

    labels = (np.random.default_rng(3).random((40, 30)) < 0.4).astype(np.uint8)
    data = labelcodec.encode(labels, 2)
    *_, payload = labelcodec._parse(data)
    body = data[:-4 - len(payload)]
    assert np.array_equal(labelcodec.decode(recrc(body + payload)).labels, labels)
    for bad in (b"", payload + bytes(range(1, 41))):
        with pytest.raises(SgcFormatError, match="empty or longer than its labels"):
            labelcodec.decode(recrc(body + bad))
    # The fuzzer's slowest input: a strip of 65,535 one-pixel wavefronts and no payload,
    # decoded in full (1.4 s) before it was refused.
    strip = body[:5] + wire.varint(1) + wire.varint(65535) + body[7:]  # was 40 x 30
    monkeypatch.setattr(labelcodec, "_Grid", lambda *a: pytest.fail("decoded"))
    with pytest.raises(SgcFormatError, match="empty or longer than its labels"):
        labelcodec.decode(recrc(strip))


def test_a_stream_declaring_too_many_voxels_is_refused_before_decoding():
    data = labelcodec.encode(np.zeros((64, 64), np.uint8), 2)
    with pytest.raises(SgcFormatError, match="declares 4096 voxels, more than the 1000"):
        labelcodec.decode(data, max_voxels=1000)


@pytest.mark.parametrize("shape, classes", [((2048, 2048), 2), ((96, 96, 96), 3),
                                            ((64, 64, 64), 12), ((256, 256), 2), ((1, 9), 2)])
def test_the_payload_bound_holds_for_uniform_maps(shape, classes):
    # A map of one label costs the fewest bits a stream can have (§7.5): the bound must pass it.
    round_trip(np.zeros(shape, np.uint8), classes)


def test_a_payload_too_short_for_its_voxels_is_refused_before_decoding(monkeypatch):
    data = labelcodec.encode(np.zeros((256, 256), np.uint8), 2)
    *_, payload = labelcodec._parse(data)
    small = bytearray(data[:-4 - len(payload)])
    small[5:7] = wire.varint(4096)  # 256 -> 4096 rows: 2^20 labels for one byte of payload
    small = bytes(small) + payload
    small += struct.pack("<I", zlib.crc32(small))

    def no_decoding(*args):
        raise AssertionError("decoded before refusing")

    monkeypatch.setattr(labelcodec, "_Grid", no_decoding)
    with pytest.raises(SgcFormatError, match="a payload of 1 bytes cannot hold 1048576 labels"):
        labelcodec.decode(small)
