"""Volumes in the orientation a model was trained in, and labels back in the input's own.

A model whose manifest names an ``orientation`` (axis codes such as "RAS": +x towards the
patient's Right, +y Anterior, +z Superior, the convention of NIfTI, MONAI and TorchIO) sees
every volume that comes with an affine permuted and flipped to those axes before C
(format_spec.md §2.3).  The decoder derives the same transform from the affine stored in the
file, so the labels come back in the input's voxel order.  The transform is taken from the
affine as stored (float32), so both sides agree bit for bit.  Volumes without an affine are
taken to be in the model's orientation already.
"""
from __future__ import annotations

import functools

import numpy as np


def _nib():
    """nibabel's orientations module, imported where a volume needs it (a photograph's
    encoder does not wait for nibabel's import)."""
    from nibabel import orientations
    return orientations


def codes(affine: np.ndarray) -> str:
    """The axis codes of an affine's voxel axes, such as "LPS"."""
    return "".join(_nib().aff2axcodes(affine))


def moved_affine(affine: np.ndarray, ornt: np.ndarray, shape) -> np.ndarray:
    """The affine of a volume of spatial ``shape`` after ``ornt`` (``transform``)."""
    return np.asarray(affine, dtype=np.float64) @ _nib().inv_ornt_aff(ornt, shape)


def stored_affine(affine: np.ndarray) -> np.ndarray:
    """The affine as a ``.sgc`` geometry section keeps it (float32, §2), in float64."""
    out = np.eye(4)
    out[:3] = np.asarray(affine, dtype=np.float64)[:3].astype("<f4")
    return out


def transform(affine: np.ndarray | None, codes: str | None) -> np.ndarray | None:
    """The nibabel orientation transform from the affine's voxel axes to ``codes``; None
    when there is nothing to do (no affine, no orientation, or already there)."""
    if affine is None or not codes:
        return None
    # io_orientation reads the rotation-zoom block alone, so that (as stored) is the key: the
    # volumes of one scanner or data set share it, whatever their translations.
    ornt = _transform(stored_affine(affine)[:3, :3].tobytes(), tuple(codes))
    return None if ornt is None else ornt.copy()


@functools.lru_cache(maxsize=256)
def _transform(block: bytes, target: tuple) -> np.ndarray | None:
    """``transform`` of a stored affine's 3x3 block (float64 bytes), computed once per block
    (nibabel's SVD and checks cost more than the rest of preprocessing a volume)."""
    affine = np.eye(4)
    affine[:3, :3] = np.frombuffer(block, dtype=np.float64).reshape(3, 3)
    source = _io_orientation(affine)
    if np.isnan(source).any():
        raise ValueError("the affine is singular (a voxel axis of size 0): no orientation")
    ornt = _nib().ornt_transform(source, _nib().axcodes2ornt(target))
    identity = np.array([[i, 1] for i in range(len(ornt))], dtype=float)
    return None if np.array_equal(ornt, identity) else ornt


def _io_orientation(affine: np.ndarray) -> np.ndarray:
    """``orientations.io_orientation(affine)``, read straight off a finite block in which
    every voxel axis runs along one world axis, as nearly every scanner's does.  There nibabel
    divides each column by its length, exactly (sqrt(a * a) is |a| for a float32 ``a``), and
    so takes the SVD of one of the 48 signed permutation matrices (with zeros of either sign),
    whose results the tests compare with these, every one of them."""
    block = affine[:3, :3]
    nonzero = block != 0
    if not (np.isfinite(block).all() and (nonzero.sum(0) == 1).all()
            and (nonzero.sum(1) == 1).all()):
        return _nib().io_orientation(affine)
    rows = nonzero.argmax(0)
    return np.stack([rows, np.sign(block[rows, [0, 1, 2]])], axis=1).astype(np.float64)


def to_model(array: np.ndarray, ornt: np.ndarray | None) -> np.ndarray:
    """Channels-first volume (C, I, J, K) -> the same in the model's orientation."""
    if ornt is None:
        return array
    return np.stack([_nib().apply_orientation(c, ornt) for c in array])


def model_shape(shape: tuple[int, ...], ornt: np.ndarray | None) -> tuple[int, ...]:
    """The input's spatial shape as the model sees it."""
    if ornt is None:
        return tuple(shape)
    out = [0] * len(shape)
    for axis, (target, _) in enumerate(ornt):
        out[int(target)] = shape[axis]
    return tuple(out)


def model_spacing(affine: np.ndarray | None, ornt: np.ndarray | None) -> np.ndarray | None:
    """Voxel sizes (mm) along the model's axes; None without an affine."""
    if affine is None:
        return None
    sizes = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(0))
    return np.array(model_shape(tuple(sizes), ornt), dtype=np.float64)


def to_input(labels: np.ndarray, ornt: np.ndarray | None) -> np.ndarray:
    """Labels in the model's orientation -> the input's voxel order."""
    if ornt is None:
        return labels
    back = np.zeros_like(ornt)
    for axis, (target, flip) in enumerate(ornt):
        back[int(target)] = (axis, flip)
    return np.ascontiguousarray(_nib().apply_orientation(labels, back))
