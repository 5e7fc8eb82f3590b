"""Where model files are and what the index says of them, without loading them (no torch).

A model file is ``<name>-<first 8 hex digits of its SHA-256>.sgm`` (format_spec.md §6), in
``segcodec/models/`` or a folder of ``SEGCODEC_MODEL_PATH`` (os.pathsep-separated).

``segcodec/models/index.json`` names the default model of each input kind and the deprecated
models, and holds each built-in model's labels and label colours, so that ``info`` and the
label sidecar need no torch.  Only the built-in index picks defaults: a file dropped into
``SEGCODEC_MODEL_PATH`` is never the default, whatever it is called or says of itself.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

BUILTIN_DIR = Path(__file__).with_name("models")
INDEX = "index.json"
PATH_ENV = "SEGCODEC_MODEL_PATH"
SUFFIX = ".sgm"
_NAME = re.compile(r"^(?P<name>[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*)-(?P<hash>[0-9a-f]{8})\.sgm$")


def model_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get(PATH_ENV, "").split(os.pathsep) if p]
    return [BUILTIN_DIR, *extra]


def model_files() -> list[Path]:
    """Every model file, once: a folder named twice (or the built-in one by another path,
    through a link) is read once."""
    found = {p.resolve(): p for d in reversed(model_dirs()) if d.is_dir()
             for p in d.glob("*" + SUFFIX)}
    return sorted(found.values())


def is_builtin(path: Path) -> bool:
    return Path(path).parent.resolve() == BUILTIN_DIR.resolve()


def files_for(model_id: bytes) -> list[Path]:
    """The installed model files that can hold ``model_id``: those whose name carries the
    start of its hash (loading checks the hash itself)."""
    return [p for p in model_files()
            if (m := _NAME.match(p.name)) and model_id.hex().startswith(m["hash"])]


def name_for(model_id: bytes) -> str | None:
    """The name of the installed model file that can hold ``model_id``, by file name alone."""
    files = files_for(model_id)
    return _NAME.match(files[0].name)["name"] if files else None


def read_index(folder: Path = BUILTIN_DIR) -> dict:
    """The index of a models folder: {"defaults": {"2d": name, "3d": name}, "deprecated":
    [names], "models": {name: {"file", "labels", "colours", "ndim", "task"}}}."""
    path = Path(folder) / INDEX
    if not path.exists():
        return {"defaults": {}, "deprecated": [], "models": {}}
    return json.loads(path.read_text())


def write_index(index: dict, folder: Path = BUILTIN_DIR) -> Path:
    path = Path(folder) / INDEX
    path.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return path


def index_entry(model_id: bytes) -> dict | None:
    """The built-in index's entry of the model with this id (by its file's hash), if any."""
    for name, entry in read_index()["models"].items():
        m = _NAME.match(entry["file"])
        if m and model_id.hex().startswith(m["hash"]):
            return {"name": name, **entry}
    return None
