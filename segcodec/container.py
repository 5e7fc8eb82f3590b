"""Reading and writing ``.sgc`` files: the header sections (format_spec.md §1-§4).

The reader validates every field against the range the spec states before anything is
allocated from it, and raises ``SgcFormatError`` naming the field.  Varints, the geometry
section and the CRC are ``wire``'s, shared with the label stream.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zstandard

from . import wire
from .errors import InputError, SgcFormatError, os_error

MAGIC = b"SG"  # §1.1
VERSION = 1  # §1.2
MODEL_ID_BYTES = 6  # §1.4
SOURCE_KINDS = ("array", "raster", "nifti", "dicom")  # §1.3 bits 2-3
MAX_PIXELS = 1 << 26  # §1.6
MAX_SIDE = {2: 65535, 3: 4096}  # §1.6
MAX_LATENT_CHANNELS = 64  # §1.7
MAX_LATENT_SIDE = 4096  # §1.7
MAX_LATENT_BITS = 1 << 24  # §1.7
MAX_METADATA_BYTES = 65536  # §3
MAX_METADATA_JSON = 1 << 20  # §3
MIN_FILE_BYTES = 19  # §1: every fixed field, one-byte varints, empty payload


@dataclass(frozen=True)
class Header:
    """Everything in a ``.sgc`` file but the payload."""
    model_id: bytes
    shape: tuple[int, ...]
    channels: int
    latent_shape: tuple[int, ...]
    source: str = "array"
    affine: np.ndarray | None = None  # 4x4 float64, or None if no geometry section
    metadata: dict | None = None
    header_bytes: int = field(default=0, compare=False)  # everything but the payload

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _key(self) -> tuple:
        # The affine (an array) and the metadata (a dict) by value, so headers compare and hash.
        affine = None if self.affine is None else tuple(np.asarray(self.affine).ravel().tolist())
        metadata = None if self.metadata is None else json.dumps(self.metadata, sort_keys=True)
        return (self.model_id, tuple(self.shape), self.channels, tuple(self.latent_shape),
                self.source, affine, metadata)

    def __eq__(self, other) -> bool:
        return isinstance(other, Header) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def to_dict(self) -> dict:
        return {"format_version": VERSION, "model_id": self.model_id.hex(),
                "shape": list(self.shape), "channels": self.channels,
                "latent_shape": list(self.latent_shape), "source": self.source,
                "affine": None if self.affine is None else self.affine.tolist(),
                "metadata": self.metadata, "header_bytes": self.header_bytes}


def check_image_shape(shape, channels: int, error=SgcFormatError) -> None:
    """§1.5-§1.6: the ranges a shape must satisfy, raising ``error`` naming the field."""
    ndim = len(shape)
    if ndim not in (2, 3):
        raise error(f"image must be 2D or 3D, got {ndim} spatial dimensions")
    if channels not in ((1, 3) if ndim == 2 else (1,)):
        raise error(f"channels = {channels}, expected "
                    f"{'1 or 3 for a 2D image' if ndim == 2 else '1 for a 3D volume'}")
    for i, s in enumerate(shape):
        if not 1 <= s <= MAX_SIDE[ndim]:
            raise error(f"image shape[{i}] = {s}, expected 1..{MAX_SIDE[ndim]}")
    if (pixels := math.prod(int(s) for s in shape)) > MAX_PIXELS:
        raise error(f"image has {pixels} pixels, "
                    f"more than the limit of {MAX_PIXELS}")


def write(header: Header, payload: bytes) -> bytes:
    """Header and payload -> a complete ``.sgc`` file (§1)."""
    ndim = header.ndim
    check_image_shape(header.shape, header.channels, ValueError)
    if len(header.model_id) != MODEL_ID_BYTES:
        raise ValueError("model id must be 6 bytes")
    flags, geometry = wire.geometry(header.affine)  # §2
    flags |= (bool(header.metadata) << 1) | (SOURCE_KINDS.index(header.source) << 2)
    out = bytearray(MAGIC)
    out += bytes([VERSION, flags]) + header.model_id
    out.append(ndim | (header.channels << 2))
    for s in (*header.shape, *header.latent_shape):
        out += wire.varint(s)
    out += geometry
    if header.metadata:  # §3
        try:
            text = json.dumps(header.metadata, separators=(",", ":"), sort_keys=True,
                              allow_nan=False).encode()
        except RecursionError:  # its cause is a thousand identical frames: leave it out
            raise ValueError("metadata nests too deep") from None
        if _json_depth(text) > MAX_METADATA_DEPTH:
            raise ValueError(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels")
        if len(text) > MAX_METADATA_JSON:
            raise ValueError("metadata is larger than 1 MiB as JSON")
        frame = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(text)
        if len(frame) > MAX_METADATA_BYTES:
            raise ValueError("compressed metadata is larger than 64 KiB")
        out += wire.varint(len(frame)) + frame
    out += payload  # §4
    return wire.with_crc(out)  # §1.8


def sgc_bytes(data) -> tuple[bytes, Path | None]:
    """A ``.sgc`` given as its bytes or as its file's path -> its bytes, and the path (None
    for bytes), which errors about it name; InputError for anything else."""
    if isinstance(data, (str, os.PathLike)):
        return read_file(data), Path(data)
    return _as_bytes(data), None


def _as_bytes(data) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"a .sgc file is bytes or a file's path, not {type(data).__name__}")
    return bytes(data)


def read_file(path) -> bytes:
    """The bytes of the ``.sgc`` file at ``path``; InputError, naming it, where it cannot be
    read (``read`` then checks what they hold)."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(os_error(exc, path)) from exc


def read(data: bytes) -> tuple[Header, bytes]:
    """A ``.sgc`` file -> (Header, payload); raises SgcFormatError naming the bad field."""
    data = _as_bytes(data)
    if len(data) < MIN_FILE_BYTES:
        raise SgcFormatError(f"truncated .sgc: {len(data)} bytes, a valid file has at least "
                             f"{MIN_FILE_BYTES}")
    if data[:2] != MAGIC:
        raise SgcFormatError("not a .sgc file: magic bytes are not 'SG'")
    if not wire.crc_matches(data):
        raise SgcFormatError("corrupted .sgc: CRC-32 mismatch (truncated or damaged file)")
    r = wire.Reader(data, len(data) - 4, ".sgc")
    r.take(2, "magic")
    version, flags = r.take(2, "version")
    if version != VERSION:
        raise SgcFormatError(f"unsupported .sgc version {version}; this reader knows {VERSION}")
    if flags & 0xE0 or (flags & 0x10 and not flags & 1):
        raise SgcFormatError(f"invalid .sgc: reserved flag bits set (flags = {flags:#04x})")
    model_id = r.take(MODEL_ID_BYTES, "model id")
    layout = r.take(1, "layout")[0]
    ndim, channels = layout & 3, (layout >> 2) & 15
    if layout >> 6 or ndim not in (2, 3):
        raise SgcFormatError(f"invalid .sgc: layout byte {layout:#04x} (ndim must be 2 or 3)")
    shape = tuple(r.varint(f"image shape[{i}]", 1, MAX_SIDE[ndim]) for i in range(ndim))
    check_image_shape(shape, channels)
    k = r.varint("latent channels", 1, MAX_LATENT_CHANNELS)
    grid = tuple(r.varint(f"latent shape[{i}]", 1, MAX_LATENT_SIDE) for i in range(ndim))
    if k * int(np.prod(grid, dtype=np.int64)) > MAX_LATENT_BITS:
        raise SgcFormatError(f"invalid .sgc: latent shape {(k, *grid)} exceeds "
                             f"{MAX_LATENT_BITS} bits")
    affine = r.geometry(flags)  # §2
    metadata = None
    if flags & 2:  # §3
        n = r.varint("metadata length", 1, MAX_METADATA_BYTES)
        metadata = _read_metadata(r.take(n, "metadata"))
    header = Header(model_id=model_id, shape=shape, channels=channels,
                    latent_shape=(k, *grid), source=SOURCE_KINDS[(flags >> 2) & 3],
                    affine=affine, metadata=metadata, header_bytes=r.pos + 4)
    return header, data[r.pos:r.end]


MAX_METADATA_DEPTH = 16  # §3: objects and arrays nested at most this deep
_QUOTE, _BACKSLASH = ord('"'), ord("\\")


def _json_depth(text: bytes) -> int:
    """How deep objects and arrays nest in JSON text, found without parsing it (a parser
    recurses, and 100,000 brackets would exhaust its stack), in one linear pass: a quote
    opens or closes a string unless an odd run of backslashes escapes it, and brackets count
    outside strings.  (A regular expression over the strings took quadratic time on a run of
    escaped quotes: 31-48 s for a 75-byte file.)"""
    b = np.frombuffer(text, dtype=np.uint8)
    if b.size == 0:
        return 0
    index = np.arange(b.size)
    # where each run of backslashes before a position began: the last other byte's index
    last_other = np.maximum.accumulate(np.where(b != _BACKSLASH, index, -1))
    escapes = np.concatenate(([0], index[:-1] - last_other[:-1]))  # backslashes just before
    quotes = (b == _QUOTE) & (escapes % 2 == 0)
    inside = np.cumsum(quotes) % 2 == 1  # a string's bytes and its opening quote
    step = (np.isin(b, (ord("{"), ord("["))).astype(np.int64)
            - np.isin(b, (ord("}"), ord("]"))).astype(np.int64))
    step[inside] = 0
    return int(np.cumsum(step).max(initial=0))


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    """A JSON number as a float; 1e999 would be infinity, which JSON cannot say (§3)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is beyond a float's range")
    return value


def _read_metadata(frame: bytes) -> dict:
    try:
        params = zstandard.get_frame_parameters(frame)
        size = params.content_size
        if size <= 0 or size > MAX_METADATA_JSON:  # 0 = unknown size, also refused (§3)
            raise SgcFormatError("invalid .sgc: metadata frame must declare a size up to 1 MiB")
        # One frame and nothing after it: bytes past the frame would be data no reader sees
        text = zstandard.ZstdDecompressor().decompress(frame, max_output_size=size,
                                                       allow_extra_data=False)
        if _json_depth(text) > MAX_METADATA_DEPTH:
            raise SgcFormatError(f"invalid .sgc: metadata nests deeper than "
                                 f"{MAX_METADATA_DEPTH} levels")
        value = json.loads(text.decode("utf-8"), parse_constant=_no_constant,
                           parse_float=_finite)
    except SgcFormatError:
        raise
    except (zstandard.ZstdError, UnicodeDecodeError, ValueError) as exc:
        raise SgcFormatError(f"invalid .sgc: metadata is not a zstd-compressed JSON object "
                             f"({type(exc).__name__})") from exc
    if not isinstance(value, dict):
        raise SgcFormatError("invalid .sgc: metadata is not a JSON object")
    return value
