"""Manifests (format_spec.md §6): every shipped one reads and writes back as it is; a bad one
is refused with its key named, by the loader and by export alike."""
import json

import numpy as np
import pytest

from segcodec import modelfiles, zoo
from segcodec.errors import SgcError
from segcodec.manifest import Manifest

GOOD = {"name": "m", "task": "t", "labels": ["background", "organ"],
        "normalisation": {"kind": "fixed", "scale": 1 / 255, "mean": [0.5] * 3,
                          "std": [0.25] * 3},
        "architecture": {"ndim": 2, "in_channels": 3, "latent_channels": 2,
                         "c_widths": [4, 4], "g_widths": [4, 4], "s_widths": [4],
                         "n_classes": 2, "work_shape": [8, 8]}}


def test_every_shipped_manifest_reads_and_writes_back_as_stored():
    for m in zoo.installed().values():
        stored = json.loads(modelfiles.read_content(m.path.read_bytes())["manifest"])
        manifest = Manifest.from_json(stored)
        assert manifest == m.manifest
        # Written back: the stored keys and values, with the architecture's optional keys
        # filled in as §6 defines their absence.
        assert manifest.to_json() == {**stored, "architecture": manifest.to_json()["architecture"]}
        assert Manifest.from_json(manifest.to_json()) == manifest


def test_absent_optional_keys_read_as_the_spec_says():
    m = Manifest.from_json(GOOD)
    assert (m.orientation, m.domain, m.default, m.training, m.parameters) == \
        (None, None, False, {}, {})
    assert m.architecture.s_norm is False and m.architecture.g_channels == 1
    assert "orientation" not in m.to_json() and "domain" not in m.to_json()


@pytest.mark.parametrize("change, named", [
    (lambda d: d.update(colour="red"), "'colour' is unknown"),
    (lambda d: d.pop("labels"), "lacks 'labels'"),
    (lambda d: d.update(labels=["background"]), "2 names"),
    (lambda d: d.update(labels=["background", 3]), "2 names"),
    (lambda d: d.update(name=""), "name"),
    (lambda d: d.update(normalisation={"kind": "minmax"}), "kind"),
    (lambda d: d["normalisation"].update(std=[0.25, 0.0, 0.25]), "std must be positive"),
    (lambda d: d["normalisation"].update(mean="0.5"), "mean"),
    (lambda d: d["normalisation"].update(scale=float("nan")), "scale"),
    (lambda d: d.update(orientation="RAS"), "orientation"),
    (lambda d: d.update(default="yes"), "default"),
    (lambda d: d.update(training=[]), "training"),
    (lambda d: d["architecture"].update(n_classes=3), "3 names"),
    (lambda d: d.update(domain={"channels": 1}), "domain"),
])
def test_a_bad_manifest_is_refused_naming_what_is_wrong(change, named, tmp_path):
    d = json.loads(json.dumps(GOOD))
    change(d)
    with pytest.raises(SgcError, match=named):
        Manifest.from_json(d)
    with pytest.raises(SgcError, match=named):  # export never writes it
        zoo.write_model_file(tmp_path, d, {}, np.zeros((1,), np.int32))
    assert not list(tmp_path.iterdir())
