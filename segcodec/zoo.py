"""Installed models: weights, entropy tables and manifest in one hash-checked file (spec §6).

Models live in ``segcodec/models/`` and in any folder listed in ``SEGCODEC_MODEL_PATH``
(os.pathsep-separated).  A model's id is the first 6 bytes of its file's SHA-256; the file
name ends in the first 8 hex digits, and loading refuses a file whose hash disagrees.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import sys
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import entropy
from .compressor import Compressor
from .container import MODEL_ID_BYTES
from .errors import SgcError, UnknownModelError
from .manifest import Manifest

from . import modelfiles

if TYPE_CHECKING:
    from .networks import SegCodecNet
from .modelfiles import (_NAME, BUILTIN_DIR, PATH_ENV, SUFFIX, is_builtin,  # noqa: F401 (re-exported)
                         model_dirs, model_files, read_index)

__all__ = ["Model", "installed", "broken", "get", "find", "default_for", "reload", "read_index",
           "model_files", "is_builtin", "PATH_ENV"]


@dataclass
class Model:
    """A loaded model: its manifest, entropy table and weights; C in numpy (``compressor``),
    which is all encoding needs; C, g and s in torch (``net``), built on first use."""
    model_id: bytes
    path: Path
    manifest: Manifest
    table: np.ndarray
    weights: dict  # state-dict name -> read-only numpy array
    compressor: Compressor
    _on_device: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def ndim(self) -> int:
        return self.manifest.architecture.ndim

    @property
    def in_channels(self) -> int:
        return self.manifest.architecture.in_channels

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.manifest.architecture.latent_shape

    @property
    def net(self) -> "SegCodecNet":
        """C, g and s as a torch network on the CPU (needs torch: the server's side)."""
        with self._lock:
            if "cpu" not in self._on_device:
                self._on_device["cpu"] = _network(self)
            return self._on_device["cpu"]

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @functools.cached_property
    def bounds(self) -> dict:
        """Shape bounds the built-in index gives a built-in model whose manifest predates its
        domain (format_spec §6): the bounds of its task's later models."""
        if self.path.parent.resolve() != BUILTIN_DIR.resolve():
            return {}
        return modelfiles.read_index().get("bounds", {}).get(self.name, {})

    @functools.cached_property
    def appearance(self) -> dict | None:
        """The domain's ``appearance`` entry with its numbers as arrays: converted once, since
        every encode compares against them (``domain.check_appearance``)."""
        entry = (self.manifest.domain or {}).get("appearance")
        return None if entry is None else {
            k: np.asarray(v) if isinstance(v, list) else v for k, v in entry.items()}

    def net_on(self, device) -> "SegCodecNet":
        """The network on ``device`` (a torch.device), copied there once and shared by later
        calls."""
        if device.type == "cpu":
            return self.net
        net = self.net
        with self._lock:
            if device not in self._on_device:
                self._on_device[device] = _copy_to(net, device)
            return self._on_device[device]

    def describe(self) -> dict:
        return {"id": self.model_id.hex(), "name": self.name, "task": self.manifest.task,
                "ndim": self.ndim, "input_channels": self.in_channels,
                "labels": self.labels,
                "default": default_for(self.ndim).model_id == self.model_id,
                "normalisation": self.manifest.normalisation,
                "work_shape": list(self.manifest.architecture.work_shape),
                "latent_shape": list(self.latent_shape), "file": str(self.path)}


def _network(m: Model) -> "SegCodecNet":
    from . import backend
    backend.require_torch("segment")
    import torch
    if backend.torch_threads():
        torch.set_num_threads(backend.torch_threads())

    from .networks import SegCodecNet
    try:
        net = SegCodecNet(m.manifest.architecture.to_json())
        net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in m.weights.items()})
    except Exception as exc:  # key and shape errors alike
        raise _invalid(m.path, exc) from exc
    return net.eval()


def _invalid(path: Path, exc: Exception) -> SgcError:
    return SgcError(f"model file {path.name} is not a valid segcodec model "
                    f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})")


def _copy_to(net: "SegCodecNet", device) -> "SegCodecNet":
    from .networks import SegCodecNet
    clone = SegCodecNet(net.arch)
    clone.load_state_dict(net.state_dict())
    return clone.to(device).eval()


def load_file(path: Path) -> Model:
    """Read, hash-check, validate and build one model file; SgcError for anything wrong."""
    path = Path(path)
    blob = path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    match = _NAME.match(path.name)
    if not match or match["hash"] != digest[:8]:
        raise SgcError(f"model file {path.name} does not match its hash (sha256 {digest[:8]}…);"
                       " it is corrupted or misnamed")
    try:
        content = modelfiles.read_content(blob)
        manifest = Manifest.from_json(json.loads(content["manifest"]), fresh=True)
        arch = manifest.architecture
        table = entropy.check_table(content["tables"], arch.latent_channels, arch.ndim)
        weights = content["state_dict"]
        if not isinstance(weights, dict) or not all(
                isinstance(k, str) and isinstance(v, np.ndarray) for k, v in weights.items()):
            raise SgcError("state_dict is not a dict of tensors")
        compressor = Compressor(arch.to_json(), weights)  # g and s: where they are built
    except Exception as exc:  # pickle, zip, key, type and shape errors alike
        raise _invalid(path, exc) from exc
    model = Model(bytes.fromhex(digest[:2 * MODEL_ID_BYTES]), path, manifest, table, weights,
                  compressor)
    if "torch" in sys.modules:
        # A process that segments (a server) builds g and s now: a file with bad ones is set
        # aside at start-up, not found at a request.
        model.net
    return model


_cache: dict[bytes, Model] | None = None
_files: dict[Path, Model] = {}  # each file loaded once, whether by get() or installed()
_broken: dict[Path, str] = {}
_defaults: dict[int, Model] = {}  # default_for, by ndim
_cache_lock = threading.Lock()


def _load(path: Path) -> Model:
    if path not in _files:
        _files[path] = load_file(path)
    return _files[path]


def installed() -> dict[bytes, Model]:
    """All installed models by id, loaded once per process.  A file that fails to load is
    set aside (``broken()``) and the others keep working."""
    global _cache
    with _cache_lock:
        if _cache is None:
            models: dict[bytes, Model] = {}
            _broken.clear()
            # Built-in files first: a copy of one elsewhere is the one set aside.
            for path in sorted(model_files(), key=lambda p: (not modelfiles.is_builtin(p), p)):
                try:
                    model = _load(path)
                except (SgcError, OSError) as exc:
                    _broken[path] = str(exc)
                    continue
                if model.model_id in models and models[model.model_id].path != path:
                    # The id is the file's hash: the same model twice (a 2^-49 chance aside)
                    first = models[model.model_id].path
                    _broken[path] = f"a copy of {first} (model id {model.model_id.hex()}); " \
                                    "set aside"
                    warnings.warn(f"model file {path} is a copy of {first}; set aside")
                    continue
                models[model.model_id] = model
            _cache = models
        return _cache


def broken() -> dict[Path, str]:
    """Model files that failed to load, with why."""
    installed()
    return dict(_broken)


def loaded() -> list[Path]:
    """The model files this process has loaded (each once)."""
    return list(_files)


def reload() -> None:
    """Forget loaded models (after changing SEGCODEC_MODEL_PATH, say)."""
    global _cache
    with _cache_lock:
        _cache = None
        _files.clear()
        _defaults.clear()


def get(model_id: bytes) -> Model:
    """The installed model with this id.  A model file is named by its hash, which begins
    with the id, so only the file that can hold it is loaded (decoding one file does not
    load every installed model); the full scan names what is installed when none does."""
    key = bytes(model_id)
    with _cache_lock:
        if _cache is not None and key in _cache:
            return _cache[key]
        if _cache is None:
            for path in modelfiles.files_for(key):
                try:
                    model = _load(path)
                except (SgcError, OSError):
                    continue  # installed() sets it aside with its reason
                if model.model_id == key:
                    return model
    try:
        return installed()[key]
    except KeyError:
        raise UnknownModelError(f"unknown model id {bytes(model_id).hex()}: this install has "
                                f"{', '.join(m.hex() for m in installed()) or 'no models'}"
                                ) from None


def find(name_or_id: str) -> Model:
    """A model by name (``isic-lesion-v0``) or by hex id (a unique prefix is enough)."""
    key = name_or_id.lower()
    named = [m for m in installed().values() if m.name.lower() == key]
    if len(named) > 1 and sum(modelfiles.is_builtin(m.path) for m in named) == 1:
        # a file of SEGCODEC_MODEL_PATH that takes a built-in model's name never shadows it;
        # it is named by its id
        named = [m for m in named if modelfiles.is_builtin(m.path)]
    hits = named or [m for m in installed().values() if m.model_id.hex().startswith(key)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise UnknownModelError(f"unknown model {name_or_id!r}; see `segcodec models`")
    raise UnknownModelError(f"model {name_or_id!r} is ambiguous: "
                            f"{', '.join(m.model_id.hex() for m in hits)}")


def default_for(ndim: int) -> Model:
    """The model picked for a 2D image or a 3D volume when none is named: the one the
    built-in index (``segcodec/models/index.json``) names; never a file of
    SEGCODEC_MODEL_PATH, whatever its name or manifest says.  Looked up once per process
    (every encode without a model asks), until ``reload``."""
    with _cache_lock:
        if ndim in _defaults:
            return _defaults[ndim]
    index = modelfiles.read_index()
    name = index["defaults"].get(f"{ndim}d")
    file = index["models"].get(name, {}).get("file")
    path = BUILTIN_DIR / file if file else None
    if path is None or not path.is_file():
        raise UnknownModelError(f"no default {ndim}D model is installed; name one with --model")
    with _cache_lock:  # that file alone: an encode need not load every model
        _defaults[ndim] = _load(path)
    return _defaults[ndim]


def write_model_file(out_dir: Path, manifest: dict | Manifest, state_dict: dict,
                     table: np.ndarray) -> Path:
    """Serialise a model into ``out_dir/<name>-<sha8>.sgm`` and return the path; SgcError
    for a manifest or table the loader would refuse."""
    checked = manifest if isinstance(manifest, Manifest) else Manifest.from_json(manifest)
    manifest = checked.to_json() if isinstance(manifest, Manifest) else manifest
    arch = checked.architecture
    table = entropy.check_table(table, arch.latent_channels, arch.ndim)
    import torch
    buf = io.BytesIO()
    torch.save({"manifest": json.dumps(manifest, sort_keys=True),
                "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
                "tables": torch.from_numpy(table.astype(np.int32))}, buf)
    blob = buf.getvalue()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{checked.name}-{hashlib.sha256(blob).hexdigest()[:8]}{SUFFIX}"
    path.write_bytes(blob)
    index = modelfiles.read_index(out_dir)
    index["models"][checked.name] = {
        "file": path.name, "id": hashlib.sha256(blob).hexdigest()[:2 * MODEL_ID_BYTES],
        "task": checked.task, "ndim": arch.ndim,
        "labels": list(checked.labels), "colours": label_colours(len(checked.labels))}
    if checked.default:
        index["defaults"][f"{arch.ndim}d"] = checked.name
    modelfiles.write_index(index, out_dir)
    return path


# Background black, then colours that stay apart for the colour-blind (Okabe and Ito 2008).
_COLOURS = [(0, 0, 0), (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66),
            (0, 114, 178), (213, 94, 0), (204, 121, 167)]


def label_colours(n: int) -> list[list[int]]:
    return [list(_COLOURS[i % len(_COLOURS)]) for i in range(n)]
