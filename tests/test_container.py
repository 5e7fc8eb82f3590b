"""format_spec.md §1-§3: layout, sizes, and a check for every field's range."""
import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segcodec import container
from segcodec.container import Header
from segcodec.errors import SgcError, SgcFormatError

MID = bytes.fromhex("0123456789ab")


def header2d(**kw):
    args = dict(model_id=MID, shape=(256, 256), channels=3, latent_shape=(4, 16, 16))
    args.update(kw)
    return Header(**args)


def recrc(data: bytes) -> bytes:
    """Fix the CRC so a test reaches the field checks behind it."""
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


def test_header_of_2d_256_image_is_22_bytes():
    data = container.write(header2d(), b"")
    assert len(data) == 22  # the budget is 24 (§1)
    header, payload = container.read(data)
    assert header.header_bytes == 22 and payload == b""


def test_round_trip_with_geometry_and_metadata():
    affine = np.array([[-1.5, 0, 0, 10], [0, 1.5, 0, -20.25], [0, 0, 2, 3], [0, 0, 0, 1]])
    h = Header(model_id=MID, shape=(35, 51, 4096), channels=1, latent_shape=(2, 9, 13, 1024),
               source="nifti", affine=affine, metadata={"site": "A", "n": 3})
    data = container.write(h, b"\x01\x02\x03")
    got, payload = container.read(data)
    assert payload == b"\x01\x02\x03"
    assert (got.shape, got.channels, got.latent_shape, got.source, got.metadata) == \
        (h.shape, 1, h.latent_shape, "nifti", {"site": "A", "n": 3})
    np.testing.assert_array_equal(got.affine, affine)
    # Geometry costs 24 bytes when axis-aligned (§2.2), 48 otherwise (§2.1).
    def size(a):
        return len(container.write(Header(model_id=MID, shape=h.shape, channels=1,
                                          latent_shape=h.latent_shape, affine=a), b""))
    oblique = affine.copy()
    oblique[0, 1] = 0.25
    assert size(affine) == size(None) + 24
    assert size(oblique) == size(None) + 48
    for a in (affine, oblique):
        data = container.write(Header(model_id=MID, shape=h.shape, channels=1,
                                      latent_shape=h.latent_shape, affine=a), b"")
        np.testing.assert_array_equal(container.read(data)[0].affine, a)


def test_crc_catches_any_single_bit_flip():
    data = container.write(header2d(), b"payload")
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x10
        with pytest.raises(SgcFormatError):
            container.read(bytes(flipped))


def test_truncation_is_refused():
    data = container.write(header2d(), b"payload")
    for n in range(len(data)):
        with pytest.raises(SgcFormatError, match="truncated|CRC|magic"):
            container.read(data[:n])


@pytest.mark.parametrize("offset, value, field", [
    (0, ord("X"), "magic"),
    (2, 2, "version"),
    (3, 0x20, "reserved flag"),
    (3, 0x10, "reserved flag"),    # compact geometry without geometry
    (10, 0x01, "layout"),          # ndim 1
    (10, 0x02 | (2 << 2), "channels"),  # 2D with 2 channels
    (10, 0x03 | (3 << 2), "channels"),  # 3D with 3 channels
    (11, 0x00, "image shape"),     # a side of 0 (first byte of the 2-byte varint 256)
])
def test_each_field_is_checked(offset, value, field):
    data = bytearray(container.write(header2d(), b"xyz"))
    data[offset] = value
    with pytest.raises(SgcFormatError, match=field):
        container.read(recrc(bytes(data)))


def _file(fields: bytes) -> bytes:
    return recrc(b"SG\x01\x00" + MID + fields + b"\0\0\0\0")


def test_varint_and_shape_limits():
    layout2d = bytes([2 | (1 << 2)])
    ok = layout2d + b"\x08\x08" + b"\x01\x02\x02"
    container.read(_file(ok))
    with pytest.raises(SgcFormatError, match="non-minimal"):
        container.read(_file(layout2d + b"\x88\x00\x08" + b"\x01\x02\x02"))
    with pytest.raises(SgcFormatError, match="longer than 3"):
        container.read(_file(layout2d + b"\xff\xff\xff\x01\x08" + b"\x01\x02\x02"))
    with pytest.raises(SgcFormatError, match="more than the limit|expected 1..65535"):
        container.read(_file(layout2d + b"\xff\xff\x03\xff\xff\x03" + b"\x01\x02\x02"))
    with pytest.raises(SgcFormatError, match="latent channels"):
        container.read(_file(layout2d + b"\x08\x08" + b"\x41\x02\x02"))
    with pytest.raises(SgcFormatError, match="latent shape"):
        container.read(_file(layout2d + b"\x08\x08" + b"\x40\x80\x20\x80\x20"))
    with pytest.raises(SgcFormatError, match="latent shape\\[0\\]"):
        container.read(_file(layout2d + b"\x08\x08" + b"\x01\x00\x02"))


def test_geometry_must_be_finite_and_metadata_valid():
    base = bytes([2 | (1 << 2)]) + b"\x08\x08\x01\x02\x02"
    nan = np.full(12, np.nan, "<f4").tobytes()
    with pytest.raises(SgcFormatError, match="geometry"):
        container.read(recrc(b"SG\x01\x01" + MID + base + nan + b"\0\0\0\0"))
    with pytest.raises(SgcFormatError, match="metadata"):
        container.read(recrc(b"SG\x01\x02" + MID + base + b"\x03abc" + b"\0\0\0\0"))
    import zstandard
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(b"[1, 2]")
    with pytest.raises(SgcFormatError, match="not a JSON object"):
        container.read(recrc(b"SG\x01\x02" + MID + base + bytes([len(frame)]) + frame
                             + b"\0\0\0\0"))


@pytest.mark.parametrize("text, message", [
    (b"{\"a\": " + b"[" * 1000 + b"]" * 1000 + b"}", "nests deeper than 16"),
    (b"{\"a\": " + b"[" * 100_000, "nests deeper than 16"),
    (b'{"a": NaN}', "not a zstd-compressed JSON object"),
    (b'{"a": 1e999}', "not a zstd-compressed JSON object"),  # it read as infinity
    (b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[["}', None),  # brackets in strings do not nest
    # The audit's file: a run of escaped quotes kept the depth check (a regular expression)
    # busy for hours; a 1 MiB one now takes a linear pass, then fails to parse.
    (b'{"a":"' + b'\\"' * ((1 << 19) - 8), "not a zstd-compressed JSON object"),
    (b'{"a":"\\\\", "b": [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]}', "nests deeper than 16"),
])
def test_metadata_depth_and_constants_are_checked_before_parsing(text, message):
    import zstandard
    base = bytes([2 | (1 << 2)]) + b"\x08\x08\x01\x02\x02"
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(text)
    n = len(frame)
    varint = bytes([n]) if n < 128 else bytes([(n & 0x7F) | 0x80, n >> 7])
    data = recrc(b"SG\x01\x02" + MID + base + varint + frame + b"\0\0\0\0")
    if message is None:
        assert container.read(data)[0].metadata == {"a": "[" * 24}
    else:
        with pytest.raises(SgcFormatError, match=message):
            container.read(data)


def test_writer_refuses_what_the_reader_would():
    nested = {"a": 1}
    for _ in range(20):
        nested = {"a": nested}
    for metadata, message in ((nested, "nests deeper"), ({"a": float("nan")}, "Out of range")):
        with pytest.raises(ValueError, match=message):
            container.write(Header(model_id=MID, shape=(8, 8), channels=1,
                                   latent_shape=(1, 2, 2), metadata=metadata), b"")


@settings(max_examples=300, deadline=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_files_only_raise_sgc_errors(data):
    """Random edits, with and without a repaired CRC, never escape as other exceptions."""
    affine = np.eye(4)
    base = container.write(Header(model_id=MID, shape=(35, 51, 35), channels=1,
                                  latent_shape=(2, 8, 12, 8), source="nifti", affine=affine,
                                  metadata={"k": "v"}), bytes(range(40)))
    blob = bytearray(base)
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        i = data.draw(st.integers(0, max(0, len(blob) - 1)))
        if op == "flip" and blob:
            blob[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and blob:
            blob[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del blob[i:i + data.draw(st.integers(1, 8))]
        else:
            blob[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    candidates = [bytes(blob)]
    if len(blob) >= 4:
        candidates.append(recrc(bytes(blob)))
    for candidate in candidates:
        try:
            container.read(candidate)
        except SgcError:
            pass


def test_headers_with_geometry_and_metadata_compare_and_hash_by_value():
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    h = Header(model_id=MID, shape=(35, 51, 40), channels=1, latent_shape=(2, 9, 13, 10),
               source="nifti", affine=affine, metadata={"site": "A", "n": 3})
    got, _ = container.read(container.write(h, b""))
    assert got == h and hash(got) == hash(h) and len({got, h}) == 1
    moved = affine.copy()
    moved[0, 3] = 1.0
    assert Header(**{**h.__dict__, "affine": moved}) != h
    assert Header(**{**h.__dict__, "metadata": {"n": 3, "site": "B"}}) != h
    assert Header(**{**h.__dict__, "affine": None}) != h and h != "not a header"


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(alphabet='a"\\[]{}'),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(alphabet='k"\\[{', max_size=3), inner,
                                      max_size=3), max_leaves=30))
def test_json_depth_is_the_nesting_a_parser_finds(value):
    """Brackets inside strings, escaped quotes and escaped backslashes included."""
    def depth(v):  # by the parsed value
        children = list(v.values()) if isinstance(v, dict) else v if isinstance(v, list) \
            else None
        return 0 if children is None else 1 + max(map(depth, children), default=0)
    assert container._json_depth(json.dumps(value).encode()) == depth(value)


def test_metadata_is_one_frame_and_nothing_after_it():
    import zstandard
    base = bytes([2 | (1 << 2)]) + b"\x08\x08\x01\x02\x02"
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(b'{"a": 1}')
    for section, ok in ((frame, True), (frame + frame, False), (frame + b"\0", False)):
        data = recrc(b"SG\x01\x02" + MID + base + bytes([len(section)]) + section
                     + b"\0\0\0\0")
        if ok:
            assert container.read(data)[0].metadata == {"a": 1}
        else:
            with pytest.raises(SgcFormatError, match="metadata is not a zstd-compressed"):
                container.read(data)
