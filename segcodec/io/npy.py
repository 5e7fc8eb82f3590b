"""NumPy .npy arrays, read without pickle."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from . import Loaded


def read(path: Path) -> Loaded:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read .npy ({exc})") from exc
    return Loaded(array=array, kind=None, source="array")  # encode() infers 2D or 3D
