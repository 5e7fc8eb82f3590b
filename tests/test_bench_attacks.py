"""bench attacks: the crafted files are what they claim to be, and each is refused in one line
or decodes (the bench times them; tests never do)."""
import pytest
from bench import attacks

import segcodec
from segcodec import labelcodec, zoo


def test_the_attack_files_declare_what_the_audit_describes(tmp_path):
    cases, normal = attacks._files(tmp_path)
    by_name = {case: (kind, path) for case, kind, path, _ in cases}
    assert segcodec.read_header(by_name["a 2D .sgc declaring 59880x256"][1].read_bytes()).shape \
        == (59880, 256)
    with pytest.raises(segcodec.SgcError, match=f"more than model {zoo.default_for(3).name} takes"):
        segcodec.segment(by_name["a 3D .sgc declaring 406³"][1].read_bytes())
    with pytest.raises(segcodec.SgcError, match="nests deeper than 16"):
        segcodec.read_header(by_name["metadata nested 100,000 deep"][1].read_bytes())
    with pytest.raises(segcodec.SgcError, match="declares 66923416 voxels"):
        labelcodec.decode(by_name["a 17-byte label stream declaring 406³"][1].read_bytes())
    assert by_name["a 17-byte label stream declaring 406³"][1].stat().st_size <= 17
    with pytest.raises(segcodec.SgcError, match="1 bytes cannot hold 16777216 labels"):
        labelcodec.decode(by_name["a 17-byte label stream declaring 256³"][1].read_bytes())
    with pytest.raises(segcodec.SgcError, match=r"\(1600, 40000\) is longer than model"):
        segcodec.encode(by_name["a PNG of 40000x1600"][1])
    bomb = by_name["a .nii.gz declaring 1024x1024x256 (1 MiB of zeros inside)"][1]
    with pytest.raises(segcodec.SgcError, match="declares 268435456 voxels"):
        segcodec.encode(bomb)
