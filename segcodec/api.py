"""The public coding path: image -> C -> bits -> range coder -> .sgc, and .sgc -> labels.

Nothing here rebuilds an image: ``segment`` goes from the file's latents through g and s
straight to a label map at the input's size.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import backend, container, domain, modelfiles, orientation, zoo
from . import io as sgio
from .coder import Coder
from .container import Header
from .destinations import default_sgc_path, labels_destination, not_the_input, sidecar_path
from .errors import InputError, SgcFormatError, naming
from .inputs import photo_intensities

_DTYPE_KINDS = "biuf"  # bool, signed, unsigned, float


@dataclass
class Decoded:
    """A ``.sgc`` file's header and its entropy-decoded binary latents."""
    header: Header
    latents: np.ndarray
    model: zoo.Model


def _as_image(array, kind: str | None) -> tuple[np.ndarray, int]:
    """Validate an input array -> (channels-first array, ndim)."""
    try:
        array = np.asarray(array)
    except (ValueError, TypeError) as exc:
        raise InputError(f"input is not an array ({exc})") from exc
    if array.dtype.kind not in _DTYPE_KINDS:
        raise InputError(f"unsupported dtype {array.dtype}; use an integer, float or bool array")
    if array.size == 0:
        raise InputError(f"input array is empty (shape {array.shape})")
    if kind is None:
        if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (1, 3, 4):
            raise InputError(
                f"shape {array.shape} looks like a channels-first image; pass "
                f"np.moveaxis(image, 0, -1) for (H, W, {array.shape[0]}), or kind='3d' if it "
                "is a volume of 3 or 4 slices")
        # A last axis of 4 is taken as RGBA, to refuse it clearly rather than code a thin volume.
        if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 3, 4)):
            kind = "2d"
        elif array.ndim == 4 and array.shape[-1] == 1:
            array, kind = array[..., 0], "3d"
        else:
            kind = "3d"
    if kind == "2d":
        if array.ndim == 2:
            array = array[None]
        elif array.ndim == 3 and array.shape[-1] in (1, 3):
            array = array.transpose(2, 0, 1)  # channels first (moveaxis' checks cost more)
        elif array.ndim == 3:
            raise InputError(f"a 2D image must have 1 or 3 channels last, got shape "
                             f"{array.shape}" + (" (drop the alpha channel of RGBA)"
                                                 if array.shape[-1] == 4 else ""))
        else:
            raise InputError(f"a 2D image must be (H, W) or (H, W, C), got {array.ndim} "
                             f"dimensions")
    elif kind == "3d":
        if array.ndim != 3:
            raise InputError(f"a 3D volume must have 3 dimensions, got shape {array.shape}")
        array = array[None]
    else:
        raise InputError(f"kind must be '2d' or '3d', not {kind!r}")
    container.check_image_shape(array.shape[1:], array.shape[0], InputError)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError("input holds NaN or infinite values")
    return array, array.ndim - 1


def _pick_model(model, ndim: int) -> zoo.Model:
    if model is None:
        return zoo.default_for(ndim)
    picked = model if isinstance(model, zoo.Model) else zoo.find(str(model))
    if picked.ndim != ndim:
        raise InputError(f"model {picked.name} takes {picked.ndim}D input, got a {ndim}D image")
    return picked


def encode(image, *, model=None, kind: str | None = None, affine=None, geometry: bool = True,
           metadata: dict | None = None, source: str = "array", force: bool = False) -> bytes:
    """Compress an image or volume to ``.sgc`` bytes.

    image: (H, W) gray or (H, W, 3) RGB for 2D; (I, J, K) for 3D; or the path of an image
    file, read as ``encode_file`` reads it.  ``kind`` ("2d"/"3d") settles shapes that could
    be either.  Photographs: integers at their dtype's full range, floats in [0, 1].
    ``model`` is a name, hex id or ``zoo.Model``; by default the model the index names for
    the image's dimensionality.  ``affine`` (4x4) is stored as the geometry section;
    ``metadata`` (a JSON-able dict) as the metadata section.  ``geometry=False`` leaves the
    affine out of the file (24-48 bytes) but still checks the input by it: a volume must then
    be stored in the orientation its model codes volumes in (``reoriented`` brings it there),
    since nothing in the file could put its labels back in another voxel order.
    An input outside the model's domain (``segcodec.domain``) is refused unless ``force``.
    """
    if isinstance(image, (str, os.PathLike)):
        loaded = read_input(image, model=model)  # a file, read as encode_file reads it
        with naming(Path(image)):
            return encode(loaded.array, model=model, kind=kind or loaded.kind,
                          affine=loaded.affine if affine is None else affine,
                          geometry=geometry, metadata=metadata, source=loaded.source,
                          force=force)
    p = prepare(image, model=model, kind=kind, affine=affine, force=force)
    return encode_prepared(p, geometry=geometry, metadata=metadata, source=source)


def encode_prepared(p: Prepared, *, geometry: bool = True, metadata: dict | None = None,
                    source: str = "array", coder: Coder | None = None) -> bytes:
    """``encode`` after ``prepare``: ``compress`` and the file.  ``coder``: ``p.model``'s,
    with a hook (``bench speed`` times the stages so)."""
    if not geometry:
        _check_model_orientation(p.model, p.affine)
    coder = coder or Coder.of(p.model)
    z = compress(p, coder)
    try:
        return coder.write(z, shape=p.shape, channels=p.channels, source=source,
                           affine=p.affine if geometry else None, metadata=metadata or None)
    except (ValueError, TypeError) as exc:
        raise InputError(str(exc)) from exc


@dataclass
class Prepared:
    """An input made ready for C: checked, scaled, in the model's orientation and channels."""
    model: zoo.Model
    array: np.ndarray  # channels first, as C's normalisation takes it
    shape: tuple[int, ...]  # the input's own shape (what the header records)
    channels: int  # the input's channels
    affine: np.ndarray | None
    force: bool = False  # code it even where C's features say it is unlike the training data


def prepare(image, *, model=None, kind: str | None = None, affine=None,
            force: bool = False) -> Prepared:
    """The first stage of ``encode``: an array (not a path) checked against the format and
    the model (its intensity convention, domain and size), in the model's orientation."""
    array, ndim = _as_image(image, kind)
    m = _pick_model(model, ndim)
    if m.manifest.normalisation["kind"] == "fixed":
        array = photo_intensities(array, f"model {m.name}")
    affine = _checked_affine(affine)
    shape = tuple(array.shape[1:])
    ornt = _orientation(m, affine)
    if m.ndim == 3 and not m.manifest.orientation:
        _check_model_orientation(m, affine)  # coded as stored: it must be stored as trained
    array = orientation.to_model(array, ornt)
    if why := domain.oversize(shape, m.manifest, m.bounds):  # first: force does not lift it
        raise InputError(why + ", even with force")
    if array.dtype == np.uint8 and ndim == 2:
        # One channels-first copy of an 8-bit photograph (the caller's array interleaves its
        # channels), which the domain statistics and the normalisation then both read fast.
        # (Other dtypes keep their layout: photo_statistics' float sums are rounded in the
        # order it gives.  A volume's domain reads no values, and zscore copies it once.)
        array = np.ascontiguousarray(array)
    if not force:
        domain.check(array, orientation.model_spacing(affine, ornt), m.manifest.domain, m.name)
    channels = array.shape[0]
    if channels != m.in_channels:
        if channels == 1 and m.in_channels == 3:
            array = np.repeat(array, 3, axis=0)  # gray photograph -> RGB model
        else:
            raise InputError(f"model {m.name} takes {m.in_channels}-channel images, "
                             f"got {channels} channels")
    return Prepared(m, array, shape, channels, affine, force)


def read_input(path, volume: int | None = None, *, model=None) -> sgio.Loaded:
    """An image file (or DICOM series folder) as ``encode`` takes it; a photograph whose
    header declares a shape ``model`` (by default the 2D one) takes under no circumstances is
    refused before its pixels are decoded (a 215 KB PNG may declare 8192x8192)."""
    def check(shape):
        if why := domain.oversize(shape, (m := _pick_model(model, 2)).manifest, m.bounds):
            raise InputError(f"{path}: {why}, even with force")
    return sgio.read(path, volume, check_2d=check)


def _checked_affine(affine) -> np.ndarray | None:
    if affine is None:
        return None
    affine = np.asarray(affine, dtype=np.float64)
    # within float32's range: the geometry section (and so the orientation) stores float32
    if affine.shape != (4, 4) or not (np.abs(affine) <= np.finfo(np.float32).max).all():
        raise InputError("affine must be a finite 4x4 matrix of float32 values")
    if not _regular(orientation.stored_affine(affine)):
        raise InputError("the affine is singular (a voxel axis of length 0, or two along one "
                         "line): it places no voxel")
    return affine


def _regular(affine: np.ndarray) -> bool:
    """Whether an affine's voxel axes span space, as every image's do (format_spec §2)."""
    return bool(np.linalg.det(affine[:3, :3]) != 0)


def compress(p: Prepared, coder: Coder | None = None) -> np.ndarray:
    """The working grid, C (in numpy: ``compressor``) and the threshold: a prepared input's
    binary latents (uint8, (K, *grid)).  Unless forced, C's features must look like the
    training images' (``domain.check_appearance``).  ``coder``: ``p.model``'s, with a hook."""
    coder = coder or Coder.of(p.model)
    appearance = None if p.force else p.model.appearance
    activations = None if appearance is None else []
    z = coder.latents(coder.grid(p.array), activations)
    if appearance is not None:
        domain.check_appearance([a[None] for a in activations], appearance, p.model.name)
    return z


# The 3D models whose manifests predate ``orientation`` (hippocampus-v0, -v1) code volumes as
# they are stored, and were trained on the MSD's volumes, stored RAS.
LEGACY_ORIENTATION = "RAS"


def _check_model_orientation(m: zoo.Model, affine, where: str = "the volume") -> None:
    """InputError unless a volume with ``affine`` is stored in the orientation ``m`` codes
    volumes in: what a volume coded, or a source read, without the file's geometry must be,
    and any volume given to a model that does not reorient."""
    codes = m.manifest.orientation
    if m.ndim != 3 or affine is None or (codes and _orientation(m, affine) is None):
        return
    stored = orientation.codes(affine)
    if codes:
        raise InputError(f"{where} is stored in {stored} order, not {codes} as model {m.name} "
                         f"codes volumes; without its geometry its labels could not be put "
                         f"back in {stored} order: keep the geometry, or reorient it to "
                         f"{codes} first")
    if stored != LEGACY_ORIENTATION:
        raise InputError(f"{where} is stored in {stored} order; model {m.name} codes volumes "
                         f"as they are stored and was trained on {LEGACY_ORIENTATION} ones, so "
                         f"its labels would be wrong: use {zoo.default_for(3).name}, which "
                         f"reorients, or reorient it to {LEGACY_ORIENTATION} first")


def reoriented(image, affine, *, model=None, kind: str | None = None):
    """A volume and its affine permuted and flipped to the orientation ``model`` codes
    volumes in (format_spec.md §2.3), and ``restore``, which takes labels of the result
    back to the input's voxel order.  A caller that keeps the affine to itself codes the
    result with ``geometry=False`` (``segcodec send --no-geometry``).  Images come back as
    they are."""
    array, ndim = _as_image(image, kind)
    m = _pick_model(model, ndim)
    ornt = None if ndim != 3 else orientation.transform(
        _checked_affine(affine), m.manifest.orientation or LEGACY_ORIENTATION)
    if ornt is None:
        return image, affine, lambda labels: labels
    moved = orientation.to_model(array, ornt)[0]
    return moved, orientation.moved_affine(affine, ornt, array.shape[1:]), \
        lambda labels: orientation.to_input(labels, ornt)


def decode(data) -> Decoded:
    """``.sgc`` bytes (or a ``.sgc`` file's path) -> header and binary latents, bit-exact on
    any machine."""
    data, path = container.sgc_bytes(data)
    if path is not None:
        with naming(path):
            return decode(data)
    header, payload = container.read(data)
    m = zoo.get(header.model_id)
    if header.ndim != m.ndim or header.latent_shape != m.latent_shape:
        raise SgcFormatError(f"invalid .sgc: latent shape {header.latent_shape} does not match "
                             f"model {m.name} ({m.latent_shape})")
    if why := domain.oversize(header.shape, m.manifest, m.bounds):  # before any work
        raise SgcFormatError(f"invalid .sgc: {why}")
    if header.affine is not None and not _regular(header.affine):  # fails this file alone
        raise SgcFormatError("invalid .sgc: its geometry is singular (a voxel axis of length "
                             "0, or two along one line)")
    _orientation(m, header.affine, SgcFormatError)
    return Decoded(header, Coder.of(m).read_latents(header, payload), m)


def resolve_device(device="auto"):
    """"auto" (a CUDA GPU where there is one), "cpu", "cuda" or "cuda:N" as a torch.device;
    ``backend.MissingExtra`` where torch is not installed (g and s need it)."""
    backend.require_torch("segmenting")
    import torch
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise InputError(f"device must be auto, cpu, cuda or cuda:N, not {device!r}")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise InputError(f"--device {device} asked for, but no such CUDA GPU is available")
    return dev


def _orientation(m: zoo.Model, affine, error=InputError) -> np.ndarray | None:
    """The reorientation a model applies to an input with this affine (§2.3)."""
    if m.ndim != 3:
        return None
    try:
        return orientation.transform(affine, m.manifest.orientation)
    except ValueError as exc:
        raise error(str(exc)) from exc


def labels_from_latents(decoded: Decoded, device: str = "auto") -> np.ndarray:
    """g and s on one decoded file: its labels at the input's shape, in its voxel order."""
    return labels_of([decoded], device)[0]


def labels_of(items: list[Decoded], device="auto", coder: Coder | None = None
              ) -> list[np.ndarray]:
    """g and s on decoded files of one model, as one batch; each file's labels at its input's
    shape, in its voxel order (format_spec.md §2.3).  ``coder``: their model's, with a hook."""
    dev = resolve_device(device)
    ornts = [_orientation(d.model, d.header.affine, SgcFormatError) for d in items]
    labels = (coder or Coder.of(items[0].model)).labels(
        [d.latents for d in items],
        [orientation.model_shape(d.header.shape, o) for d, o in zip(items, ornts)], dev)
    return [orientation.to_input(lab, o) for lab, o in zip(labels, ornts)]


def segment(data, *, device: str = "auto") -> np.ndarray:
    """``.sgc`` bytes (or a ``.sgc`` file's path) -> integer label map (uint8) at the input's
    shape; no image rebuilt."""
    return labels_from_latents(decode(data), device)


def list_models() -> list[dict]:
    """The models this install can decode: id, name, task, labels, shapes."""
    return [m.describe() for m in zoo.installed().values()]


# File-level helpers, used by the command line.

def encode_file(src, dst=None, *, model=None, geometry: bool = True,
                metadata: dict | None = None, force: bool = False,
                volume: int | None = None, kind: str | None = None) -> Path:
    """Read an image file (or DICOM series folder) and write its ``.sgc``; ``volume`` picks
    one volume of a 4D NIfTI."""
    src = Path(src)
    loaded = read_input(src, volume, model=model)
    with naming(src):
        data = encode(loaded.array, model=model, kind=kind or loaded.kind,
                      affine=loaded.affine, geometry=geometry, metadata=metadata,
                      source=loaded.source, force=force)
    if dst is None:
        dst = default_sgc_path(src)
    elif Path(dst).is_dir():
        dst = Path(dst) / default_sgc_path(src).name
    not_the_input(src, dst)
    return sgio.write_bytes(dst, data)





def segment_file(src, dst=None, *, device: str = "auto", overlay=None, source=None) -> Path:
    """Read a ``.sgc`` file and write its label map (PNG, NIfTI or .npy by name), with a
    JSON sidecar of label names and colours beside it (``label_sidecar``).

    Without ``dst``, or with a folder as ``dst``, the file is named after the input,
    ``NAME.labels.<ext>``, in the kind of file the image came from (format_spec.md §1.3).
    ``source`` is the original image, which the ``.sgc`` does not hold: a ``.dcm`` ``dst``
    is a DICOM Segmentation of that series (or image) (``segcodec.dicomseg``), and
    ``overlay`` (a .png path) a quick look of the labels over it.
    """
    src = Path(src)
    decoded = decode(src)
    dst = labels_destination(dst, src, decoded.header)
    not_the_input(src, dst)
    check_destination(dst, decoded.header, source)  # before g and s run
    image = None
    if overlay is not None:  # checked, like the labels' name, before g and s run
        for other in (p for p in (src, dst, source) if p is not None):
            not_the_input(other, overlay)
        if sgio.suffix(Path(overlay)) != ".png" or not Path(overlay).parent.is_dir():
            raise InputError(f"{overlay}: an overlay is a .png file in an existing folder")
        image = _overlay_source(source, decoded.header)
    labels = labels_from_latents(decoded, device)
    out = write_label_file(dst, labels, decoded.header, source)
    if overlay is not None:
        from . import overlay as quick_look
        quick_look.write(overlay, image, labels, zoo.label_colours(len(decoded.model.labels)))
    return out


def check_destination(dst, header: Header, source=None) -> None:
    """InputError unless the labels of a file with this header can be written to ``dst``: a
    known kind of file, and for ``.dcm`` (a DICOM Segmentation) a ``source`` series (or
    image) of the coded image's shape and geometry (``check_source_geometry``).  Checked
    before any network runs or upload starts."""
    sgio.check_label_path(dst, header.ndim)
    if sgio.suffix(Path(dst)) == ".dcm":
        from . import dicomseg
        if source is None:
            raise InputError(f"{dst}: a DICOM Segmentation needs the source series "
                             "(--source DIR): the .sgc holds no DICOM identifiers")
        not_the_input(source, dst)
        check_source_geometry(header, dicomseg.check_source(Path(source), header.shape), source)


# An image's geometry matches a file's where every entry of their affines (as the file stores
# them, float32) agrees to this many millimetres: a hundredth of a fine voxel.
GEOMETRY_TOLERANCE_MM = 0.01


def check_source_geometry(header: Header, affine, source) -> None:
    """InputError unless an image with ``affine`` (None: it has none) can be the one coded
    in a file with ``header``, so that labels written over it land where they were found.
    Where the file has geometry, the image must have the same orientation, voxel sizes and
    origin (within ``GEOMETRY_TOLERANCE_MM``); where it has none, a volume must be stored in
    the orientation its model codes volumes in, as ``encode`` requires."""
    if header.affine is None:
        if affine is not None and header.ndim == 3:
            _check_model_orientation(zoo.get(header.model_id), _checked_affine(affine),
                                     f"{source} (the .sgc has no geometry)")
        return
    if affine is None:
        raise InputError(f"{source}: has no geometry, where the coded image has; was the "
                         ".sgc made from it?")
    ours, theirs = header.affine, orientation.stored_affine(affine)
    if np.abs(ours - theirs).max() <= GEOMETRY_TOLERANCE_MM:
        return
    a, b = (orientation.codes(x) for x in (ours, theirs))
    sizes = [np.sqrt((x[:3, :3] ** 2).sum(0)) for x in (ours, theirs)]
    if a != b:
        why = f"stored in {b} order, the coded image in {a}"
    elif np.abs(sizes[0] - sizes[1]).max() > GEOMETRY_TOLERANCE_MM:
        why = (f"voxels of {' x '.join(f'{v:.4g}' for v in sizes[1])} mm, the coded image's "
               f"{' x '.join(f'{v:.4g}' for v in sizes[0])} mm")
    elif np.abs(ours[:3, 3] - theirs[:3, 3]).max() > GEOMETRY_TOLERANCE_MM:
        why = (f"origin {np.abs(ours[:3, 3] - theirs[:3, 3]).max():.3g} mm from the coded "
               "image's")
    else:
        why = "oriented unlike the coded image"
    raise InputError(f"{source}: {why}; labels written over it would be misplaced: was the "
                     ".sgc made from this image?")


def write_label_file(dst, labels: np.ndarray, header: Header, source=None,
                     affine=None) -> Path:
    """Write ``labels`` as ``dst``'s name says (PNG, NIfTI, .npy, or with ``source`` a DICOM
    Segmentation), with the ``NAME.labels.json`` sidecar; ``affine`` overrides the header's."""
    sidecar = label_sidecar(header.model_id)
    names = [label["name"] for label in sidecar["labels"]]
    colours = [label["colour"] for label in sidecar["labels"]]
    if sgio.suffix(Path(dst)) == ".dcm" and source is not None:
        from . import dicomseg
        seg = dicomseg.segmentation(labels, Path(source), names, sidecar["model"],
                                    sidecar["model_id"])
        out = sgio.atomic_write(Path(dst), lambda tmp: seg.save_as(tmp))
    else:
        out = sgio.write_labels(dst, labels, header.affine if affine is None else affine,
                                colours)
    write_sidecar(out, sidecar)
    return out


def _overlay_source(source, header: Header) -> np.ndarray:
    if source is None:
        raise InputError("an overlay needs the original image (--source): the .sgc has none")
    loaded = sgio.read(source)
    image = loaded.array
    spatial = image.shape[:header.ndim]
    colour = header.ndim == 2 and image.ndim == 3 and image.shape[-1] == 3
    if spatial != tuple(header.shape) or not (image.ndim == header.ndim or colour):
        raise InputError(f"{source}: shape {image.shape} is not the coded image's "
                         f"{tuple(header.shape)}")
    if loaded.affine is not None:  # a picture without one is drawn on as it is
        check_source_geometry(header, loaded.affine, source)
    return image


def label_sidecar(model_id: bytes) -> dict:
    """What each label value means (name and display colour), and the model that made it:
    from the model index, else from the installed model itself."""
    entry = modelfiles.index_entry(model_id)
    if entry is None:
        m = zoo.get(model_id)
        entry = {"name": m.name, "task": m.manifest.task, "labels": m.labels,
                 "colours": zoo.label_colours(len(m.labels))}
    return {"model": entry["name"], "model_id": model_id.hex(), "task": entry["task"],
            "labels": [{"value": i, "name": name, "colour": colour}
                       for i, (name, colour) in enumerate(zip(entry["labels"],
                                                              entry["colours"]))]}


def write_sidecar(labels_path, sidecar: dict) -> Path:
    """``NAME.labels.json`` (``label_sidecar``) beside the label map (replacing one there: it
    belongs to it)."""
    text = json.dumps(sidecar, indent=1) + "\n"
    return sgio.atomic_write(sidecar_path(labels_path),
                             lambda tmp: Path(tmp).write_text(text))
