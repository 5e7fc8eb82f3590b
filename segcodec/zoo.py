"""Installed models: weights, entropy tables and manifest in one hash-checked file (spec §6).

Models live in ``segcodec/models/`` and in any folder listed in ``SEGCODEC_MODEL_PATH``
(os.pathsep-separated).  A model's id is the first 6 bytes of its file's SHA-256; the file
name ends in the first 8 hex digits, and loading refuses a file whose hash disagrees.
"""
from __future__ import annotations

import hashlib
import io
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import entropy
from .container import MODEL_ID_BYTES
from .errors import SgcError, UnknownModelError
from .networks import SegCodecNet

from . import modelfiles
from .modelfiles import _NAME, BUILTIN_DIR, PATH_ENV, SUFFIX, model_dirs, model_files  # noqa: F401 (re-exported)


@dataclass
class Model:
    """A loaded model: C, g and s, its entropy table and its manifest."""
    model_id: bytes
    path: Path
    manifest: dict
    table: np.ndarray
    net: SegCodecNet
    _on_device: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def ndim(self) -> int:
        return self.manifest["architecture"]["ndim"]

    @property
    def in_channels(self) -> int:
        return self.manifest["architecture"]["in_channels"]

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.net.latent_shape()

    @property
    def labels(self) -> list[str]:
        return self.manifest["labels"]

    def net_on(self, device: torch.device) -> SegCodecNet:
        """The network on ``device``, copied there once and shared by later calls."""
        with self._lock:
            if device not in self._on_device:
                self._on_device[device] = self.net if device.type == "cpu" \
                    else _copy_to(self.net, device)
            return self._on_device[device]

    def describe(self) -> dict:
        return {"id": self.model_id.hex(), "name": self.name, "task": self.manifest["task"],
                "ndim": self.ndim, "input_channels": self.in_channels,
                "labels": self.labels,
                "default": default_for(self.ndim).model_id == self.model_id,
                "normalisation": self.manifest["normalisation"],
                "work_shape": self.manifest["architecture"]["work_shape"],
                "latent_shape": list(self.latent_shape), "file": str(self.path)}


def _copy_to(net: SegCodecNet, device: torch.device) -> SegCodecNet:
    clone = SegCodecNet(net.arch)
    clone.load_state_dict(net.state_dict())
    return clone.to(device).eval()


def load_file(path: Path) -> Model:
    """Read, hash-check and build one model file."""
    path = Path(path)
    blob = path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    match = _NAME.match(path.name)
    if not match or match["hash"] != digest[:8]:
        raise SgcError(f"model file {path.name} does not match its hash (sha256 {digest[:8]}…);"
                       " it is corrupted or misnamed")
    try:
        content = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        manifest = json.loads(content["manifest"])
        net = SegCodecNet(manifest["architecture"])
        net.load_state_dict(content["state_dict"])
        arch = manifest["architecture"]
        table = entropy.check_table(content["tables"].numpy(), arch["latent_channels"],
                                    arch["ndim"])
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise SgcError(f"model file {path.name} is not a valid segcodec model ({exc})") from None
    net.eval()
    return Model(bytes.fromhex(digest[:2 * MODEL_ID_BYTES]), path, manifest, table, net)


_cache: dict[bytes, Model] | None = None
_cache_lock = threading.Lock()


def installed() -> dict[bytes, Model]:
    """All installed models by id, loaded once per process."""
    global _cache
    with _cache_lock:
        if _cache is None:
            models: dict[bytes, Model] = {}
            for path in model_files():
                model = load_file(path)
                if model.model_id in models and models[model.model_id].path != path:
                    other = models[model.model_id].path
                    raise SgcError(f"model files {other} and {path} share the id "
                                   f"{model.model_id.hex()}; remove one")
                models[model.model_id] = model
            _cache = models
        return _cache


def reload() -> None:
    """Forget loaded models (after changing SEGCODEC_MODEL_PATH, say)."""
    global _cache
    with _cache_lock:
        _cache = None


def get(model_id: bytes) -> Model:
    try:
        return installed()[bytes(model_id)]
    except KeyError:
        raise UnknownModelError(f"unknown model id {bytes(model_id).hex()}: this install has "
                                f"{', '.join(m.hex() for m in installed()) or 'no models'}"
                                ) from None


def find(name_or_id: str) -> Model:
    """A model by name (``isic-lesion-v0``) or by hex id (a unique prefix is enough)."""
    key = name_or_id.lower()
    hits = [m for m in installed().values()
            if m.name.lower() == key or m.model_id.hex().startswith(key)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise UnknownModelError(f"unknown model {name_or_id!r}; see `segcodec models`")
    raise UnknownModelError(f"model {name_or_id!r} is ambiguous: "
                            f"{', '.join(m.model_id.hex() for m in hits)}")


def default_for(ndim: int) -> Model:
    """The model picked for a 2D image or a 3D volume when none is named: the one the
    built-in index (``segcodec/models/index.json``) names; never a file of
    SEGCODEC_MODEL_PATH, whatever its name or manifest says."""
    name = modelfiles.read_index()["defaults"].get(f"{ndim}d")
    hits = [m for m in installed().values()
            if m.name == name and m.path.parent.resolve() == BUILTIN_DIR.resolve()]
    if not hits:
        raise UnknownModelError(f"no default {ndim}D model is installed; name one with --model")
    return hits[0]


def write_model_file(out_dir: Path, manifest: dict, state_dict: dict,
                     table: np.ndarray) -> Path:
    """Serialise a model into ``out_dir/<name>-<sha8>.sgm`` and return the path."""
    arch = manifest["architecture"]
    table = entropy.check_table(table, arch["latent_channels"], arch["ndim"])
    buf = io.BytesIO()
    torch.save({"manifest": json.dumps(manifest, sort_keys=True),
                "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
                "tables": torch.from_numpy(table.astype(np.int32))}, buf)
    blob = buf.getvalue()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{manifest['name']}-{hashlib.sha256(blob).hexdigest()[:8]}{SUFFIX}"
    path.write_bytes(blob)
    index = modelfiles.read_index(out_dir)
    index["models"][manifest["name"]] = {
        "file": path.name, "id": hashlib.sha256(blob).hexdigest()[:2 * MODEL_ID_BYTES],
        "task": manifest["task"], "ndim": arch["ndim"],
        "labels": manifest["labels"], "colours": label_colours(len(manifest["labels"]))}
    if manifest.get("default"):
        index["defaults"][f"{arch['ndim']}d"] = manifest["name"]
    modelfiles.write_index(index, out_dir)
    return path


# Background black, then colours that stay apart for the colour-blind (Okabe and Ito 2008).
_COLOURS = [(0, 0, 0), (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66),
            (0, 114, 178), (213, 94, 0), (204, 121, 167)]


def label_colours(n: int) -> list[list[int]]:
    return [list(_COLOURS[i % len(_COLOURS)]) for i in range(n)]
