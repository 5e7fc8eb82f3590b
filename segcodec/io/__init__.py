"""Reading images and volumes, writing label maps, by file kind.

``read`` returns a ``Loaded`` image: the array in the layout ``segcodec.encode`` takes
((H, W), (H, W, C) or (I, J, K)), with its geometry and the kind of file it came from.
Writers go through ``atomic_write`` so an interrupted run never leaves a partial file.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
NPY_SUFFIXES = (".npy",)
DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_SUFFIXES = RASTER_SUFFIXES + NIFTI_SUFFIXES + NPY_SUFFIXES  # files that are one input


@dataclass
class Loaded:
    array: np.ndarray
    kind: str | None  # "2d", "3d", or None to let encode() infer it from the shape
    source: str  # "array", "raster", "nifti" or "dicom" (format_spec.md §1.3)
    affine: np.ndarray | None = None


def suffix(path: Path) -> str:
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def is_dicom(path: Path) -> bool:
    """A DICOM Part 10 file, by its preamble's magic (any name, any suffix)."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def read(path, volume: int | None = None, check_2d=None) -> Loaded:
    """Any supported input: PNG/JPEG/TIFF, NIfTI, .npy, a DICOM file or series folder;
    ``volume`` picks one volume of a 4D NIfTI.  ``check_2d(shape)`` sees a PNG/JPEG/TIFF's
    (height, width) from its header, before any pixel is decoded, and may raise."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if volume is not None and suffix(path) not in NIFTI_SUFFIXES:
        raise InputError(f"{path}: --volume applies to 4D NIfTI files")
    if path.is_dir():
        from . import dicom
        return dicom.read_series(path)
    ext = suffix(path)
    if ext in RASTER_SUFFIXES:
        from . import raster
        return raster.read(path, check_2d)
    if ext in NIFTI_SUFFIXES:
        from . import nifti
        return nifti.read(path, volume)
    if ext in NPY_SUFFIXES:
        from . import npy
        return npy.read(path)
    if ext in DICOM_SUFFIXES or is_dicom(path):
        from . import dicom
        return dicom.read_file(path)
    raise InputError(f"{path}: unsupported input type {ext or '(no extension)'}; "
                     "use PNG/JPEG, NIfTI, .npy or DICOM")


def label_suffix(source: str, ndim: int) -> str:
    """The default label file type for a source kind: labels come back as the input came."""
    if source == "raster" and ndim == 2:
        return ".png"
    if source in ("nifti", "dicom"):
        return ".nii.gz"
    return ".npy"


def check_label_path(path, ndim: int) -> None:
    """InputError unless labels of ``ndim`` dimensions can be written under this name."""
    ext = suffix(Path(path))
    if ext not in (".png", ".dcm") + NIFTI_SUFFIXES + NPY_SUFFIXES:
        raise InputError(f"{path}: labels can be written as .png, .nii, .nii.gz, .npy or .dcm "
                         f"(a DICOM Segmentation), not {ext or '(no extension)'}")
    if ext == ".png" and ndim != 2:
        raise InputError(f"{path}: PNG holds 2D labels; write a 3D label map as .nii.gz or .npy")


def write_labels(path, labels: np.ndarray, affine: np.ndarray | None, colours: list) -> Path:
    """Write a label map as PNG (indexed, ``colours`` its palette), NIfTI or .npy, chosen by
    the file name (a DICOM Segmentation needs its source series: ``segcodec.dicomseg``)."""
    path = Path(path)
    check_label_path(path, labels.ndim)
    ext = suffix(path)
    if ext == ".dcm":
        raise InputError(f"{path}: a DICOM Segmentation is made with its source series "
                         "(--source DIR): the .sgc holds no DICOM identifiers")
    if ext == ".png":
        from . import raster
        return atomic_write(path, lambda tmp: raster.write_labels(tmp, labels, colours))
    if ext in NIFTI_SUFFIXES:
        from . import nifti
        return atomic_write(path, lambda tmp: nifti.write_labels(tmp, labels, affine))
    return atomic_write(path, lambda tmp: np.save(tmp, labels))


def atomic_write(path: Path, write) -> Path:
    """Call ``write(tmp)`` on a fresh temporary name beside ``path``, flush it to disk, then
    rename it into place: an interrupted run (an error, Ctrl-C, SIGTERM under the CLI) never
    leaves a partial file.  The temporary name is random and created exclusively, so a
    link planted in the folder cannot redirect the write."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; name a file")
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: no such folder")
    # Keep the real suffix last: nibabel and numpy pick the format from it.
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix(path) or ".tmp",
                                    dir=path.parent)
    except OSError as exc:  # a read-only folder: name the user's file, not our temporary
        raise InputError(f"{path}: cannot write it ({exc.strerror or exc})") from exc
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, (OSError, ValueError)):  # name the user's file, not ours
            raise InputError(f"{path}: cannot write it ({str(exc).replace(str(tmp), str(path))})"
                             ) from exc
        raise
    return path


def remove_temporaries(paths) -> None:
    """Delete the temporaries ``atomic_write`` left beside ``paths`` in a process killed
    mid-write (a lost cluster worker), which had no chance to: hidden files named
    ``.NAME.XXXXXXXX<suffix>`` for a NAME of ``paths``.  Each folder is listed once."""
    names: dict[Path, set[str]] = {}
    for path in map(Path, paths):
        names.setdefault(path.parent, set()).add(path.name)
    for folder, wanted in names.items():
        try:
            entries = [entry.name for entry in os.scandir(folder)]
        except OSError:
            continue
        for name in entries:
            if _temporary_of(name) in wanted:
                (folder / name).unlink(missing_ok=True)


def _temporary_of(name: str) -> str | None:
    """The file name that ``name`` is an ``atomic_write`` temporary of, or None."""
    end = suffix(Path(name))
    inner = name[1:len(name) - len(end)] if name.startswith(".") and end else ""
    if len(inner) < 10 or inner[-9] != ".":
        return None
    target = inner[:-9]
    return target if (suffix(Path(target)) or ".tmp") == end else None


def _read_umask() -> int:
    mask = os.umask(0)  # read once, at import: setting it later would race other threads
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some systems cannot open folders; the file itself is on disk
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path, data: bytes) -> Path:
    return atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(data))
