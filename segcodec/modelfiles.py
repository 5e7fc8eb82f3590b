"""Where model files are and what their names say, without loading them (no torch).

A model file is ``<name>-<first 8 hex digits of its SHA-256>.sgm`` (format_spec.md §6), in
``segcodec/models/`` or a folder of ``SEGCODEC_MODEL_PATH`` (os.pathsep-separated).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

BUILTIN_DIR = Path(__file__).with_name("models")
PATH_ENV = "SEGCODEC_MODEL_PATH"
SUFFIX = ".sgm"
_NAME = re.compile(r"^(?P<name>[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*)-(?P<hash>[0-9a-f]{8})\.sgm$")


def model_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get(PATH_ENV, "").split(os.pathsep) if p]
    return [BUILTIN_DIR, *extra]


def model_files() -> list[Path]:
    return sorted(p for d in model_dirs() if d.is_dir() for p in d.glob("*" + SUFFIX))


def name_for(model_id: bytes) -> str | None:
    """The name of the installed model file whose hash starts as ``model_id`` does, by file
    name alone (loading checks the hash)."""
    for path in model_files():
        m = _NAME.match(path.name)
        if m and model_id.hex().startswith(m["hash"]):
            return m["name"]
    return None
