"""Format stability: golden .sgc files decode to pinned latents and labels."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import segcodec
from segcodec.bits import latent_digest

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
PINS = json.loads((GOLDEN / "golden.json").read_text())


@pytest.mark.parametrize("name", sorted(PINS))
def test_golden_file_decodes_to_pinned_latents_and_labels(name):
    pin = PINS[name]
    data = (GOLDEN / name).read_bytes()
    assert len(data) == pin["bytes"]
    decoded = segcodec.decode(data)
    assert decoded.header.model_id.hex() == pin["model_id"]
    assert latent_digest(decoded.latents) == pin["latents_sha256"]
    labels = segcodec.segment(data, device="cpu")
    assert hashlib.sha256(labels.tobytes()).hexdigest() == pin["labels_sha256"]


@pytest.mark.parametrize("name", sorted(PINS))
def test_encoder_reproduces_the_golden_latents(name, tmp_path):
    """The encoder runs C in floating point, so another CPU may flip a latent whose logit
    sits at 0; on the machines CI uses it gives the same bits."""
    pin = PINS[name]
    out = segcodec.encode_file(GOLDEN.parent / pin["source"], tmp_path / name,
                               model=pin["model_id"])
    fresh = segcodec.decode(out.read_bytes()).latents
    golden = segcodec.decode((GOLDEN / name).read_bytes()).latents
    assert np.mean(fresh != golden) <= 0.005
    assert out.read_bytes() == (GOLDEN / name).read_bytes() or np.any(fresh != golden)
