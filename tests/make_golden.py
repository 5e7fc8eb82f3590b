"""Add to fixtures/golden/: .sgc files of the fixtures and the hashes they decode to.

    python tests/make_golden.py MODEL [MODEL]    # e.g. isic-lesion-v1 hippocampus-v1

Each model codes the fixtures of its kind (2D or 3D).  Files are named <fixture>.<model>.sgc
and pinned in golden.json beside the pins of earlier models, which stay: every shipped model
keeps decoding its old files bit for bit.  Run it when a model is added, or when the format
changes on purpose (say why in the commit).
"""
import hashlib
import json
import sys
from pathlib import Path

import segcodec
from segcodec import labelcodec, zoo
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
    by_ndim = {zoo.find(name).ndim: zoo.find(name) for name in models}
    for rel in SOURCES:
        model = by_ndim.get(2 if rel.startswith("isic") else 3)
        if model is None:
            continue
        name = f"{Path(rel).name.split('.')[0]}.{model.name}.sgc"
        out = segcodec.encode_file(ROOT / "fixtures" / rel, GOLDEN / name, model=model.name)
        data = out.read_bytes()
        decoded = segcodec.decode(data)
        labels = segcodec.segment(data, device="cpu")
        pins[out.name] = {"source": rel, "model_id": decoded.header.model_id.hex(),
                          "bytes": len(data), "latents_sha256": latent_digest(decoded.latents),
                          "labels_sha256": digest(labels)}
        # the map itself, for test_golden's tolerance where another CPU flips a near-tie
        out.with_suffix(".labels").write_bytes(labelcodec.encode(labels))
    pin_file.write_text(json.dumps(pins, indent=1) + "\n")
    print(json.dumps(pins, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
