"""Model files: hash-checked, ids unambiguous, extra folders through SEGCODEC_MODEL_PATH."""
import hashlib
import shutil
import warnings

import numpy as np
import pytest

import segcodec
from segcodec import bits, zoo
from segcodec.errors import SgcError, UnknownModelError
from segcodec.networks import SegCodecNet

TINY = {"ndim": 2, "in_channels": 1, "latent_channels": 1, "c_widths": [2, 2],
        "g_widths": [2, 2], "s_widths": [2], "n_classes": 2, "work_shape": [8, 8]}


def tiny_model(folder, name="tiny"):
    manifest = {"name": name, "task": "test", "labels": ["bg", "fg"],
                "normalisation": {"kind": "zscore"}, "architecture": TINY}
    table = np.full(bits.n_contexts(1, 2), 32768)
    return zoo.write_model_file(folder, manifest, SegCodecNet(TINY).state_dict(), table)


@pytest.fixture
def extra_models(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.PATH_ENV, str(tmp_path))
    zoo.reload()
    yield tmp_path
    monkeypatch.delenv(zoo.PATH_ENV)
    zoo.reload()


def test_shipped_models_load_and_are_small():
    models = zoo.installed()
    assert {m.ndim for m in models.values()} == {2, 3}
    for m in models.values():
        assert m.path.stat().st_size < 10_000_000
        # The id and the name's hash, from the file's bytes (format_spec §6), not from zoo.
        digest = hashlib.sha256(m.path.read_bytes()).hexdigest()
        assert m.model_id.hex() == digest[:12] and m.path.name == f"{m.name}-{digest[:8]}.sgm"
        assert sum(p.numel() for p in m.net.compressor.parameters()) < 1_300_000


def test_extra_folder_model_is_usable_by_name(extra_models):
    path = tiny_model(extra_models)
    m = zoo.find("tiny")
    assert m.path == path and zoo.find(m.model_id.hex()[:6]) is m
    data = segcodec.encode(np.random.default_rng(0).random((30, 20)), model="tiny")
    assert segcodec.segment(data).shape == (30, 20)


def test_tampered_model_file_is_refused(extra_models):
    path = tiny_model(extra_models)
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(SgcError, match="does not match its hash"):
        zoo.load_file(path)
    # set aside: the other models keep working, and say why it is not there
    assert "does not match its hash" in zoo.broken()[path]
    assert {m.ndim for m in zoo.installed().values()} == {2, 3}
    segcodec.segment(segcodec.encode(np.zeros((32, 32), np.uint8) + 128, force=True))


def test_a_copy_of_a_model_file_is_set_aside_and_breaks_nothing(extra_models):
    """A byte copy of a shipped model in the model path made every encode, `models` and the
    service's start fail ("share the id ...; remove one")."""
    shipped = zoo.default_for(2).path
    shutil.copy(shipped, extra_models / shipped.name)
    zoo.reload()
    with pytest.warns(UserWarning, match="is a copy of"):
        models = zoo.installed()
    assert models[zoo.default_for(2).model_id].path == shipped  # the built-in one
    assert "a copy of" in zoo.broken()[extra_models / shipped.name]
    segcodec.segment(segcodec.encode(np.zeros((32, 32, 3), np.uint8) + 128, force=True))
    assert len(segcodec.list_models()) == len(models)
    from click.testing import CliRunner

    from segcodec.cli.main import main
    listed = CliRunner().invoke(main, ["models"])
    assert listed.exit_code == 0
    assert f"{extra_models / shipped.name} (from $SEGCODEC_MODEL_PATH), not used: a copy of " \
        f"{shipped}" in listed.output


def test_a_foreign_model_of_a_shipped_name_never_shadows_it(extra_models):
    """A planted model named as a shipped one made `--model NAME` ambiguous."""
    name = zoo.default_for(2).name
    path = tiny_model(extra_models, name)
    zoo.reload()
    assert zoo.find(name).path.parent == zoo.BUILTIN_DIR
    planted = zoo.load_file(path)
    assert zoo.find(planted.model_id.hex()).path == path  # by its id


def test_unknown_names():
    with pytest.raises(UnknownModelError, match="unknown model"):
        zoo.find("no-such-model")


def test_models_list_one_default_per_kind():
    found = segcodec.list_models()
    for ndim in (2, 3):
        defaults = [m["name"] for m in found if m["ndim"] == ndim and m["default"]]
        assert defaults == [zoo.default_for(ndim).name]


def test_a_planted_default_in_the_model_path_never_becomes_the_default(extra_models):
    before = {ndim: zoo.default_for(ndim).name for ndim in (2, 3)}
    manifest = {"name": "zzz-planted", "task": "test", "labels": ["bg", "fg"],
                "normalisation": {"kind": "zscore"}, "architecture": TINY, "default": True}
    zoo.write_model_file(extra_models, manifest, SegCodecNet(TINY).state_dict(),
                         np.full(bits.n_contexts(1, 2), 32768))
    zoo.reload()
    assert "zzz-planted" in {m.name for m in zoo.installed().values()}
    assert {ndim: zoo.default_for(ndim).name for ndim in (2, 3)} == before


def test_the_index_names_each_builtin_models_file_and_labels():
    from segcodec import modelfiles
    index = modelfiles.read_index()
    builtin = {m.name: m for m in zoo.installed().values()
               if m.path.parent == zoo.BUILTIN_DIR}
    assert set(index["models"]) == set(builtin)
    for name, entry in index["models"].items():
        assert entry["file"] == builtin[name].path.name
        assert entry["id"] == builtin[name].model_id.hex()
        assert entry["labels"] == builtin[name].labels
        assert len(entry["colours"]) == len(entry["labels"])
    assert set(index["defaults"]) == {"2d", "3d"}


def crafted(folder, name, content):
    """A model file with any content, named by its real hash (so only validation stops it)."""
    import hashlib
    import io
    import torch
    buf = io.BytesIO()
    torch.save(content, buf)
    blob = buf.getvalue()
    path = folder / f"{name}-{hashlib.sha256(blob).hexdigest()[:8]}.sgm"
    path.write_bytes(blob)
    return path


@pytest.mark.parametrize("change", [
    lambda m: m["architecture"].update(s_widths=[8000, 8000]),
    lambda m: m["architecture"].update(ndim=4),
    lambda m: m["architecture"].update(work_shape=[64]),
    lambda m: m["architecture"].pop("c_widths"),
    lambda m: m.pop("labels"),
])
def test_crafted_manifests_are_refused_before_any_network_is_built(extra_models, monkeypatch,
                                                                   change):
    import json
    import torch
    from segcodec import networks
    manifest = {"name": "evil", "task": "test", "labels": ["bg", "fg"],
                "normalisation": {"kind": "zscore"}, "architecture": dict(TINY)}
    change(manifest)
    path = crafted(extra_models, "evil", {
        "manifest": json.dumps(manifest), "state_dict": SegCodecNet(TINY).state_dict(),
        "tables": torch.from_numpy(np.full(bits.n_contexts(1, 2), 32768, np.int32))})
    monkeypatch.setattr(networks.SegCodecNet, "__init__",
                        lambda *a, **k: pytest.fail("a network was built"))
    with pytest.raises(SgcError, match="not a valid segcodec model"):
        zoo.load_file(path)


@pytest.mark.parametrize("content", [b"not a zip", {"manifest": 3}, [1, 2, 3], {}])
def test_any_malformed_model_file_is_an_sgc_error(extra_models, content):
    if isinstance(content, bytes):
        import hashlib
        path = extra_models / f"junk-{hashlib.sha256(content).hexdigest()[:8]}.sgm"
        path.write_bytes(content)
    else:
        path = crafted(extra_models, "junk", content)
    with pytest.raises(SgcError, match="not a valid segcodec model"):
        zoo.load_file(path)
    assert path in zoo.broken()


def test_a_file_is_decoded_after_loading_only_its_own_model(extra_models, monkeypatch):
    path = tiny_model(extra_models)
    (extra_models / "broken-00000000.sgm").write_bytes(b"not a model")
    tiny_id = zoo.load_file(path).model_id
    zoo.reload()
    loaded = []
    real = zoo.load_file
    monkeypatch.setattr(zoo, "load_file", lambda p: loaded.append(p.name) or real(p))
    assert zoo.get(tiny_id).name == "tiny"
    assert loaded == [path.name]  # not the shipped models, not the broken file
    assert zoo.get(tiny_id) is zoo.get(tiny_id) and len(loaded) == 1
    zoo.installed()  # the full scan reuses what is loaded and sets the broken file aside
    assert loaded.count(path.name) == 1 and "broken-00000000.sgm" in {p.name for p in
                                                                     zoo.broken()}
    with pytest.raises(UnknownModelError, match="unknown model id"):
        zoo.get(bytes(6))


def test_info_and_models_name_the_labels_of_ones_own_model(extra_models, tmp_path):
    """They reached the sidecar and `models --json`, but `info` said "labels": null."""
    import json

    from click.testing import CliRunner

    from segcodec.cli.main import main
    tiny_model(extra_models, "polyps")
    (extra_models / "broken-00000000.sgm").write_bytes(b"not a model")
    data = segcodec.encode(np.random.default_rng(0).random((16, 16)), model="polyps")
    (tmp_path / "x.sgc").write_bytes(data)
    info = json.loads(CliRunner().invoke(main, ["info", "--json", str(tmp_path / "x.sgc")]
                                         ).output)
    assert info["model"] == "polyps" and info["labels"] == ["bg", "fg"]
    text = CliRunner().invoke(main, ["info", str(tmp_path / "x.sgc")]).output
    assert "labels      0 bg, 1 fg" in text
    listed = CliRunner().invoke(main, ["models"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    mine = next(i for i, line in enumerate(lines) if " polyps " in line)
    assert "2D  test" in lines[mine] and lines[mine + 1].strip() == "labels: bg, fg"
    assert any("broken-00000000.sgm" in line and "not used: model file" in line
               for line in lines)


def test_an_id_prefix_never_shadows_a_name_and_the_builtin_folder_counts_once(extra_models,
                                                                             monkeypatch):
    shipped = zoo.default_for(2)
    path = tiny_model(extra_models, shipped.model_id.hex()[:4])  # named like an id prefix
    zoo.reload()
    assert zoo.find(shipped.model_id.hex()[:4]).path == path  # a name before an id prefix
    # the built-in folder named again in the model path is the same files, not copies
    monkeypatch.setenv(zoo.PATH_ENV, f"{extra_models}:{zoo.BUILTIN_DIR}/../models")
    zoo.reload()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert zoo.find(shipped.name).path.parent == zoo.BUILTIN_DIR
    assert not zoo.broken()
