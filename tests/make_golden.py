"""Regenerate fixtures/golden/: .sgc files of the fixtures and the hashes they decode to.

    python tests/make_golden.py

Run it only when the format or a shipped model changes on purpose, and say why in the commit.
"""
import hashlib
import json
from pathlib import Path

import segcodec
from segcodec.bits import latent_digest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "fixtures" / "golden"
SOURCES = ["isic/ISIC_0001769.jpg", "isic/ISIC_0012222.jpg",
           "hippocampus/hippocampus_019.nii.gz", "hippocampus/hippocampus_024.nii.gz"]


def digest(labels) -> str:
    return hashlib.sha256(labels.tobytes()).hexdigest()


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    pins = {}
    for rel in SOURCES:
        out = segcodec.encode_file(ROOT / "fixtures" / rel, GOLDEN / (Path(rel).name.split(".")[0]
                                                                      + ".sgc"))
        data = out.read_bytes()
        decoded = segcodec.decode(data)
        pins[out.name] = {"source": rel, "model_id": decoded.header.model_id.hex(),
                          "bytes": len(data), "latents_sha256": latent_digest(decoded.latents),
                          "labels_sha256": digest(segcodec.segment(data, device="cpu"))}
    (GOLDEN / "golden.json").write_text(json.dumps(pins, indent=1) + "\n")
    print(json.dumps(pins, indent=1))


if __name__ == "__main__":
    main()
