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


# A model file's content is what ``torch.save`` wrote (format_spec.md §6): a zip holding a
# pickle of {"manifest", "state_dict", "tables"} whose tensors point into the zip's storage
# records.  It is read here without torch, by an unpickler that builds numpy arrays and knows
# no other global (a pickle otherwise runs what it names).
_STORAGE_DTYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
                   "IntStorage": "<i4", "LongStorage": "<i8", "ShortStorage": "<i2",
                   "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?"}


def read_content(blob: bytes) -> dict:
    """A model file's bytes -> its pickled dict, each tensor a read-only numpy array viewing
    the file's bytes.  Raises ValueError (or zipfile/pickle errors) for anything else.

    Nothing in the file can ask for more memory than the file holds: entries must be stored
    (``torch.save`` never compresses), a storage record must hold exactly its elements, and a
    tensor is a contiguous run of its storage (as ``torch.save`` writes a state dict), so each
    array is a view, never a copy."""
    import io
    import math
    import pickle
    import zipfile

    import numpy as np

    archive = zipfile.ZipFile(io.BytesIO(blob))
    if any(info.compress_type != zipfile.ZIP_STORED for info in archive.infolist()):
        raise ValueError("a compressed entry (torch.save stores its entries)")
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise ValueError("not a torch.save archive (no single data.pkl)")
    prefix = pickles[0][:-len("data.pkl")]
    if f"{prefix}byteorder" in archive.namelist() and \
            archive.read(f"{prefix}byteorder") != b"little":
        raise ValueError("storage byte order is not little-endian")
    storages: dict[str, _Storage] = {}

    def storage(pid):
        kind, dtype, key, _location, numel = pid
        if kind != "storage" or not isinstance(key, str) or type(numel) is not int or \
                dtype not in _STORAGE_DTYPES.values():
            raise ValueError(f"unexpected persistent id {pid!r}")
        if key not in storages:
            info = archive.getinfo(f"{prefix}data/{key}")
            if info.file_size != numel * np.dtype(dtype).itemsize:
                raise ValueError(f"storage {key} holds {info.file_size} bytes, not {numel} "
                                 f"values of {dtype}")
            storages[key] = _Storage(np.frombuffer(archive.read(info), dtype=dtype))
        return storages[key]

    def tensor(data, offset, size, stride, *_):
        if not isinstance(data, _Storage) or not isinstance(size, tuple) or \
                not isinstance(stride, tuple) or len(size) != len(stride) or \
                not all(type(v) is int and v >= 0 for v in (offset, *size, *stride)):
            raise ValueError("malformed tensor")
        n = math.prod(size)
        contiguous = all(s == math.prod(size[i + 1:]) for i, s in enumerate(stride)
                         if size[i] > 1)
        if not contiguous or offset + n > data.values.size:
            raise ValueError("a tensor that is not a contiguous run of its storage")
        return data.values[offset:offset + n].reshape(size)

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return tensor
            if (module, name) == ("collections", "OrderedDict"):
                return dict
            if module == "torch" and name in _STORAGE_DTYPES:
                return _STORAGE_DTYPES[name]
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a model file")

        def persistent_load(self, pid):
            return storage(pid)

    return Unpickler(io.BytesIO(archive.read(pickles[0]))).load()


class _Storage:
    """A storage record's values (read-only, 1-D): what a tensor of a model file may view."""

    def __init__(self, values):
        self.values = values
