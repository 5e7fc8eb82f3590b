"""segcodec train --budget: durations, the plan from measured speed, and the deadline guard."""
import json
import re

import pytest
from click.testing import CliRunner

from segcodec.cli.main import main
from segcodec.train import budget, run

from test_datasets import msd_folder


@pytest.mark.parametrize("text, seconds", [("2h", 7200), ("90min", 5400), ("1h30m", 5400),
                                           ("45 m", 2700), ("1.5h", 5400), ("300s", 300)])
def test_durations_parse(text, seconds):
    assert budget.parse(text) == seconds


@pytest.mark.parametrize("text", ["", "2", "2 weeks", "-1h", "0h", "h", "1h and 5m"])
def test_a_bad_duration_is_refused(text):
    with pytest.raises(ValueError, match="--budget"):
        budget.parse(text)


def test_steps_fill_the_share_less_validation_and_margin():
    # 1000 s at 90% is 900 s; 20 validations of 2 s leave 860 s: 430 steps of 2 s.
    assert budget.steps_within(1000, 2.0, 2.0) == 430
    assert budget.steps_within(1, 2.0, 2.0) == budget.PROBE_STEPS  # never a run of nothing
    assert budget.shares(["seg", "d4"]) == pytest.approx({"seg": 0.4, "d4": 0.6})
    assert budget.shares(["d4"]) == {"d4": 1.0}


def test_a_run_past_its_deadline_stops_and_is_scored(tmp_path):
    root = msd_folder(tmp_path / "Task99_Organ", n_train=6, n_test=2)
    summary = run.run(None, root, tmp_path / "organ-seg", design="seg", steps=50, batch=2,
                      cache=tmp_path / "cache", log=lambda m: None, deadline=0.0)
    assert summary["steps"] == 1 and "test" in summary  # stopped after its first step
    again = run.run(None, root, tmp_path / "organ-seg", design="seg", steps=50, batch=2,
                    cache=tmp_path / "cache", log=lambda m: None)
    assert again["steps"] == 50  # the same command without a deadline finishes it


def test_budget_plans_seg_then_d4_and_says_so_before_training(tmp_path):
    root = msd_folder(tmp_path / "Task99_Organ", n_train=6, n_test=2)
    runs = tmp_path / "runs"
    args = ["train", "--data", str(root), "--budget", "40s", "--batch", "4", "--out",
            str(runs / "organ-d4"), "--cache", str(tmp_path / "cache")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    plan = next(i for i, line in enumerate(lines) if "the plan for 40 s" in line)
    assert plan < next(i for i, line in enumerate(lines) if re.search(r": step \d+/", line))
    planned = {name: int(n.replace(",", "")) for name, n in
               re.findall(r"(organ-seg|organ-d4) ([\d,]+) steps at", lines[plan])}
    summaries = [json.loads(line) for line in lines if line.startswith("{")]
    assert [s["config"] for s in summaries] == ["organ-seg", "organ-d4"]
    for name in planned:
        config = json.loads((runs / name / "config.json").read_text())
        assert config["steps"] == planned[name] >= budget.PROBE_STEPS
    d4 = json.loads((runs / "organ-d4" / "config.json").read_text())
    assert d4["teacher"] == str(runs / "organ-seg" / "checkpoint.pt") and d4["batch"] == 4
    assert all("test" in s for s in summaries)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "is finished" in again.output


def test_budget_refuses_what_it_plans_itself_in_one_line(tmp_path):
    root = msd_folder(tmp_path / "Task99_Organ", n_train=6, n_test=2)
    for extra in (["--steps", "5"], ["--rate-point", "2"], ["isic-d4"]):
        result = CliRunner().invoke(main, ["train", *extra, "--data", str(root),
                                           "--budget", "1h", "--out", str(tmp_path / "r")])
        assert result.exit_code == 1 and "--budget plans" in result.output
        assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(main, ["train", "--data", str(root), "--budget", "soon",
                                       "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "not a duration" in result.output
    assert not (tmp_path / "r").exists()


def test_a_run_stopped_midway_resumes_with_its_steps_and_only_its_rest_is_planned(tmp_path,
                                                                                 monkeypatch):
    # A run's start-up is outside its planned seconds: a busy CI machine ran 15 planned steps
    # of a few tenths of a second past their 10% overrun.  The overrun is not what is tested.
    monkeypatch.setattr(budget, "OVERRUN", 100.0)
    root = msd_folder(tmp_path / "Task99_Organ", n_train=6, n_test=2)
    runs, lines = tmp_path / "runs", []

    def interrupt(step, total):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run.run(None, root, runs / "organ-seg", design="seg", steps=20, batch=2,
                cache=tmp_path / "cache", progress=interrupt, log=lambda m: None)
    summaries = run.within(45, root, runs / "organ-d4", batch=2, cache=tmp_path / "cache",
                           log=lines.append)
    plan = next(line for line in lines if "the plan for" in line)
    assert "organ-seg 20 steps at" in plan and "(from step 5)" in plan
    assert [s["config"] for s in summaries] == ["organ-seg", "organ-d4"]
    assert summaries[0]["steps"] == 20


def test_budget_plans_and_trains_in_the_precision_given(tmp_path, monkeypatch):
    root = msd_folder(tmp_path / "Task99_Organ", n_train=6, n_test=2)
    probed, real = [], budget.seconds_per_step

    def timed(cfg, *args, **kwargs):
        real(cfg, *args, **kwargs)  # the probe still runs, in its precision
        probed.append(cfg.precision)
        return {"fp32": 2.0, "bf16": 1.0}[cfg.precision]

    monkeypatch.setattr(budget, "seconds_per_step", timed)
    for given, wanted in ((None, "fp32"), ("bf16", "bf16")):
        out, lines, probed[:] = tmp_path / f"organ-seg-{given}", [], []
        run.within(30, root, out, design="seg", batch=2, precision=given,
                   cache=tmp_path / "cache", log=lines.append)
        assert probed == [wanted]
        assert f"steps at {1 if wanted == 'bf16' else 2:.2f} s a step ({wanted})" in \
            next(line for line in lines if "the plan for" in line)
        assert json.loads((out / "config.json").read_text())["precision"] == wanted


def test_a_volume_task_on_a_cpu_is_planned_at_nnunet_s_batch_unless_told(tmp_path):
    """The 3D recipe's batch of 16 buys a CPU budget a few hundred steps; --batch still rules."""
    root = msd_folder(tmp_path / "Task99_Organ", n_train=6, n_test=2)
    for given, wanted in ((None, budget.CPU_BATCH_3D), (3, 3)):
        out, lines = tmp_path / f"organ-seg-{given}", []
        run.within(20, root, out, design="seg", batch=given, cache=tmp_path / "cache",
                   log=lines.append)
        assert f"of cpu, batch {wanted}:" in next(line for line in lines if "the plan for" in line)
        assert json.loads((out / "config.json").read_text())["batch"] == wanted
