"""bench speed, figures and latency in their smoke modes: fixtures only, no timing checks."""
import json

from bench import codecs, common, figures, latency, speed


def test_speed_smoke(tmp_path):
    speed.main(["--smoke", "--out", str(tmp_path)])
    r = json.loads((tmp_path / "speed.json").read_text())
    assert r["command"].startswith("python -m bench speed") and r["machine"]["torch"]
    assert r["machine"]["cpus"] >= 1
    assert {c["task"] for c in r["cases"]} == {"isic", "hippocampus"}
    for c in r["cases"]:
        assert set(c["median_ms"]) == set(speed.RATIO_OPS)
        assert all(v > 0 for v in c["median_ms"].values())
        assert set(c["ratios"]) == set(speed.RATIOS) and all(v > 0 for v in c["ratios"].values())
    assert set(r["median_ratios"]) == {"isic", "hippocampus"}
    for s in r["encode_stages"]:
        assert abs(sum(s["share_of_encode_stages"].values()) - 1) < 1e-3
    assert {(m["op"]) for m in r["memory"]} == set(speed.RATIO_OPS)
    assert all(m["tracemalloc_peak_mb"] >= 0 for m in r["memory"])
    kinds = {x["kind"] for x in r["scaling"]}
    assert kinds == {"2d", "3d"} and len(r["scaling"]) == 4
    for x in r["scaling"]:
        assert all(v > 0 for v in x["median_ms"].values())
    assert "Time against input size" in (tmp_path / "speed.md").read_text()
    assert (tmp_path / "speed_scaling.png").stat().st_size > 0


def test_peer_settings_match_dice(tmp_path):
    from segcodec import zoo
    rows = [{"task": "isic", "codec": "segcodec", "setting": zoo.default_for(2).name,
             "mean_dice": 0.80, "mean_bpp": 0.011},
            *({"task": "isic", "codec": "jpeg2000", "setting": b, "mean_dice": d,
               "mean_bpp": b} for b, d in ((0.05, 0.6), (0.1, 0.78), (0.2, 0.85))),
            {"task": "isic", "codec": "h264", "setting": 40, "mean_dice": 0.7, "mean_bpp": 0.03}]
    (tmp_path / "rate.json").write_text(json.dumps({"rows": rows}))
    s = codecs.peer_settings(tmp_path / "rate.json")
    assert s["isic"]["jpeg2000"]["bpp"] == 0.1 and s["isic"]["jpeg2000"]["matched"]
    assert s["isic"]["h264"]["crf"] == 40 and s["isic"]["h264"]["matched"]
    assert not s["hippocampus"]["jpeg2000"]["matched"]  # no rows: the fixed fallback
    assert s["hippocampus"]["h264"]["crf"] == codecs.by_name("h264").fallback


def test_figures_smoke(tmp_path):
    figures.main(["--smoke", "--out", str(tmp_path)])
    assert (tmp_path / "figures.png").stat().st_size > 10_000
    r = json.loads((tmp_path / "figures.json").read_text())
    assert len(r["cases"]) == 4 and all(0 <= c["dice"] <= 1 for c in r["cases"])


def test_latency_smoke(tmp_path):
    # No rate.json and --smoke: fixed baseline settings and an untrained segmentor, flagged.
    latency.main(["--smoke", "--threads", "1", "--rate", str(tmp_path / "none.json"),
                  "--out", str(tmp_path)])
    r = json.loads((tmp_path / "latency.json").read_text())
    methods = {f["method"] for f in r["files"]}
    assert methods == {"segcodec", "jpeg2000", "h264"}
    for name in ("segcodec", "JPEG-2000", "H.264"):
        assert any(x["method"].startswith(name) and x["total_s"] > 0 for x in r["table"])
    assert all("UNTRAINED" in v for v in r["reference_segmentors"].values())
    md = (tmp_path / "latency.md").read_text()
    assert "NOT matched" in md and "Dice NOT matched" in md


def test_bench_command_line_helps_and_fails_in_one_line(tmp_path, monkeypatch):
    import subprocess
    import sys
    from bench import __main__ as bench_main
    run = lambda *a: subprocess.run([sys.executable, "-m", "bench", *a], capture_output=True,
                                    text=True, cwd=common.REPO)
    assert run("--help").returncode == 0
    bad = run("nope")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "unknown benchmark" in bad.stderr
    missing = run("evaluate", "--data", str(tmp_path / "none"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "no isic2017/" in missing.stderr
    monkeypatch.setattr(bench_main, "SMOKE_OUT", tmp_path / "scratch")
    bench_main.main(["figures", "--smoke"])
    assert (tmp_path / "scratch" / "figures.json").exists()


def test_startup_smoke(tmp_path):
    from bench import startup
    r = startup.main(["--smoke", "--out", str(tmp_path)])
    names = [row["command"] for row in r["rows"]]
    assert names[0] == "python -c pass" and "segcodec models" in names
    assert all(row["median_s"] > 0 for row in r["rows"])
    assert (tmp_path / "startup.md").exists()
    assert 0 < r["bare_venv_mb"] < r["site_packages_mb"] and r["numba_installed"]
    assert all(row["numpy_ms"] > 0 and row["numba_ms"] > 0 for row in r["label_decoding"])
