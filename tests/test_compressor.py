"""The clinic's encoder without torch: model files read by a restricted unpickler, C and its
input in numpy, and an install whose torch is missing."""
import io
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import segcodec
from segcodec import api, backend, inputs, modelfiles, transforms, zoo
from segcodec.coder import Coder
from segcodec.errors import SgcError

from conftest import HIPPO, ISIC, hippo_volume, isic_image

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"


@pytest.mark.parametrize("path", modelfiles.model_files(), ids=lambda p: p.name)
def test_model_files_read_without_torch_as_torch_reads_them(path):
    blob = path.read_bytes()
    ours = modelfiles.read_content(blob)
    theirs = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    assert ours["manifest"] == theirs["manifest"]
    np.testing.assert_array_equal(ours["tables"], theirs["tables"].numpy())
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    for key, tensor in theirs["state_dict"].items():
        assert ours["state_dict"][key].dtype == tensor.numpy().dtype
        np.testing.assert_array_equal(ours["state_dict"][key], tensor.numpy())


class _Marker:
    def __reduce__(self):
        return (Path.touch, (Path(MARKER),))


MARKER = ""


def test_a_model_file_that_names_code_is_refused_and_runs_nothing(tmp_path):
    global MARKER
    MARKER = str(tmp_path / "ran")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"manifest": _Marker()}, protocol=2))
    import hashlib
    path = tmp_path / f"evil-{hashlib.sha256(buf.getvalue()).hexdigest()[:8]}.sgm"
    path.write_bytes(buf.getvalue())
    with pytest.raises(SgcError, match="is not allowed in a model file"):
        zoo.load_file(path)
    assert not Path(MARKER).exists()


class _Pid:
    def __init__(self, pid):
        self.pid = pid


class _Tensor:
    def __init__(self, *args):
        self.args = args

    def __reduce__(self):
        import collections
        return (torch._utils._rebuild_tensor_v2, (*self.args, False, collections.OrderedDict()))


def _archive(obj, storages: dict, compression=zipfile.ZIP_STORED) -> bytes:
    """A torch.save-like archive of ``obj`` (with _Pid storages and _Tensor tensors)."""
    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            return o.pid if isinstance(o, _Pid) else None
    data = io.BytesIO()
    Pickler(data, protocol=2).dump(obj)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as z:
        z.writestr("archive/data.pkl", data.getvalue())
        for key, values in storages.items():
            z.writestr(f"archive/data/{key}", values)
    return out.getvalue()


STORAGE = _Pid(("storage", torch.FloatStorage, "0", "cpu", 6))
SIX = np.arange(6, dtype="<f4").tobytes()


@pytest.mark.parametrize("tensor, error", [
    (_Tensor(STORAGE, 0, (2, 3), (3, 1)), None),  # a valid one
    (_Tensor(STORAGE, 0, (100,), (1,)), "not a contiguous run"),  # past its storage
    (_Tensor(STORAGE, 0, (10 ** 9,), (0,)), "not a contiguous run"),  # stride 0: 4 GB
    (_Tensor(_Tensor(STORAGE, 0, (2, 3), (3, 1)), 1, (5,), (1,)), "malformed tensor"),
    (_Tensor(STORAGE, 0, (3, 2), (1, 3)), "not a contiguous run"),  # transposed
])
def test_a_tensor_must_be_a_contiguous_run_of_a_storage(tensor, error):
    blob = _archive({"t": tensor}, {"0": SIX})
    if error is None:
        np.testing.assert_array_equal(modelfiles.read_content(blob)["t"],
                                      np.arange(6).reshape(2, 3))
    else:
        with pytest.raises(ValueError, match=error):
            modelfiles.read_content(blob)


def test_storages_must_be_stored_and_exactly_their_size():
    tensor = _Tensor(STORAGE, 0, (6,), (1,))
    with pytest.raises(ValueError, match="compressed entry"):  # a zip bomb's way in
        modelfiles.read_content(_archive({"t": tensor}, {"0": SIX}, zipfile.ZIP_DEFLATED))
    with pytest.raises(ValueError, match="holds 28 bytes, not 6 values"):
        modelfiles.read_content(_archive({"t": tensor}, {"0": SIX + bytes(4)}))


def test_a_model_file_with_bad_g_or_s_weights_is_set_aside_where_torch_runs(tmp_path,
                                                                            monkeypatch):
    m = zoo.find("isic-lesion-v4")
    weights = {k: torch.from_numpy(np.array(v)) for k, v in m.weights.items()
               if not k.startswith("reconstructor.")}
    manifest = dict(m.manifest.to_json(), name="no-g", default=False)
    path = zoo.write_model_file(tmp_path, manifest, weights, m.table)
    monkeypatch.setenv(modelfiles.PATH_ENV, str(tmp_path))
    zoo.reload()
    try:
        assert path in zoo.broken() and "reconstructor" in zoo.broken()[path]
        assert m.model_id in zoo.installed()  # the others keep working
    finally:
        monkeypatch.delenv(modelfiles.PATH_ENV)
        zoo.reload()


@pytest.mark.parametrize("name", sorted({m.name for m in zoo.installed().values()}))
def test_numpy_c_computes_what_torch_c_computes(name):
    m = zoo.find(name)
    arch = m.manifest.architecture.to_json()
    if m.ndim == 2:
        p = api.prepare(isic_image(0), model=m, force=True)
    else:
        volume, affine = hippo_volume(0)
        p = api.prepare(volume, model=m, affine=affine, force=True)
    x = Coder.of(m).grid(p.array)
    features_numpy, features_torch = [], []
    ours = m.compressor(x, features_numpy)
    with torch.no_grad():
        theirs = m.net.compressor(torch.from_numpy(x.astype(np.float32))[None],
                                  features_torch)[0].numpy()
    assert ours.shape == theirs.shape == tuple(m.latent_shape)
    np.testing.assert_allclose(ours, theirs, atol=1e-4 * max(1.0, np.abs(theirs).max()))
    assert len(features_numpy) == len(features_torch)
    assert arch["latent_channels"] == ours.shape[0]


@pytest.mark.parametrize("spec, shape, size", [
    ({"kind": "fixed", "mean": [0.7, 0.6, 0.5], "std": [0.2, 0.2, 0.3], "scale": 1 / 255},
     (3, 767, 1022), (64, 64)),  # shrinking: antialiased
    ({"kind": "fixed", "mean": [0.7, 0.6, 0.5], "std": [0.2, 0.2, 0.3], "scale": 1 / 255},
     (3, 40, 100), (64, 64)),  # one axis grows, one shrinks
    ({"kind": "fixed", "mean": 0.5, "std": 0.25, "scale": 1 / 255}, (1, 30, 20), (64, 64)),
    ({"kind": "zscore"}, (1, 35, 51, 35), (32, 48, 32)),
    ({"kind": "zscore"}, (1, 40, 60, 20), (32, 48, 32)),
    ({"kind": "ct", "low": -100.0, "high": 300.0, "mean": 80.0, "std": 60.0}, (1, 20, 30, 40),
     (16, 16, 16)),
])
def test_numpy_working_grid_agrees_with_torch(spec, shape, size):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, shape).astype(np.uint8) if spec["kind"] == "fixed" else \
        (rng.normal(size=shape) * 200 + 100).astype(np.float32)
    ours = inputs.working_grid(image, spec, size)
    theirs = transforms.working_grid(image, spec, size)[0].numpy()
    assert ours.dtype == np.float64 and ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=2e-5)


def test_every_golden_file_is_written_again_byte_for_byte():
    """The golden files were written by torch's float32 C; the numpy C writes each again."""
    pins = json.loads((GOLDEN / "golden.json").read_text())
    for name, pin in sorted(pins.items()):
        data = segcodec.encode(GOLDEN.parent / pin["source"], model=pin["model_id"], force=True)
        assert data == (GOLDEN / name).read_bytes(), name


_WITHOUT_TORCH = r"""
import importlib.abc, json, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
sys.meta_path.insert(0, NoTorch())
import segcodec
from segcodec import backend
out = {"2d": segcodec.encode(sys.argv[1]).hex(), "3d": segcodec.encode(sys.argv[2]).hex(),
       "info": segcodec.read_header(bytes.fromhex(segcodec.encode(sys.argv[1]).hex())).ndim,
       "models": len(segcodec.list_models())}
try:
    segcodec.segment(bytes.fromhex(out["2d"]))
except backend.MissingExtra as exc:
    out["segment"] = str(exc)
out["torch_loaded"] = "torch" in sys.modules
print(json.dumps(out))
"""


def test_encoding_needs_no_torch_and_segmenting_names_the_extra():
    run = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH, str(ISIC[0]), str(HIPPO[0])],
                         capture_output=True, text=True, check=True)
    out = json.loads(run.stdout)
    assert not out["torch_loaded"]
    assert bytes.fromhex(out["2d"]) == segcodec.encode(ISIC[0])  # what the torch install wrote
    assert bytes.fromhex(out["3d"]) == segcodec.encode(HIPPO[0])
    assert out["info"] == 2 and out["models"] == len(zoo.installed())
    assert out["segment"] == ("segmenting needs torch, which this install lacks: "
                              "pip install 'segcodec[server]'")


def test_threads_pass_to_workers_and_torch():
    before = torch.get_num_threads()
    try:
        backend.set_threads(1)
        assert backend.blas_threads() == 1 and torch.get_num_threads() == 1
        assert backend.os.environ[backend.THREADS_ENV] == "1"
    finally:
        backend.set_threads(None)
        torch.set_num_threads(before)
    assert backend.THREADS_ENV not in backend.os.environ
