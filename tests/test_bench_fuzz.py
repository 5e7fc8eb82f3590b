"""bench fuzz: structure-aware inputs with valid CRCs reach the parsers and fail as SgcError."""
import json

from bench import fuzz

from segcodec import container, labelcodec


def test_mutated_inputs_keep_valid_crcs_and_only_raise_sgc_errors(tmp_path):
    import numpy as np
    rng = np.random.default_rng(3)
    seed = fuzz._seed_files()[0]
    for _ in range(20):  # each gets past the checksum: the CRC message never appears
        for blob in (fuzz._mutated_sgc(seed, rng), fuzz._byte_edits(seed, rng)):
            try:
                container.read(blob)
            except Exception as exc:
                assert "CRC" not in str(exc)
        try:
            labelcodec.decode(fuzz._mutated_labels(rng))
        except Exception as exc:
            assert "CRC" not in str(exc)
    fuzz.main(["--inputs", "120", "--dicom", "60", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "fuzz.json").read_text())
    assert result["inputs"] == 120 and sum(result["outcomes"].values()) == 120
    assert result["unexpected_exceptions"] == {}, result["examples"]
    assert result["outcomes"].get("refused", 0) > 0
    dicom = result["dicom"]
    assert dicom["inputs"] == 60 and dicom["unexpected_exceptions"] == {}, dicom["examples"]
    assert dicom["outcomes"].get("refused", 0) > 0 and dicom["outcomes"].get("decoded", 0) > 0


def test_dicom_mutations_change_what_the_readers_use():
    import numpy as np

    from bench import dicomfuzz
    sets, series = dicomfuzz.seed_inputs()
    assert len(sets) >= 10 and len(series) == 4
    rng = np.random.default_rng(0)
    changed = 0
    for i in range(40):
        seed = sets[i % len(sets)]
        mutated = dicomfuzz.mutate(seed, rng)
        changed += any(mutated.get(k) != seed.get(k) for k in dicomfuzz.ATTRIBUTES)
    assert changed >= 30
