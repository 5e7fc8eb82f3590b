"""bench ablation: the D1-D4 table is built from measured rows and run summaries only."""
import json

from bench import ablation


def test_table_takes_rates_from_rate_json_and_times_from_runs(tmp_path):
    def row(codec, setting, segmentor, bpp, dice):
        return {"task": "isic", "codec": codec, "setting": setting, "segmentor": segmentor,
                "mean_bpp": bpp, "dice": {"lesion": dice}, "mean_dice": dice,
                "iou": {"lesion": dice - 0.1}, "mean_iou": dice - 0.1}
    rate = {"tasks": ["isic"], "rows": [row("uncompressed", "raw", "seg", 24.0, 0.82),
                                        row("segcodec", "isic-d4", None, 0.0085, 0.79),
                                        row("jpeg2000", 0.05, "seg", 0.05, 0.8)]}
    (tmp_path / "rate.json").write_text(json.dumps(rate))
    (tmp_path / "runs" / "isic-d4").mkdir(parents=True)
    (tmp_path / "runs" / "isic-d4" / "summary.json").write_text(
        json.dumps({"steps": 2400, "train_seconds": 1038}))
    ablation.main(["--rate", str(tmp_path / "rate.json"), "--runs", str(tmp_path / "runs"),
                   "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "ablation.json").read_text())["rows"]
    assert [r["design"] for r in rows] == ["seg", "d4"]
    d4 = rows[1]
    assert d4["mean_bpp"] == 0.0085 and d4["mean_dice"] == 0.79
    assert d4["steps"] == 2400 and d4["train_minutes"] == 17.3
    md = (tmp_path / "ablation.md").read_text()
    assert "| D4: C + g + s + D + rate loss | 0.0085 | 0.790 | 0.690 | 2400 | 17.3 min |" in md
