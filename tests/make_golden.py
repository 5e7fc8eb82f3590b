"""Add to fixtures/golden/: .sgc files of the fixtures and the hashes they decode to.

    python tests/make_golden.py MODEL_2D MODEL_3D    # e.g. isic-lesion-v1 hippocampus-v1

Files are named <fixture>.<model>.sgc and pinned in golden.json beside the pins of earlier
models, which stay: every shipped model keeps decoding its old files bit for bit.  Run it when
a model is added, or when the format changes on purpose (say why in the commit).
"""
import hashlib
import json
import sys
from pathlib import Path

import segcodec
from segcodec import zoo
from segcodec.bits import latent_digest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "fixtures" / "golden"
SOURCES = ["isic/ISIC_0001769.jpg", "isic/ISIC_0012222.jpg",
           "hippocampus/hippocampus_019.nii.gz", "hippocampus/hippocampus_024.nii.gz"]


def digest(labels) -> str:
    return hashlib.sha256(labels.tobytes()).hexdigest()


def main(models: list[str]) -> None:
    GOLDEN.mkdir(exist_ok=True)
    pin_file = GOLDEN / "golden.json"
    pins = json.loads(pin_file.read_text()) if pin_file.exists() else {}
    for rel in SOURCES:
        ndim = 2 if rel.startswith("isic") else 3
        model = zoo.find(models[ndim - 2])
        name = f"{Path(rel).name.split('.')[0]}.{model.name}.sgc"
        out = segcodec.encode_file(ROOT / "fixtures" / rel, GOLDEN / name, model=model.name)
        data = out.read_bytes()
        decoded = segcodec.decode(data)
        pins[out.name] = {"source": rel, "model_id": decoded.header.model_id.hex(),
                          "bytes": len(data), "latents_sha256": latent_digest(decoded.latents),
                          "labels_sha256": digest(segcodec.segment(data, device="cpu"))}
    pin_file.write_text(json.dumps(pins, indent=1) + "\n")
    print(json.dumps(pins, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:3])
