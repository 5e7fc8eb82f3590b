"""DICOM through pydicom: one file (2D, or a multi-frame volume) or a series folder (3D).

Only pixel data and geometry are read into segcodec; no other attribute is kept, so nothing
that identifies a patient can reach a ``.sgc``.  Geometry is converted from DICOM's LPS+ to the
RAS+ affine of NIfTI (format_spec.md §2).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut

from ..container import MAX_PIXELS
from ..errors import InputError
from . import Loaded, is_dicom

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_DICOMDIR = "1.2.840.10008.1.3.10"  # Media Storage Directory: it lists files, it holds no image
# Objects that carry no image to segment: refused by name rather than coded as pixels.
_NOT_IMAGES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "a DICOM Segmentation (SEG)",
    "1.2.840.10008.5.1.4.1.1.481.3": "an RT Structure Set (RTSTRUCT)",
    "1.2.840.10008.5.1.4.1.1.481.2": "an RT Dose object (RTDOSE)",
    "1.2.840.10008.5.1.4.1.1.481.5": "an RT Plan (RTPLAN)",
    "1.2.840.10008.5.1.4.1.1.88.11": "a Structured Report (SR)",
    "1.2.840.10008.5.1.4.1.1.88.22": "a Structured Report (SR)",
    "1.2.840.10008.5.1.4.1.1.88.33": "a Structured Report (SR)",
    "1.2.840.10008.5.1.4.1.1.104.1": "an encapsulated PDF",
    "1.2.840.10008.5.1.4.1.1.66": "a Raw Data object",
    "1.2.840.10008.5.1.4.1.1.11.1": "a Presentation State",
    _DICOMDIR: "a DICOMDIR (the index of a DICOM medium)",
}
# Slice positions may differ from an even grid by this fraction of the step (scanner
# rounding); more than that is a missing or uneven slice.
_SPACING_TOLERANCE = 0.05


def _sop_class(ds) -> str:
    """The kind of object a file holds (a DICOMDIR names it in its file meta alone)."""
    meta = getattr(ds, "file_meta", None)
    return str(getattr(ds, "SOPClassUID", "") or getattr(meta, "MediaStorageSOPClassUID", ""))


def _check_image(ds, path) -> None:
    kind = _NOT_IMAGES.get(_sop_class(ds))
    if kind:
        raise InputError(f"{path}: is {kind}, not an image to segment")


def _declared_pixels(ds) -> int:
    """Rows x Columns x frames of one file, from its header (samples per pixel aside)."""
    try:
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        return int(ds.Rows) * int(ds.Columns) * max(frames, 1)
    except (AttributeError, TypeError, ValueError):
        return 0  # no image attributes: pixel decoding names the problem


def _check_size(pixels: int, where) -> None:
    """Before any pixel is decoded: a small compressed file cannot make us inflate gigabytes."""
    if pixels > MAX_PIXELS:
        raise InputError(f"{where}: declares {pixels} pixels, more than the limit of "
                         f"{MAX_PIXELS}")


def _pixels(ds, path) -> np.ndarray:
    _check_image(ds, path)
    _check_size(_declared_pixels(ds), path)
    try:
        stored = ds.pixel_array
    except Exception as exc:  # missing pixel data, unsupported transfer syntax...
        raise InputError(f"{path}: cannot decode DICOM pixel data ({_one_line(exc)})") from exc
    if stored.shape != (declared := _declared_shape(ds)):
        # pydicom returns what the bytes hold: a file whose Rows or NumberOfFrames understate
        # its pixel data would read as frames, or as colours, it does not have.
        raise InputError(f"{path}: pixel data of shape {stored.shape} where Rows, Columns, "
                         f"NumberOfFrames and SamplesPerPixel declare {declared}")
    try:
        if getattr(ds, "PhotometricInterpretation", "") == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut
            return np.asarray(apply_color_lut(stored, ds))  # indices -> RGB
        return np.asarray(apply_modality_lut(stored, ds))
    except Exception as exc:  # a LUT or rescale that does not fit the pixels
        raise InputError(f"{path}: cannot apply the DICOM pixel transform "
                         f"({_one_line(exc)})") from exc


def _declared_shape(ds) -> tuple[int, ...]:
    """The pixel array's shape as the header declares it: (frames,) rows, columns (, samples)."""
    try:
        samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
        shape = (int(ds.Rows), int(ds.Columns))
    except (AttributeError, TypeError, ValueError):
        return ()  # matches no array: the message names the attributes
    frames = frames_of(ds)
    return (frames,) * (frames > 1) + shape + (samples,) * (samples > 1)


def _one_line(exc: Exception) -> str:
    """pydicom's message on one line (those of compressed transfer syntaxes span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def read_dataset(path: Path, stop_before_pixels: bool = False):
    """One DICOM file's dataset; InputError, in one line and segcodec's words, for anything
    pydicom cannot read."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except Exception as exc:  # pydicom raises many kinds for a file that is not DICOM
        # In segcodec's words: pydicom's own advice ("Use force=True") is about its API, and
        # a user would take it for --force
        why = "no DICOM file meta header or 'DICM' prefix" \
            if isinstance(exc, InvalidDicomError) else _one_line(exc)
        raise InputError(f"{path}: not a readable DICOM file ({why})") from exc


# The geometry attributes the readers use, and how many numbers each holds
_GEOMETRY = {"ImageOrientationPatient": 6, "PixelSpacing": 2, "ImagePositionPatient": 3}


def _axes(ds, path):
    """Row and column steps (direction cosines times spacings) and the origin, or None when
    the file has no geometry; InputError naming the attribute where one is malformed (a
    volume stacked with a made-up geometry would place its labels wrong)."""
    if any(key not in ds or ds[key].value in (None, "") for key in _GEOMETRY):
        return None  # absent or empty (DICOM's type 2): no geometry, as a capture has none
    values = {}
    for key, n in _GEOMETRY.items():
        try:
            value = np.asarray(ds[key].value, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            value = np.array([])
        if value.size != n or not np.isfinite(value).all():
            raise InputError(f"{path}: {key} must hold {n} numbers")
        values[key] = value
    iop, spacing = values["ImageOrientationPatient"], values["PixelSpacing"]
    if not (spacing > 0).all() or np.linalg.norm(np.cross(iop[:3], iop[3:])) < 0.5:
        raise InputError(f"{path}: ImageOrientationPatient or PixelSpacing places no pixel "
                         "(spacings must be positive and the directions two across)")
    # iop[:3] points along a row (increasing column), iop[3:] down a column (increasing row);
    # PixelSpacing is (between rows, between columns).
    return iop[:3] * spacing[1], iop[3:] * spacing[0], values["ImagePositionPatient"]


def _full_range(pixels: np.ndarray, ds) -> np.ndarray:
    """Unsigned integers stored in fewer bits than their type (BitsStored 12 of 16, say) scaled
    to the type's whole range, where the photograph rules read white (api.encode)."""
    try:
        stored = int(ds.BitsStored)
    except (AttributeError, TypeError, ValueError):
        return pixels
    if pixels.dtype.kind != "u" or not 1 <= stored < 8 * pixels.dtype.itemsize:
        return pixels
    top = np.iinfo(pixels.dtype).max
    scaled = np.minimum(pixels, 2 ** stored - 1).astype(np.float64) * (top / (2 ** stored - 1))
    return np.rint(scaled).astype(pixels.dtype)


def read_file(path: Path) -> Loaded:
    ds = read_dataset(path)
    if frames_of(ds) > 1:
        return _read_frames(ds, path)
    pixels = _full_range(_pixels(ds, path), ds)
    if pixels.ndim == 3:  # RGB single frame
        return Loaded(array=pixels, kind="2d", source="dicom")
    return Loaded(array=pixels, kind="2d", source="dicom", affine=file_affine(ds, path))


def frames_of(ds) -> int:
    """NumberOfFrames, 1 where it is absent or unreadable."""
    try:
        return int(getattr(ds, "NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def _frame_value(ds, frame: int, sequence: str, keyword: str):
    """An attribute of one frame of a multi-frame (enhanced) object: from its own functional
    groups, else from those all frames share; None where neither has it."""
    for groups, item in (("PerFrameFunctionalGroupsSequence", frame),
                         ("SharedFunctionalGroupsSequence", 0)):
        try:
            return getattr(getattr(ds, groups)[item], sequence)[0][keyword].value
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            continue
    return None


def _frame_headers(ds, path: Path) -> list:
    """Each frame's geometry as a slice's header would hold it, for ``_in_slice_order``."""
    headers = []
    for i in range(frames_of(ds)):
        frame = pydicom.Dataset()
        for sequence, keyword in (("PlaneOrientationSequence", "ImageOrientationPatient"),
                                  ("PixelMeasuresSequence", "PixelSpacing"),
                                  ("PixelMeasuresSequence", "SpacingBetweenSlices"),
                                  ("PixelMeasuresSequence", "SliceThickness"),
                                  ("PlanePositionSequence", "ImagePositionPatient")):
            value = _frame_value(ds, i, sequence, keyword)
            if value is not None:
                setattr(frame, keyword, value)
        headers.append((Path(f"{path}#frame{i + 1}"), frame))
    return headers


def _read_frames(ds, path: Path) -> Loaded:
    """A multi-frame object (enhanced CT or MR, ...) as the volume of its frames, placed and
    rescaled (CT's Hounsfield units) by their functional groups as a series' slices are by
    their headers."""
    pixels = _pixels(ds, path)
    if pixels.ndim != 3:
        raise InputError(f"{path}: a multi-frame colour DICOM ({frames_of(ds)} frames, a cine "
                         "or a capture): not a volume; code its frames one by one")
    headers = _frame_headers(ds, path)
    if _axes(headers[0][1], headers[0][0]) is None:
        raise InputError(f"{path}: a multi-frame DICOM of {frames_of(ds)} frames without each "
                         "frame's position and orientation (a cine?): nothing places its "
                         "frames as a volume")
    in_order = _in_slice_order(headers, path)
    if "RescaleSlope" not in ds and "RescaleIntercept" not in ds:  # else _pixels applied it
        pixels = _frames_rescaled(ds, pixels, path)
    index = {p: i for i, (p, _) in enumerate(headers)}
    volume = pixels[[index[p] for p, _ in in_order]].transpose(2, 1, 0)  # (column, row, slice)
    return Loaded(array=np.ascontiguousarray(volume), kind="3d", source="dicom",
                  affine=series_affine(in_order))


def _frames_rescaled(ds, pixels: np.ndarray, path: Path) -> np.ndarray:
    """Frames (frame, row, column) times their functional groups' RescaleSlope (1 where
    absent), plus their RescaleIntercept (0 where absent)."""
    rescale = [[_frame_value(ds, i, "PixelValueTransformationSequence", key)
                for key in ("RescaleSlope", "RescaleIntercept")] for i in range(len(pixels))]
    if all(value is None for pair in rescale for value in pair):
        return pixels
    try:
        slopes, intercepts = (np.array([float(default if v is None else v) for v in values])
                              for values, default in zip(zip(*rescale), (1.0, 0.0)))
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: unreadable RescaleSlope or RescaleIntercept") from exc
    return pixels * slopes[:, None, None] + intercepts[:, None, None]


def file_affine(ds, path) -> np.ndarray | None:
    """The RAS+ affine of one slice, read as a 2D image (row, column), from its header; None
    without geometry.  Its third voxel size is the slice thickness."""
    axes = _axes(ds, path)
    if axes is None:
        return None
    col_step, row_step, origin = axes
    normal = np.cross(col_step, row_step)
    normal /= np.linalg.norm(normal)
    lps = np.eye(4)
    # Array index (row, column) -> world: origin + row * row_step + column * col_step.
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = (
        row_step, col_step, normal * _slice_thickness(ds), origin)
    return _LPS_TO_RAS @ lps


def series_affine(headers: list) -> np.ndarray | None:
    """The RAS+ affine of a series read as a volume (column, row, slice), from the headers of
    its slices in slice order (``series``); None without geometry."""
    axes = _axes(headers[0][1], headers[0][0])
    if axes is None:
        return None
    col_step, row_step, _ = axes
    first = np.asarray(headers[0][1].ImagePositionPatient, dtype=float)
    last = np.asarray(headers[-1][1].ImagePositionPatient, dtype=float)
    slice_step = (last - first) / (len(headers) - 1) if len(headers) > 1 \
        else _normal(axes) * _slice_thickness(headers[0][1])
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = col_step, row_step, slice_step, first
    return _LPS_TO_RAS @ lps


def _slice_thickness(ds) -> float:
    """The third voxel size of a lone slice: SpacingBetweenSlices, else SliceThickness, else 1."""
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = float(getattr(ds, key))
        except (AttributeError, TypeError, ValueError):
            continue
        if np.isfinite(value) and value > 0:
            return value
    return 1.0


def _even_step(positions: list[float], folder: Path) -> None:
    """InputError unless sorted slice positions are distinct and evenly spaced."""
    steps = np.diff(positions)
    if len(steps) == 0:
        return
    if np.min(steps) <= 1e-4:
        i = int(np.argmin(steps))
        raise InputError(f"{folder}: two slices share the position {positions[i]:.4g} mm "
                         "(a duplicate file?); keep one of each")
    step = float(np.median(steps))
    if np.max(np.abs(steps - step)) > _SPACING_TOLERANCE * step:
        i = int(np.argmax(np.abs(steps - step)))
        raise InputError(f"{folder}: slices are not evenly spaced (gap of {steps[i]:.4g} mm "
                         f"after {positions[i]:.4g} mm, where the others are {step:.4g} mm): "
                         "a slice is missing or the series is uneven")


def _one_grid(headers, axes, folder: Path) -> None:
    """InputError unless every slice has the first's row and column directions and spacings:
    slices of another orientation (a localiser, a reformat) stacked in would be a volume
    with a made-up geometry."""
    for p, ds in headers[1:]:
        other = _axes(ds, p)
        if other is None or any(not np.allclose(a, b, atol=1e-4)
                                for a, b in zip(axes[:2], other[:2])):
            raise InputError(f"{folder}: {p.name} is oriented or spaced unlike the first slice "
                             "(ImageOrientationPatient, PixelSpacing); pass one stack per folder")


def series_number(folder: Path) -> int | None:
    """The SeriesNumber of a series folder (its first DICOM file's), None without one."""
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SeriesNumber"])
        except Exception:  # noqa: BLE001 - not DICOM, or unreadable: reading it will say so
            continue
        try:
            return int(ds.SeriesNumber)
        except (AttributeError, TypeError, ValueError):
            return None
    return None


def series(folder: Path) -> list[tuple[Path, "pydicom.Dataset"]]:
    """The files of the one series in ``folder`` and their headers, in slice order (along the
    slice normal, else by InstanceNumber); InputError for a mixed, uneven or non-image series."""
    # hidden files, such as macOS's ._NAME metadata, are not slices
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    headers = []
    for p in files:
        try:
            headers.append((p, pydicom.dcmread(p, stop_before_pixels=True)))
        except Exception as exc:  # pydicom raises many kinds
            if is_dicom(p):  # a slice that cannot be read: not one to leave out silently
                raise InputError(f"{p}: not a readable DICOM file ({_one_line(exc)})") from exc
            continue  # not DICOM: another file in the folder
    # A DICOMDIR beside the slices indexes them; it is not a second series.
    headers = [(p, ds) for p, ds in headers if _sop_class(ds) != _DICOMDIR]
    if not headers:
        raise InputError(f"{folder}: {_not_a_series(folder, files)}")
    uids = [str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in headers]
    if len(set(uids)) > 1:
        most = max(set(uids), key=uids.count)
        odd = next(p for (p, _), uid in zip(headers, uids) if uid != most)
        raise InputError(f"{folder}: holds {len(set(uids))} DICOM series ({odd.name} is not of "
                         "the others'); pass one series per folder")
    return _in_slice_order(headers, folder)


def _not_a_series(folder: Path, files: list[Path]) -> str:
    """What a folder holding no DICOM slices holds instead, and what to give."""
    from . import IMAGE_SUFFIXES, suffix
    images = [p for p in files if suffix(p) in IMAGE_SUFFIXES]
    folders = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if images:
        return (f"a folder of {len(images)} image(s), not a DICOM series: give one image "
                "(`segcodec encode` codes every image of a folder)")
    if folders:
        return (f"a folder of {len(folders)} folder(s), not a DICOM series: give one series "
                "folder (`segcodec encode` codes each series of a study folder)")
    if any(p.suffix.lower() == ".sgc" for p in files):
        return f"holds .sgc files, not images: `segcodec segment {folder}` turns them into labels"
    return "no images or DICOM files in this folder"


def _in_slice_order(headers: list, folder: Path) -> list:
    """(path, header) pairs of one stack's slices, sorted along the slice normal (else by
    InstanceNumber); InputError for slices of another grid, missing or uneven ones, and
    non-image objects."""
    axes = _axes(headers[0][1], headers[0][0])
    if axes is not None:
        _one_grid(headers, axes, folder)
        key = [float(np.dot(_normal(axes), np.asarray(ds.ImagePositionPatient, dtype=float)))
               for _, ds in headers]
    else:
        key = [_instance_number(ds, p) for p, ds in headers]
    for p, ds in headers:
        _check_image(ds, p)
    order = np.argsort(key, kind="stable")
    if axes is not None:
        _even_step([key[i] for i in order], folder)
    return [headers[i] for i in order]


def _instance_number(ds, path) -> int:
    try:
        return int(getattr(ds, "InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        raise InputError(f"{path}: InstanceNumber is not a number") from None


def _normal(axes) -> np.ndarray:
    col_step, row_step, _ = axes
    return np.cross(col_step / np.linalg.norm(col_step), row_step / np.linalg.norm(row_step))


def read_series(folder: Path) -> Loaded:
    """All DICOM files of one series in a folder -> volume (column, row, slice), as dcm2niix."""
    headers = series(folder)
    if len(headers) == 1 and frames_of(headers[0][1]) > 1:  # an enhanced series: one file
        return _read_frames(read_dataset(headers[0][0]), headers[0][0])
    _check_size(sum(_declared_pixels(ds) for _, ds in headers), folder)
    slices = [_pixels(read_dataset(p), p) for p, _ in headers]
    if len({s.shape for s in slices}) != 1 or slices[0].ndim != 2:
        raise InputError(f"{folder}: slices differ in size or are not single-frame grayscale")
    volume = np.stack(slices, axis=-1).transpose(1, 0, 2)  # (column, row, slice)
    return Loaded(array=volume, kind="3d", source="dicom", affine=series_affine(headers))
