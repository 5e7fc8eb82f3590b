"""What the two wire formats share: the ``.sgc`` file (format_spec.md §1-§5, ``container``) and
the label stream (§7, ``labelcodec``).

- varints (the preamble of format_spec.md): little-endian base 128, at most 3 bytes, minimal;
- a ``Reader`` of named, range-checked fields, whose errors name the field and the format;
- the geometry section (§2): a 3x4 float32 affine, or 6 floats when it is axis-aligned;
- the CRC-32 trailer (§1.8);
- the range coder's words and its pinned model (§5.4): constriction's queue coder over 32-bit
  words, with ``Categorical(perfect=False)``.

format_spec.md is the contract; this module is how both formats keep to it in one place.
"""
from __future__ import annotations

import struct
import zlib

import constriction
import numpy as np

from .errors import SgcFormatError

VARINT_MAX_BYTES = 3
GEOMETRY = 0x01  # flag bit 0: a geometry section follows (§1.3, §7.1)
AXIS_ALIGNED = 0x10  # flag bit 4: it holds the 6 floats of an axis-aligned affine (§2.2)


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Reader:
    """Fields of ``data[:end]`` in order; ``SgcFormatError`` naming the field and the format
    ("truncated .sgc: ...", "invalid label stream: ...")."""

    def __init__(self, data: bytes, end: int, kind: str, pos: int = 0):
        self.data, self.pos, self.end, self.kind = data, pos, end, kind

    def invalid(self, message: str) -> SgcFormatError:
        return SgcFormatError(f"invalid {self.kind}: {message}")

    def take(self, n: int, name: str) -> bytes:
        if self.pos + n > self.end:
            raise SgcFormatError(f"truncated {self.kind}: {name} runs past the end")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def varint(self, name: str, lo: int, hi: int) -> int:
        value = 0
        for i in range(VARINT_MAX_BYTES):
            byte = self.take(1, name)[0]
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if i and byte == 0:
                    raise self.invalid(f"{name} is a non-minimal varint")
                break
        else:
            raise self.invalid(f"{name} varint is longer than {VARINT_MAX_BYTES} bytes")
        if not lo <= value <= hi:
            raise self.invalid(f"{name} = {value}, expected {lo}..{hi}")
        return value

    def geometry(self, flags: int) -> np.ndarray | None:
        """§2: the affine a geometry section holds, as 4x4 float64; None without one."""
        if not flags & GEOMETRY:
            return None
        compact = bool(flags & AXIS_ALIGNED)
        values = np.frombuffer(self.take(24 if compact else 48, "geometry"),
                               dtype="<f4").astype(np.float64)
        if not np.isfinite(values).all():
            raise self.invalid("geometry holds a non-finite number")
        affine = np.eye(4)
        if compact:  # §2.2
            affine[:3, :3] = np.diag(values[:3])
            affine[:3, 3] = values[3:]
        else:  # §2.1
            affine[:3] = values.reshape(3, 4)
        return affine


def geometry(affine) -> tuple[int, bytes]:
    """§2: (flag bits, section bytes) for an affine, or (0, b"") for None."""
    if affine is None:
        return 0, b""
    a = np.asarray(affine, dtype=np.float64)[:3, :4].astype("<f4")
    if not np.isfinite(a).all():
        raise ValueError("affine must be finite")
    linear = a[:, :3]
    if np.count_nonzero(linear - np.diag(np.diag(linear))) == 0:
        return GEOMETRY | AXIS_ALIGNED, np.concatenate([np.diag(linear), a[:, 3]]).tobytes()
    return GEOMETRY, a.tobytes()


def with_crc(body: bytes) -> bytes:
    """§1.8: the body followed by its CRC-32, little-endian."""
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def crc_matches(data: bytes) -> bool:
    return zlib.crc32(data[:-4]) == struct.unpack("<I", data[-4:])[0]


def coder_model():
    # perfect=False is part of both bitstreams (§5.4, §7.5): it selects constriction's fast
    # quantisation of the probabilities, which the decoder must repeat exactly.
    return constriction.stream.model.Categorical(perfect=False)


def coded_bytes(encoder) -> bytes:
    """A range encoder's words as big-endian bytes (§4)."""
    return encoder.get_compressed().astype(">u4").tobytes()


def decoder_for(payload: bytes):
    """A range decoder over payload bytes, zero-padded to whole words (§4)."""
    padded = bytes(payload) + b"\0" * (-len(payload) % 4)
    return constriction.stream.queue.RangeDecoder(
        np.frombuffer(padded, dtype=">u4").astype(np.uint32))
