"""bench cohort: files per second of a loop and of Dask workers, on identical outputs."""
import json

from bench import cohort


def test_smoke_measures_the_loop_and_a_worker_on_the_same_outputs(tmp_path):
    cohort.main(["--smoke", "--out", str(tmp_path)])  # raises if any output differed
    rows = json.loads((tmp_path / "cohort.json").read_text())["rows"]
    assert [r["run"] for r in rows] == ["loop", "1 worker(s)"]
    assert rows[0]["encode_x_loop"] == rows[0]["segment_x_loop"] == 1.0
    assert all(r["files"] == 12 and r["encode_files_per_s"] > 0 for r in rows)
    assert "| 1 worker(s) | 12 |" in (tmp_path / "cohort.md").read_text()
