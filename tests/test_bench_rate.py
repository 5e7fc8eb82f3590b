"""bench/rate.py in --smoke mode (fixtures, untrained nets) and the codecs of bench/codecs.py."""
import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bench import codecs, common, rate
from bench.common import FIXTURES, NDIM, REPO, Sample

FAMILIES = {"uncompressed", "png", "nifti-gz", "zstd", "jpeg2000", "h264", "jpegxl", "hevc", "av1",
            "webp", "segcodec", "autoseg", "labels"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("rate")
    rate.main(["--smoke", "--out", str(out)])
    return out, json.loads((out / "rate.json").read_text())


@pytest.fixture(scope="module")
def rgb():
    return np.asarray(Image.open(FIXTURES / "isic" / "ISIC_0001769.jpg").convert("RGB"))


def test_smoke_outputs(smoke):
    out, result = smoke
    for name in ("rate.md", "rate_isic.png", "rate_hippocampus.png"):
        assert (out / name).stat().st_size > 0
    assert {r["codec"] for r in result["rows"]} == FAMILIES
    for task in ("isic", "hippocampus"):
        codecs_of_task = {r["codec"] for r in result["rows"] if r["task"] == task}
        assert FAMILIES - codecs_of_task == ({"nifti-gz"} if task == "isic" else {"png"})
    assert result["machine"]["torch"] and result["command"].startswith("python -m bench rate")
    assert {h["against"] for h in result["headline"]} == {"jpeg2000", "h264", "jpegxl", "hevc",
                                                          "av1", "webp"}


def test_one_task_rerun_keeps_the_other_tasks_rows(smoke, tmp_path):
    out, result = smoke
    (tmp_path / "rate.json").write_text((out / "rate.json").read_text())
    rate.main(["--smoke", "--tasks", "isic", "--out", str(tmp_path)])
    merged = json.loads((tmp_path / "rate.json").read_text())
    assert merged["tasks"] == ["isic", "hippocampus"]
    hippo = [r for r in result["rows"] if r["task"] == "hippocampus"]
    assert [r for r in merged["rows"] if r["task"] == "hippocampus"] == hippo
    assert merged["commands"]["isic"].endswith("--tasks isic --out " + str(tmp_path))


def test_smoke_rows_are_consistent(smoke):
    _, result = smoke
    for r in result["rows"]:
        pixels = result["cases"][r["task"]]["pixels"]
        assert r["cases"] == len(pixels) == len(r["case_bytes"])
        assert math.isfinite(r["mean_bpp"]) and r["mean_bpp"] > 0
        bpp = np.mean([8 * b / p for b, p in zip(r["case_bytes"], pixels)])
        assert r["mean_bpp"] == pytest.approx(bpp, rel=1e-5)
        assert r["mean_bytes"] == pytest.approx(np.mean(r["case_bytes"]), abs=0.05)
        for v in [*r["dice"].values(), *r["iou"].values(), r["mean_dice"]]:
            assert 0.0 <= v <= 1.0
        if r["codec"] == "labels":
            assert r["mean_dice"] == 1.0
    raw = [r for r in result["rows"] if r["task"] == "isic" and r["codec"] == "uncompressed"]
    assert raw[0]["mean_bpp"] == 24


@pytest.mark.parametrize("codec", ["jpeg2000", "jpegxl", "h264", "hevc", "av1", "webp"])
def test_smoke_rate_grows_with_the_setting(smoke, codec):
    _, result = smoke
    for task in ("isic", "hippocampus"):
        rows = [r for r in result["rows"] if r["task"] == task and r["codec"] == codec]
        pts = [r["mean_bytes"] for r in sorted(rows, key=lambda r: r["setting"])]
        if codecs.by_name(codec).param == "crf":  # a higher CRF is a coarser quantiser
            pts = pts[::-1]
        assert len(pts) >= 2 and all(a < b for a, b in zip(pts, pts[1:]))


def test_jpeg2000_more_target_more_bytes(rgb):
    sizes = [len(codecs.jpeg2000_encode(rgb, bpp)) for bpp in (0.05, 0.2, 1.0)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert len(codecs.jpeg2000_encode(rgb, 1.0)) * 8 / (256 * 256) == pytest.approx(1.0, rel=0.1)


def _cases():
    smooth = np.add.outer(np.arange(37.0), np.arange(51.0))
    yield np.stack([smooth * 2, smooth * 3 % 255, 255 - smooth * 2], -1).astype(np.uint8)
    yield (smooth * 2).astype(np.uint8)  # gray, odd sides
    vol = np.stack([smooth * (1 + k) for k in range(5)]).astype(np.float32) * 7.5 - 300
    yield vol  # float volume, odd sides, negative values
    yield (vol / 3).astype(np.int16)


_HIGH = {"jpeg2000": 2.0, "h264": 10, "hevc": 10, "av1": 10, "webp": 95}


@pytest.mark.parametrize("codec", list(_HIGH))
def test_round_trip_shapes_and_dtypes(codec):
    enc, dec = (getattr(codecs, f"{codec}_encode"), getattr(codecs, f"{codec}_decode"))
    setting = _HIGH[codec]
    for array in _cases():
        data = enc(array, setting)
        again = enc(array, setting)
        if codec == "hevc" and array.ndim == 3 and array.shape[-1] != 3:
            assert abs(len(again) - len(data)) <= 0.05 * len(data)  # x265: hevc_encode
        else:
            assert again == data  # deterministic
        back = dec(data, array.shape, array.dtype)
        assert back.shape == array.shape and back.dtype == array.dtype
        span = float(array.max()) - float(array.min())
        err = np.abs(back.astype(np.float64) - array).mean()
        assert err < 0.1 * span, (codec, array.shape, array.dtype, err)


def _samples():
    """_cases() as the bench's samples: 2D ones as ISIC inputs, volumes as hippocampus ones."""
    for i, array in enumerate(_cases()):
        yield Sample(f"case{i}", "isic" if array.ndim == 2 or array.shape[-1] == 3
                     else "hippocampus", array)


def test_jpegxl_round_trips_close_at_high_quality(rgb):
    jxl = codecs.by_name("jpegxl")
    for sample in [Sample("rgb", "isic", rgb), *_samples()]:
        array = sample.array
        data = jxl.encode(sample, 90)
        assert jxl.encode(sample, 90) == data  # deterministic
        back = jxl.decode(data, sample)
        assert back.shape == array.shape and back.dtype == array.dtype
        span = float(array.max()) - float(array.min())
        err = np.abs(back.astype(np.float64) - array).mean()
        assert err < 0.02 * span, (array.shape, array.dtype, err)


def test_jpegxl_bytes_shrink_as_quality_drops(rgb):
    jxl, sample = codecs.by_name("jpegxl"), Sample("rgb", "isic", rgb)
    sizes = [len(jxl.encode(sample, q)) for q in (90, 50, 10, 0)]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0] / 5
    errors = [np.abs(jxl.decode(jxl.encode(sample, q), sample).astype(float) - rgb).mean()
              for q in (90, 10)]
    assert errors[0] < errors[1]


def test_lossless_codecs_give_the_original_back(rgb):
    volume = next(s for s in _samples() if s.task == "hippocampus")
    for sample in (Sample("rgb", "isic", rgb), Sample(volume.name, volume.task, volume.array,
                                                      affine=np.eye(4))):
        for codec in codecs.CODECS:
            if codec.output == "original" and NDIM[sample.task] in codec.ndims:
                back = codec.decode(codec.encode(sample, "lossless"), sample)
                assert np.array_equal(back, sample.stored) and back.dtype == sample.stored.dtype


class _JPEG(codecs.Codec):
    """Baseline JPEG through Pillow: the one class a new codec needs."""

    name, title, param = "jpeg", "JPEG", "quality"
    ndims = (2,)
    sweep = smoke_sweep = (5, 50)

    def encode(self, sample, quality):
        buf = __import__("io").BytesIO()
        Image.fromarray(sample.array).save(buf, "JPEG", quality=quality)
        return buf.getvalue()

    def decode(self, data, sample):
        return np.asarray(Image.open(__import__("io").BytesIO(data)))


def test_a_registered_codec_class_joins_the_rate_table(smoke, tmp_path, monkeypatch):
    out, result = smoke
    (tmp_path / "rate.json").write_text((out / "rate.json").read_text())
    monkeypatch.setattr(codecs, "CODECS", (*codecs.CODECS, _JPEG()))
    merged = rate.main(["--smoke", "--codecs", "jpeg", "--out", str(tmp_path)])
    new = [r for r in merged["rows"] if r["codec"] == "jpeg"]
    assert [(r["task"], r["setting"], r["segmentor"]) for r in new] == [
        ("isic", 5, "seg"), ("isic", 50, "seg")]  # 2D only
    assert new[0]["mean_bytes"] < new[1]["mean_bytes"] and new[0]["decode_ms"] > 0
    # every other row is kept as it was, each task's codecs in registry order
    assert [r for r in merged["rows"] if r["codec"] != "jpeg"] == result["rows"]
    assert merged["settings"]["jpeg_quality"] == [5, 50]
    assert merged["commands"]["isic jpeg"].endswith("--codecs jpeg --out " + str(tmp_path))
    assert {h["against"] for h in merged["headline"] if h["task"] == "isic"} >= {"jpeg"}
    md = (tmp_path / "rate.md").read_text()
    assert "| jpeg | 5 | seg |" in md and "| jpeg | 50 | seg |" in md
    with pytest.raises(SystemExit, match="cases differ"):
        rate.main(["--smoke", "--codecs", "jpeg", "--limit", "1", "--out", str(tmp_path)])


def test_sei_stripped_and_stream_decodes(rgb):
    frames = codecs._pad_even(rgb[None])
    raw = codecs._x264(frames, 30, "yuv444p", "rgb24", codecs.X264_OPTIONS)
    assert b"x264" in raw
    stripped = codecs.strip_sei(raw)
    assert b"x264" not in stripped and len(raw) - len(stripped) > 300
    assert 6 in map(codecs.nal_type, codecs.nal_units(raw))
    assert 6 not in map(codecs.nal_type, codecs.nal_units(stripped))
    assert codecs.h264_encode(rgb, 30) == stripped
    a = codecs.h264_decode(raw, rgb.shape, rgb.dtype)
    b = codecs.h264_decode(stripped, rgb.shape, rgb.dtype)
    assert np.array_equal(a, b)


def test_hevc_stream_has_no_encoder_sei(rgb):
    """x265 writes its version and options as SEI unless told not to (info=0)."""
    data = codecs.hevc_encode(rgb, 30)
    types = [(u[u.index(b"\x00\x00\x01") + 3] >> 1) & 0x3F for u in codecs.nal_units(data)]
    assert types[:3] == [32, 33, 34] and not {39, 40} & set(types)  # VPS SPS PPS, no SEI
    assert b"x265" not in data


_H264_VOLUME_DIGEST = """
import hashlib, sys
import nibabel as nib, numpy as np
from bench import codecs
vol = np.asarray(nib.load(sys.argv[1]).dataobj)
digest = hashlib.sha256()
for crf in (45, 36, 30):
    for _ in range(2):
        data = codecs.h264_encode(vol, crf)
        digest.update(data)
        digest.update(codecs.h264_decode(data, vol.shape, vol.dtype).tobytes())
print(digest.hexdigest())
"""


def test_h264_volume_same_bytes_in_every_process():
    """A volume (odd sides, so edge-padded) codes to the same bytes and decodes to the same
    voxels in two fresh processes whose heaps start out different (glibc fills freed and new
    blocks with MALLOC_PERTURB_): x264 must not read uninitialised memory into the stream."""
    volume = FIXTURES / "hippocampus" / "hippocampus_019.nii.gz"
    digests = []
    for perturb in ("0", "165"):
        env = {**os.environ, "MALLOC_PERTURB_": perturb}
        proc = subprocess.run([sys.executable, "-c", _H264_VOLUME_DIGEST, str(volume)], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        digests.append(proc.stdout.strip())
    assert digests[0] == digests[1]


def test_lossless_references(rgb):
    png = codecs.png_bytes(rgb)
    assert np.array_equal(np.asarray(Image.open(__import__("io").BytesIO(png))), rgb)
    import zstandard
    assert zstandard.ZstdDecompressor().decompress(codecs.zstd_bytes(rgb)) == rgb.tobytes()
    vol = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    assert len(codecs.nifti_gz_bytes(vol, np.eye(4))) > 0
    assert codecs.nifti_gz_bytes(vol, np.eye(4)) == codecs.nifti_gz_bytes(vol, np.eye(4))


def test_smoke_reports_the_papers_criterion(smoke):
    _, result = smoke
    for task in ("isic", "hippocampus"):
        crit = [c for c in result["within_reference"] if c["task"] == task]
        ref = next(r for r in result["rows"] if r["task"] == task
                   and r["codec"] == "uncompressed" and r["segmentor"] == "seg")
        assert {c["codec"] for c in crit} >= {"jpeg2000", "h264"}
        assert all(c["target_dice"] == round(ref["mean_dice"] - 0.01, 4) for c in crit)
        for c in crit:
            if c["codec"].startswith("segcodec"):
                assert (c["note"] == "meets it") == (c["dice"] >= c["target_dice"])


def test_criterion_interpolates_the_peer_curve():
    rows = [{"task": "t", "codec": "uncompressed", "segmentor": "seg", "mean_dice": 0.85,
             "mean_bpp": 24.0, "setting": "raw"},
            {"task": "t", "codec": "jpeg2000", "mean_bpp": 0.01, "mean_dice": 0.70},
            {"task": "t", "codec": "jpeg2000", "mean_bpp": 0.04, "mean_dice": 0.90},
            {"task": "t", "codec": "h264", "mean_bpp": 0.02, "mean_dice": 0.80},
            {"task": "t", "codec": "segcodec", "setting": "m", "mean_bpp": 0.008,
             "mean_dice": 0.845}]
    crit = {c["codec"]: c for c in rate.reference_criterion(rows)}
    # 0.84 lies 0.7 of the way from 0.70 to 0.90: 0.01 * 4**0.7 bpp
    assert crit["jpeg2000"]["bpp"] == round(0.01 * 4 ** 0.7, 5)
    assert crit["h264"]["bpp"] is None and crit["h264"]["note"] == "not reached"
    assert crit["segcodec m"]["note"] == "meets it"
    strict = {c["codec"]: c for c in rate.reference_criterion(rows, 0.005)}
    assert strict["jpeg2000"]["bpp"] == round(0.01 * 4 ** 0.725, 5)  # 0.845: 0.725 of the way
    (best,) = rate.best_peers(rate.headline(rows), {0.01: list(crit.values()),
                                                    0.005: list(strict.values())})
    # at 0.845 Dice only jpeg2000 gets there (h264 tops out at 0.80)
    assert best["equal_dice"]["peer"] == "jpeg2000"
    assert best["equal_dice"]["bpp"] == round(0.01 * 4 ** 0.725, 5)
    assert best["within_0.01"] == {"segcodec_meets": True, "peer": "jpeg2000",
                                   "bpp": crit["jpeg2000"]["bpp"], "note": ""}
    assert best["within_0.005"]["segcodec_meets"] is True
    # a run of some codecs measures no uncompressed row: the equal-Dice peer still stands
    peers_only = [r for r in rows if r["codec"] != "uncompressed"]
    (alone,) = rate.best_peers(rate.headline(peers_only), {0.01: [], 0.005: []})
    assert alone["equal_dice"]["peer"] == "jpeg2000" and "within_0.01" not in alone


def test_reference_round_trips_and_a_missing_one_is_refused(tmp_path):
    import torch

    from bench import references
    from segcodec.train import loop, recipes
    cfg = dataclasses.replace(recipes.config("isic-seg"), steps=2, batch=2, normalisation={
        "kind": "fixed", "scale": 1 / 255, "mean": [0.5] * 3, "std": [0.2] * 3})
    x = torch.randn(4, 3, 64, 64)
    t = torch.softmax(torch.randn(4, 2, 64, 64), 1)
    loop.train(cfg, x, t, tmp_path / "run", val=(x, [np.zeros((64, 64), np.uint8)] * 4))
    references.save(tmp_path / "run" / "checkpoint.pt", references.path_for("isic", tmp_path))
    seg = references.load("isic", tmp_path)
    net, _ = loop.load_checkpoint(tmp_path / "run" / "checkpoint.pt", best=True)
    image = np.random.default_rng(0).integers(0, 256, (3, 80, 70)).astype(np.uint8)
    with torch.no_grad():
        expected = net(seg.grid(image))
        assert torch.equal(seg.net(seg.grid(image)), expected)
    with pytest.raises(FileNotFoundError, match="python -m bench references"):
        references.load("hippocampus", tmp_path)


def test_rate_on_a_data_set_folder_the_bench_has_never_seen(tmp_path, monkeypatch):
    """A user's own data set: its seg run segments the peers, its exported model is
    segcodec's row, and its section joins rate.json beside the shipped tasks'."""
    from click.testing import CliRunner
    from test_datasets import msd_folder

    from segcodec import zoo
    from segcodec.cli.main import main as cli
    root = msd_folder(tmp_path / "Task99_Organ", n_train=6, n_test=2)
    runs, models = tmp_path / "runs", tmp_path / "models"
    for design in ("seg", "d4"):
        result = CliRunner().invoke(cli, ["train", "--data", str(root), "--design", design,
                                          "--steps", "6", "--batch", "2", "--out",
                                          str(runs / f"organ-{design}"), "--cache",
                                          str(tmp_path / "cache")])
        assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["export", str(runs / "organ-d4" / "checkpoint.pt"),
                                      "--data", str(root), "--name", "organ-v1", "--out",
                                      str(models), "--cache", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    monkeypatch.setenv(zoo.PATH_ENV, "")
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="2"):  # --reference is required
        rate.main(["--dataset", str(root), "--out", str(out)])
    tables = (common.NDIM, common.KIND, common.LABELS, common.CHANNELS, common.ROOTS,
              common.TITLES)
    saved = [dict(table) for table in tables]
    try:
        result = rate.main(["--dataset", str(root), "--reference", str(runs / "organ-seg"),
                            "--models", str(models), "--codecs", "uncompressed", "jpeg2000",
                            "segcodec", "--out", str(out)])
    finally:  # the registered task leaves this process's bench as it found it
        for table, before in zip(tables, saved):
            table.clear()
            table.update(before)
        zoo.reload()
    assert result["tasks"] == ["organ"] and result["cases"]["organ"]["names"] == [
        "organ_006.nii.gz", "organ_007.nii.gz"]  # its imagesTs/
    ours = [r for r in result["rows"] if r["codec"] == "segcodec"]
    assert [r["setting"] for r in ours] == ["organ-v1"]  # the shipped 3D models are not its
    assert list(ours[0]["dice"]) == ["organ left", "organ right"]
    assert {h["against"] for h in result["headline"]} == {"jpeg2000"}
    assert "## Organ, its 2 test cases (2 cases)" in (out / "rate.md").read_text()
    assert (out / "rate_organ.png").stat().st_size > 0
