"""The codecs the bench compares, each one ``Codec`` class in one registry (``CODECS``).

``rate``, ``speed`` and ``latency`` iterate over ``CODECS``: adding a codec to them is adding
one class at the end of this file.  First, the traditional codecs at their best low-rate
settings and the lossless reference sizes, as pure functions that the classes wrap.

Every function is pure and deterministic.  Byte counts are whole files: what a user would
store or send, minus only what no decoder needs (OpenJPEG's comment marker, x264's SEI
version string).  The decoders are told the original ``shape`` and ``dtype`` out of band, as
the container formats' few header bytes would carry them.

2D images are (H, W, 3) RGB or (H, W) gray uint8.  3D volumes are (D, H, W) of any real
dtype; they are scaled to 8 bits by their min and max, which travel as two float32 numbers
(``SIDE_BYTES``, counted in the returned bytes).
"""
from __future__ import annotations

import gzip
import io
import json
import math
import os
import re
import struct
import sys
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

import segcodec
from segcodec import api, container, entropy, labelcodec, modelfiles, zoo
from segcodec.coder import Coder
from segcodec.train import data as training_data
from segcodec.train import loop, recipes
from segcodec.transforms import labels_from_logits

from .common import (CHANNELS, LABELS, NDIM, REPO, RESULTS, ROOTS, Sample, Segmentor, checkpoint,
                     n_classes, untrained)

SIDE_BYTES = 8  # float32 min and max of a volume, to undo the 8-bit scaling
_COM = b"\xff\x64"  # JPEG 2000 comment marker
_SOT = b"\xff\x90"  # start of the first tile: the end of the main header


# 8-bit scaling of volumes

def _to_uint8(volume: np.ndarray) -> tuple[np.ndarray, bytes]:
    v = np.asarray(volume, dtype=np.float64)
    lo, hi = np.float32(v.min()), np.float32(v.max())
    span = float(hi) - float(lo)
    scaled = (v - float(lo)) * (255.0 / span) if span > 0 else np.zeros_like(v)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8), struct.pack("<2f", lo, hi)


def _from_uint8(q: np.ndarray, side: bytes, dtype) -> np.ndarray:
    lo, hi = struct.unpack("<2f", side)
    v = q.astype(np.float64) * ((float(hi) - float(lo)) / 255.0) + float(lo)
    dtype = np.dtype(dtype)
    if dtype.kind in "iub":
        info = np.iinfo(dtype) if dtype.kind != "b" else None
        v = np.rint(v) if info is None else np.clip(np.rint(v), info.min, info.max)
    return v.astype(dtype)


# JPEG 2000 (OpenJPEG through Pillow)

def mosaic_grid(shape) -> tuple[int, int]:
    """(rows, cols) of the slice mosaic of a (D, H, W) volume: near square, known from shape."""
    d = int(shape[0])
    cols = math.ceil(math.sqrt(d))
    return math.ceil(d / cols), cols


def _mosaic(q: np.ndarray) -> np.ndarray:
    d, h, w = q.shape
    rows, cols = mosaic_grid(q.shape)
    tiles = np.zeros((rows * cols, h, w), np.uint8)
    tiles[:d] = q
    return tiles.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w)


def _unmosaic(m: np.ndarray, shape) -> np.ndarray:
    d, h, w = shape
    rows, cols = mosaic_grid(shape)
    return m.reshape(rows, h, cols, w).transpose(0, 2, 1, 3).reshape(rows * cols, h, w)[:d]


def is_picture(shape, dtype) -> bool:
    """Whether an array is a 2D image as 2D codecs take it: (H, W) gray or (H, W, 3) RGB uint8."""
    shape = tuple(shape)
    return len(shape) == 2 or (len(shape) == 3 and shape[-1] == 3
                               and np.dtype(dtype) == np.uint8)


def to_picture(image: np.ndarray) -> tuple[np.ndarray, bytes]:
    """What a 2D image codec codes: a 2D image as uint8, or a volume scaled to 8 bits with its
    slices tiled into one gray mosaic; and the scaling's side bytes (none for a 2D image)."""
    image = np.asarray(image)
    if is_picture(image.shape, image.dtype):
        return np.ascontiguousarray(image, dtype=np.uint8), b""
    q, side = _to_uint8(image)
    return _mosaic(q), side


def from_picture(decode, data: bytes, shape, dtype) -> np.ndarray:
    """Undo ``to_picture`` around ``decode(codestream, mode)``, which gives the uint8 picture
    in Pillow's ``mode`` ("RGB" or "L")."""
    if is_picture(shape, dtype):
        return decode(data, "RGB" if len(shape) == 3 else "L").astype(dtype, copy=False)
    m = decode(data[SIDE_BYTES:], "L")
    return _from_uint8(_unmosaic(m, shape), data[:SIDE_BYTES], dtype)


def _pillow_decode(code: bytes, mode: str) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(code)).convert(mode))


def _strip_comment(code: bytes) -> bytes:
    """Drop COM marker segments of the main header (OpenJPEG writes a 39-byte version string)."""
    end = code.find(_SOT)
    out, pos = bytearray(code[:2]), 2  # SOC
    while pos < end:
        length = struct.unpack(">H", code[pos + 2:pos + 4])[0]
        if code[pos:pos + 2] != _COM:
            out += code[pos:pos + 2 + length]
        pos += 2 + length
    return bytes(out + code[end:])


def _j2k(image: np.ndarray, budget_bytes: float) -> bytes:
    from PIL import Image
    im = Image.fromarray(image)
    image_bits = 8 * image.size

    def save(budget):
        buf = io.BytesIO()
        # 9/7 wavelet, colour transform (RGB costs ~30% more without it), one quality layer
        # (more layers only add packet headers), OpenJPEG's default 6 resolutions (5 and 7-8
        # measured worse at 0.03-0.3 bpp on ISIC), raw codestream (a JP2 box adds ~85 bytes).
        im.save(buf, "JPEG2000", no_jp2=True, irreversible=True, quality_mode="rates",
                quality_layers=[image_bits / (8 * max(budget, 1.0))], mct=int(image.ndim == 3))
        return buf.getvalue()

    code = save(budget_bytes)
    stripped = _strip_comment(code)
    # OpenJPEG's rate control counts the comment it wrote; give its bytes back to the image.
    return _strip_comment(save(budget_bytes + len(code) - len(stripped)))


def jpeg2000_encode(image: np.ndarray, bpp: float) -> bytes:
    """A 2D uint8 image or a 3D volume at ``bpp`` bits per original pixel (or voxel).

    A volume is scaled to 8 bits and its slices (axis 0) tiled into one near-square mosaic
    coded as a single codestream: per-slice codestreams would spend ~120 header bytes each.
    OpenJPEG's rate control lands near the target but has a floor: ~140 bytes (0.017 bpp on
    256x256 RGB, image all but empty below ~0.03 bpp) of main header and packet headers;
    measure the bytes returned.
    """
    picture, side = to_picture(image)
    channels = 3 if picture.ndim == 3 else 1
    return side + _j2k(picture, bpp * np.asarray(image).size / channels / 8 - len(side))


def jpeg2000_decode(data: bytes, shape, dtype) -> np.ndarray:
    return from_picture(_pillow_decode, data, shape, dtype)


# H.264 (libx264 through PyAV)

def nal_units(stream: bytes) -> list[bytes]:
    """An Annex-B byte stream cut before each start code (3 or 4 bytes, kept with its unit).

    Emulation prevention keeps 00 00 00 and 00 00 01 out of a unit's bytes, so every match
    is a real start code.
    """
    cuts = [m.start() for m in re.finditer(b"\x00?\x00\x00\x01", stream)]
    return [stream[a:b] for a, b in zip(cuts, cuts[1:] + [len(stream)])]


def nal_type(unit: bytes) -> int:
    return unit[unit.index(b"\x00\x00\x01") + 3] & 0x1F


def strip_sei(stream: bytes) -> bytes:
    """Drop SEI NAL units (type 6): x264 writes its version and every option as a ~650-byte
    SEI, which no decoder needs.  The other units keep their start codes as they were."""
    return b"".join(u for u in nal_units(stream) if nal_type(u) != 6)


def _pad_even(frames: np.ndarray) -> np.ndarray:
    """Edge-pad H and W to even (4:2:0 needs it; x264 macroblocks prefer it anyway)."""
    h, w = frames.shape[1:3]
    pad = [(0, 0), (0, h % 2), (0, w % 2)] + [(0, 0)] * (frames.ndim - 3)
    return np.pad(frames, pad, mode="edge") if h % 2 or w % 2 else frames


# cpu-independent=1: x264 propagates its macroblock tree (mbtree, on in preset placebo) with
# its C code rather than this CPU's SIMD; all other SIMD stays.  The AVX-512 propagation
# (mbtree_propagate_list, seen in x264 cores 164 and 165) takes macroblocks 8 at a time and
# also adds in the entries past the end of a row that is not a multiple of 8 macroblocks
# (128 pixels) wide; on the last row those lie past the end of its buffers, in uninitialised
# heap.  So on AVX-512 CPUs the per-macroblock quantisers of a multi-frame stream, and with
# them its bytes (~2%) and decoded frames, changed with whatever the process's heap held; a
# lone intra frame has no tree to propagate and was not affected.  With it the bytes are
# those of x264's AVX2 and plain-C code paths, at the same speed.
X264_DETERMINISTIC = "cpu-independent=1"


def _av_encode(codec: str, frames: np.ndarray, pix_fmt: str, in_fmt: str,
               options: dict) -> bytes:
    """``frames`` (uint8, N frames of ``in_fmt``) through PyAV's encoder ``codec`` as
    ``pix_fmt``: the raw stream its packets make."""
    import av
    ctx = av.CodecContext.create(codec, "w")
    ctx.height, ctx.width = frames.shape[1:3]
    ctx.pix_fmt = pix_fmt
    ctx.time_base = Fraction(1, 25)
    ctx.framerate = Fraction(25)
    ctx.options = options
    out = bytearray()
    for i, f in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format=in_fmt)
        frame.pts = i
        for packet in ctx.encode(frame if in_fmt == pix_fmt else frame.reformat(format=pix_fmt)):
            out += bytes(packet)
    for packet in ctx.encode(None):
        out += bytes(packet)
    return bytes(out)


def _av_frames(decoder: str, data: bytes) -> list:
    import av
    ctx = av.CodecContext.create(decoder, "r")
    frames = []
    for packet in ctx.parse(data) + ctx.parse(None):
        frames += ctx.decode(packet)
    return frames + ctx.decode(None)


def _x264(frames: np.ndarray, crf: int, pix_fmt: str, in_fmt: str, options: dict) -> bytes:
    """The raw Annex-B stream, SEI included."""
    # threads=1: x264's sliced/frame threads change the stream with the core count (the SEI
    # confirms threads=1 lookahead_threads=1 sliced_threads=0).
    params = ":".join(filter(None, [X264_DETERMINISTIC, options.get("x264-params")]))
    return _av_encode("libx264", frames, pix_fmt, in_fmt,
                      {"crf": str(crf), "threads": "1", **options, "x264-params": params})


def _luma(frame) -> np.ndarray:
    plane = frame.planes[0]
    rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
    return rows[:frame.height, :frame.width]


H264_RGB_PIX_FMT = "yuv444p"  # see h264_encode
X264_OPTIONS = {"preset": "placebo", "tune": "psnr"}


def _video_encode(image: np.ndarray, code) -> bytes:
    """A 2D uint8 image as one frame, or a (D, H, W) volume scaled to 8 bits as D gray frames
    (slices along axis 0, so inter prediction uses the neighbouring slice), through
    ``code(frames, rgb)``.  Odd sides are edge-padded to even (4:2:0 needs it) and cropped
    back by ``_video_decode``."""
    image = np.asarray(image)
    if is_picture(image.shape, image.dtype):
        return code(_pad_even(np.asarray(image, np.uint8)[None]), image.ndim == 3)
    q, side = _to_uint8(image)
    return side + code(_pad_even(q), False)


def _video_decode(decoder: str, data: bytes, shape, dtype) -> np.ndarray:
    shape = tuple(shape)
    if is_picture(shape, dtype):
        (frame,) = _av_frames(decoder, data)
        if len(shape) == 3:
            return frame.to_ndarray(format="rgb24")[:shape[0], :shape[1]]
        return _luma(frame)[:shape[0], :shape[1]].astype(dtype)
    q = np.stack([_luma(f) for f in _av_frames(decoder, data[SIDE_BYTES:])])
    return _from_uint8(q[:, :shape[1], :shape[2]], data[:SIDE_BYTES], dtype)


def h264_encode(frames: np.ndarray, crf: int) -> bytes:
    """A 2D uint8 image as one intra frame, or a (D, H, W) volume as D gray frames, at ``crf``.

    preset placebo (x264's best rate-distortion; speed is not what is compared here), tune
    psnr (psy tuning spends bits on texture, not on the edges a segmentor needs), SEI
    stripped.  RGB is coded as yuv444p (High 4:4:4): on the ISIC fixtures at CRF 51-35 it
    beat yuv420p by ~0.1-0.2 dB PSNR at equal bytes, and tune psnr/ssim beat stillimage and
    none by up to 2x in bytes at equal PSNR below 0.05 bpp.  Volumes are scaled to 8 bits
    and coded as 4:0:0 gray (no chroma to pay for).
    """
    def code(frames, rgb):
        return strip_sei(_x264(frames, crf, H264_RGB_PIX_FMT if rgb else "gray",
                               "rgb24" if rgb else "gray", X264_OPTIONS))
    return _video_encode(frames, code)


def h264_decode(data: bytes, shape, dtype) -> np.ndarray:
    return _video_decode("h264", data, shape, dtype)


# HEVC (libx265 through PyAV)

# info=0: no SEI with x265's version and options (what strip_sei does for x264).  One thread
# (pools, frame-threads), as x264 runs here.
X265_OPTIONS = {"preset": "placebo", "tune": "psnr"}
X265_PARAMS = "info=0:log-level=none:pools=1:frame-threads=1"


X265_MIN_SIDE = 64  # its largest coding tree unit


def hevc_encode(image: np.ndarray, crf: int) -> bytes:
    """A 2D uint8 image as one intra frame, or a volume as gray frames, through x265 at
    ``crf`` (preset placebo, tune psnr).  RGB as yuv444p (Main 4:4:4), gray as 4:2:0 with
    flat chroma.  Frames narrower or shorter than ``X265_MIN_SIDE`` are edge-padded to it
    (cropped back on decoding): x265 4.2 (PyAV 18) corrupted the heap on the 42x48
    hippocampus slices (glibc: ``free(): invalid next size``; with any preset, CTU size or
    thread setting, in 4:0:0 and 4:2:0), and not from 64x64 up.

    Not bit-exact for volumes: x265's inter prediction on frames this small depends on
    memory it did not write.  The same 64x64-padded hippocampus volume coded five times in
    one process gave up to 5 different sizes within 2% (CRF 30; one thread, ``asm=0``,
    merange 16, no B-frames: the same); single intra frames (2D) are exact.  Padding to
    128x128 made it exact but cost 33-48% more bytes, so the rows carry the jitter instead
    (a mean over 40 volumes)."""
    def code(frames, rgb):
        short = [(0, 0)] + [(0, max(0, X265_MIN_SIDE - n)) for n in frames.shape[1:3]]
        frames = np.pad(frames, short + [(0, 0)] * (frames.ndim - 3), mode="edge")
        return _av_encode("libx265", frames, "yuv444p" if rgb else "yuv420p",
                          "rgb24" if rgb else "gray",
                          {"crf": str(crf), **X265_OPTIONS, "x265-params": X265_PARAMS})
    return _video_encode(image, code)


def hevc_decode(data: bytes, shape, dtype) -> np.ndarray:
    return _video_decode("hevc", data, shape, dtype)


# AV1 (SVT-AV1 through PyAV, decoded by dav1d)

SVTAV1_PRESET = 0  # its slowest: ~0.1-0.2 dB over preset 2 at equal bytes on ISIC, 6x the time
SVTAV1_PARAMS = "lp=1"  # one thread: the bytes of a multi-threaded SVT-AV1 may vary


def av1_encode(image: np.ndarray, crf: int) -> bytes:
    """A 2D uint8 image as one key frame, or a volume as gray frames, through SVT-AV1 at
    ``crf`` (its PSNR tune, ``SVTAV1_PRESET``): the raw low-overhead OBU stream, with no
    container (an AVIF or IVF one would add its boxes).  SVT-AV1 takes 4:2:0 only."""
    # SVT-AV1 prints its whole configuration to stderr for every stream unless told not to
    # (its environment, read when an encoder starts: 1 keeps errors only).
    os.environ.setdefault("SVT_LOG", "1")

    def code(frames, rgb):
        return _av_encode("libsvtav1", frames, "yuv420p", "rgb24" if rgb else "gray",
                          {"crf": str(crf), "preset": str(SVTAV1_PRESET),
                           "svtav1-params": SVTAV1_PARAMS})
    return _video_encode(image, code)


def av1_decode(data: bytes, shape, dtype) -> np.ndarray:
    return _video_decode("libdav1d", data, shape, dtype)


# WebP (libwebp through Pillow)

def webp_encode(image: np.ndarray, quality: int) -> bytes:
    """Lossy WebP (VP8, 4:2:0) at ``quality``, method 6 (libwebp's slowest search); a volume
    is coded as JPEG-2000 codes it, one gray mosaic of its slices."""
    from PIL import Image
    picture, side = to_picture(image)
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, "WEBP", quality=quality, method=6)
    return side + buf.getvalue()


def webp_decode(data: bytes, shape, dtype) -> np.ndarray:
    return from_picture(_pillow_decode, data, shape, dtype)


# Lossless reference sizes

def png_bytes(image: np.ndarray) -> bytes:
    """PNG at zlib level 9 with Pillow's filter search (optimize)."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def nifti_gz_bytes(volume: np.ndarray, affine) -> bytes:
    """The volume as a .nii.gz in its own dtype (gzip level 9, no timestamp)."""
    import nibabel as nib
    img = nib.Nifti1Image(np.asarray(volume), np.asarray(affine, dtype=np.float64))
    return gzip.compress(img.to_bytes(), compresslevel=9, mtime=0)


def zstd_bytes(array: np.ndarray) -> bytes:
    """Raw array bytes through zstd level 19 (a strong general-purpose lossless coder)."""
    import zstandard
    return zstandard.ZstdCompressor(level=19).compress(np.ascontiguousarray(array).tobytes())


# The codecs the bench compares: one class each, one registry

@dataclass
class Setup:
    """What a codec may need to get ready for one task of a rate run."""

    task: str
    samples: list[Sample]
    segmentor: Segmentor  # the reference trained on uncompressed images
    smoke: bool  # untrained seeded networks and fixtures/, no training set
    data: Path | None = None
    runs: Path | None = None
    cache: Path | None = None
    model_folders: list[Path] = field(default_factory=list)  # extra folders of .sgm models


class Codec:
    """A codec as the bench sees it: it codes a ``Sample`` to bytes at a setting, and decodes.

    ``output`` says what decoding gives and so how a rate point gets its labels:

    - ``"image"``: an image like ``sample.array``; the reference segmentor segments it.
    - ``"original"``: the input itself, bit for bit (a lossless reference): rate neither
      decodes nor segments it again, the original's labels and segmentation time stand.
    - ``"labels"``: ``segment(decode(data))`` (or ``decode(data)`` where ``segment`` is None)
      is the label map; the codec does its own segmentation.
    """

    name: str  # rate.json's codec column, --codecs, speed's operation names
    title: str  # for readers: plots, latency's and speed's tables
    output = "image"
    ndims: tuple[int, ...] = (2, 3)  # 2: RGB photographs, 3: volumes
    param: str | None = None  # the setting swept ("bpp", "crf"); None: one fixed setting
    sweep: tuple = ()  # its values in a full rate run, lowest rate first
    smoke_sweep: tuple = ()  # and in --smoke, where every codec point costs test time
    segment = None  # (decoded, sample) -> labels, for an output of "labels" that needs it
    segmentor: str | None = None  # rate.json's segmentor column of a "labels" codec
    # speed and latency time a peer against segcodec at the setting whose Dice in rate.json
    # is closest to segcodec's, else at ``fallback``.
    peer = False
    fallback = None
    short = ""  # speed's narrow byte columns
    implementation = ""  # the library that does the coding, for speed's text

    def ready(self, setup: Setup) -> "Codec | None":
        """This codec ready for ``setup.task``; None where it does not code its inputs."""
        return self if NDIM[setup.task] in self.ndims else None

    def settings(self, smoke: bool) -> tuple:
        return self.smoke_sweep if smoke else self.sweep

    def provenance(self, smoke: bool) -> dict:
        """What rate.json's "settings" records of this codec."""
        return {f"{self.name}_{self.param}": list(self.settings(smoke))} if self.param else {}

    def encode(self, sample: Sample, setting) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes, sample: Sample):
        raise NotImplementedError


class Lossless(Codec):
    """A lossless reference: only its size differs from the original's."""

    output = "original"
    sweep = smoke_sweep = ("lossless",)


class PNG(Lossless):
    name = title = "png"
    ndims = (2,)

    def encode(self, sample, setting):
        return png_bytes(sample.stored)

    def decode(self, data, sample):
        from PIL import Image
        return np.asarray(Image.open(io.BytesIO(data)))


class NiftiGz(Lossless):
    name = title = "nifti-gz"
    ndims = (3,)

    def encode(self, sample, setting):
        return nifti_gz_bytes(sample.stored, sample.affine)

    def decode(self, data, sample):
        import nibabel as nib
        return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(data)).dataobj)


class Zstd(Lossless):
    name = title = "zstd"

    def encode(self, sample, setting):
        return zstd_bytes(sample.stored)

    def decode(self, data, sample):
        import zstandard
        raw = zstandard.ZstdDecompressor().decompress(data)
        return np.frombuffer(raw, sample.stored.dtype).reshape(sample.stored.shape)


class _Functions(Codec):
    """A peer coded by two of this module's functions: ``encoder(array, setting)`` and
    ``decoder(data, shape, dtype)``."""

    encoder = decoder = None

    def encode(self, sample, setting):
        return type(self).encoder(sample.array, setting)

    def decode(self, data, sample):
        return type(self).decoder(data, sample.array.shape, sample.array.dtype)


class JPEG2000(_Functions):
    name, title, short, param = "jpeg2000", "JPEG-2000", "j2k", "bpp"
    sweep = (0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0)
    smoke_sweep = (0.05, 0.2)
    # the paper's mean JPEG-2000 rate on ISIC (0.12 bpp)
    peer, fallback = True, 0.12
    implementation = "OpenJPEG through Pillow"
    encoder, decoder = staticmethod(jpeg2000_encode), staticmethod(jpeg2000_decode)

    def provenance(self, smoke):
        return {"jpeg2000_target_bpp": list(self.settings(smoke))}


class H264(_Functions):
    name, title, short, param = "h264", "H.264", "h264", "crf"
    sweep = (51, 48, 45, 42, 39, 36, 33, 30, 25, 20)
    smoke_sweep = (45, 30)
    # the x264 CRF that lands nearest 0.12 bpp on the ISIC fixtures (0.08-0.10 bpp;
    # 0.43-0.46 bpp on the hippocampus ones)
    peer, fallback = True, 28
    implementation = "x264 through PyAV"
    encoder, decoder = staticmethod(h264_encode), staticmethod(h264_decode)

    def provenance(self, smoke):
        return {"h264_crf": list(self.settings(smoke)), "h264_options": X264_OPTIONS,
                "h264_rgb": H264_RGB_PIX_FMT}


class JPEGXL(Codec):
    """JPEG XL (libjxl through pillow-jxl-plugin), a bare codestream, at ``quality``.

    Effort 9, libjxl's slowest ordinary setting: on the ISIC fixtures 10 saved ~3% of the
    bytes at quality 0 and none at 30, for 3x the time.  One encoder thread, as OpenJPEG and
    x264 run here (the bytes do not depend on it).  Quality 0 is libjxl's largest distance
    (25), its floor: 561 bytes (0.068 bpp) on average over ISIC val's 256x256 images
    (rate.json).  A volume is coded as
    JPEG-2000 codes it: scaled to 8 bits, its slices tiled into one gray mosaic.
    """

    name, title, short, param = "jpegxl", "JPEG XL", "jxl", "quality"
    sweep = (0, 5, 10, 20, 30, 50, 70, 90)
    smoke_sweep = (10, 50)
    effort = 9
    implementation = "libjxl through pillow-jxl-plugin"

    def provenance(self, smoke):
        return {**super().provenance(smoke), "jpegxl_effort": self.effort}

    def encode(self, sample, quality):
        from PIL import Image
        import pillow_jxl  # noqa: F401  (registers JXL with Pillow)
        picture, side = to_picture(sample.array)
        buf = io.BytesIO()
        Image.fromarray(picture).save(buf, "JXL", quality=quality, effort=self.effort,
                                      num_threads=1)
        return side + buf.getvalue()

    def decode(self, data, sample):
        import pillow_jxl  # noqa: F401
        return from_picture(_pillow_decode, data, sample.array.shape, sample.array.dtype)


class HEVC(_Functions):
    name, title, short, param = "hevc", "HEVC", "hevc", "crf"
    sweep = (51, 48, 45, 42, 39, 36, 33, 30, 25, 20)
    smoke_sweep = (45, 30)
    implementation = "x265 through PyAV"
    encoder, decoder = staticmethod(hevc_encode), staticmethod(hevc_decode)

    def provenance(self, smoke):
        return {**super().provenance(smoke), "hevc_options": X265_OPTIONS,
                "hevc_params": X265_PARAMS}


class AV1(_Functions):
    name, title, short, param = "av1", "AV1", "av1", "crf"
    sweep = (63, 60, 57, 54, 50, 45, 40, 35, 30, 20)
    smoke_sweep = (60, 35)
    implementation = "SVT-AV1 through PyAV, dav1d decoding"
    encoder, decoder = staticmethod(av1_encode), staticmethod(av1_decode)

    def provenance(self, smoke):
        return {**super().provenance(smoke), "av1_preset": SVTAV1_PRESET,
                "av1_params": SVTAV1_PARAMS}


class WebP(_Functions):
    name, title, short, param = "webp", "WebP", "webp", "quality"
    sweep = (0, 5, 10, 20, 30, 50, 70, 90)
    smoke_sweep = (5, 50)
    implementation = "libwebp through Pillow"
    encoder, decoder = staticmethod(webp_encode), staticmethod(webp_decode)


class Segcodec(Codec):
    """segcodec's models through its public API: each installed model (and each in
    ``--models`` folders) for the task is one setting, named by its training recipe."""

    name = title = "segcodec"
    output = "labels"

    def __init__(self, models: dict | None = None):
        self.models = models or {}  # setting -> zoo.Model

    def ready(self, setup):
        models = segcodec_models(setup.task, setup.model_folders)
        names = model_labels(models)
        return Segcodec({names[m.model_id.hex()]: m for m in models})

    def settings(self, smoke):
        return tuple(self.models)

    def encode(self, sample, setting):
        # Every case is coded, as every peer codes it: the domain check guards a user's
        # files, and a held-out case of one's own data may fall outside it.
        return segcodec.encode(sample.array, model=self.models[setting], kind=sample.kind,
                               affine=sample.affine, force=True)

    def decode(self, data, sample):
        return segcodec.decode(data)

    def segment(self, decoded, sample):
        return api.labels_from_latents(decoded, "cpu")


class AutoSeg(Codec):
    """Auto/Seg: C and an image decoder; the reconstruction is segmented by the seg reference.

    Its latents are range coded under an integer table fitted on the training latents, and a
    file is charged the header a segcodec file of the same input has (CRC included).
    """

    name, title = "autoseg", "Auto/Seg"
    output, segmentor = "labels", "seg"

    def __init__(self, coder: Coder | None = None, net=None, cfg=None,
                 seg: Segmentor | None = None):
        self.coder, self.net, self.cfg, self.seg = coder, net, cfg, seg

    def ready(self, setup):
        task, seg = setup.task, setup.segmentor
        if setup.smoke:  # no training set: fit the table on the fixtures themselves
            net, cfg = untrained(f"{task}-autoseg", seg.cfg.normalisation)
            x = torch.cat([seg.grid(s.chw) for s in setup.samples])
        else:
            path = checkpoint(setup.runs, task, "autoseg")
            if not path.exists():
                print(f"note: {path} missing; no Auto/Seg row for {task}", file=sys.stderr)
                return None
            net, cfg = loop.load_checkpoint(path)
            if cfg.normalisation != seg.cfg.normalisation:
                print(f"note: {task}-autoseg and {task}-seg normalise differently; the seg "
                      f"net gets Auto/Seg's reconstruction as is", file=sys.stderr)
            x = training_data.cached_set(cfg, setup.data, "train", setup.cache)[0]
        coder = Coder.of_network(net, cfg.normalisation, cfg.arch)
        table = entropy.fit_table(coder.batch_latents(x), cfg.arch["ndim"])
        return AutoSeg(replace(coder, table=table), net, cfg, seg)

    def settings(self, smoke):
        return (self.cfg.name,)

    def encode(self, sample, setting):
        return self.coder.encode(sample.chw, shape=sample.truth.shape,
                                 channels=sample.chw.shape[0], affine=sample.affine)

    @torch.no_grad()
    def decode(self, data, sample):
        z = self.coder.read_latents(*container.read(data))
        return self.net.reconstructor(torch.from_numpy(z.astype(np.float32))[None])

    @torch.no_grad()
    def segment(self, recon, sample):
        return labels_from_logits(self.seg.net(recon), sample.truth.shape)


class SendLabels(Codec):
    """Segment on the client and send the labels, losslessly coded."""

    name, title = "labels", "send the labels (lossless)"
    output = "labels"
    sweep = smoke_sweep = ("lossless",)

    def encode(self, sample, setting):
        return labelcodec.encode(sample.truth, n_classes(sample.task), affine=sample.affine)

    def decode(self, data, sample):
        return labelcodec.decode(data).labels


CODECS: tuple[Codec, ...] = (PNG(), NiftiGz(), Zstd(), JPEG2000(), H264(), JPEGXL(), HEVC(),
                             AV1(), WebP(), Segcodec(), AutoSeg(), SendLabels())


def by_name(name: str) -> Codec:
    return next(c for c in CODECS if c.name == name)


def peers() -> list[Codec]:
    """The codecs that speed and latency time against segcodec."""
    return [c for c in CODECS if c.peer]


# segcodec's models for a task

def segcodec_models(task: str, folders: list[Path]) -> list[zoo.Model]:
    """Installed models plus those in ``folders``, for the task's ndim and channel count;
    for a registered data set, only those that segment its labels."""
    known = {d.resolve() for d in zoo.model_dirs()}
    extra = [str(f) for f in folders if f.is_dir() and f.resolve() not in known]
    for f in folders:
        if not f.is_dir():
            print(f"note: model folder {f} missing", file=sys.stderr)
    if extra:
        old = os.environ.get(zoo.PATH_ENV, "")
        os.environ[zoo.PATH_ENV] = os.pathsep.join([p for p in [old, *extra] if p])
        zoo.reload()
    channels = CHANNELS[task]
    deprecated = set(modelfiles.read_index()["deprecated"])  # kept to decode old files only
    return [m for m in sorted(zoo.installed().values(), key=lambda m: m.name)
            if m.ndim == NDIM[task] and m.in_channels == channels and m.name not in deprecated
            and (task not in ROOTS or list(m.labels) == LABELS[task])]


def model_labels(models: list[zoo.Model]) -> dict[str, str]:
    """Model id -> its training recipe (e.g. ``isic-d4-r2``) where that is a recipe name and
    unique among ``models``, else the model's name."""
    def recipe(m):
        r = str(m.manifest.training.get("recipe", ""))
        try:
            recipes.config(r)
            return r
        except ValueError:  # e.g. the provisional models' trainer module
            return None
    found = [recipe(m) for m in models]
    return {m.model_id.hex(): r if r and found.count(r) == 1 else m.name
            for m, r in zip(models, found)}


# Peers at matched Dice

def peer_settings(rate_path: Path = RESULTS / "rate.json") -> dict:
    """Per task and peer: the rate setting whose mean Dice in rate.json is closest to that of
    the installed default segcodec model (matched Dice); the peer's fallback, flagged, where
    it has none.
    """
    result = json.loads(rate_path.read_text()) if rate_path.exists() else {"rows": []}
    shown = rate_path.resolve()  # relative to the checkout: no machine's path in a result
    shown = shown.relative_to(REPO) if shown.is_relative_to(REPO) else rate_path
    source = str(shown) + (" (smoke run: untrained networks)"
                               if result.get("settings", {}).get("smoke") else "")
    out = {}
    for task, ndim in NDIM.items():
        m = zoo.default_for(ndim)
        ours = [r for r in result["rows"] if r["task"] == task and r["codec"] == "segcodec"]
        # rate.json names a model by its training recipe or its name; without the default's
        # row nothing is matched (another model's Dice would be a wrong target)
        ours = [r for r in ours if r["setting"] in (m.name, m.manifest.training
                                                    .get("recipe"))]
        out[task] = {}
        for peer in peers():
            cand = [r for r in result["rows"] if r["task"] == task and r["codec"] == peer.name]
            if ours and cand:
                target = ours[0]["mean_dice"]
                best = min(cand, key=lambda r: abs(r["mean_dice"] - target))
                out[task][peer.name] = {
                    peer.param: best["setting"], "dice": best["mean_dice"],
                    "mean_bpp": best["mean_bpp"], "segcodec": ours[0]["setting"],
                    "segcodec_dice": target, "segcodec_bpp": ours[0]["mean_bpp"],
                    "matched": True, "source": source}
            else:
                out[task][peer.name] = {peer.param: peer.fallback, "matched": False,
                                        "source": f"fixed fallback: no {peer.name} row, or no "
                                                  f"row of {m.name}, for {task} in {rate_path}"}
    return out
