"""bench domain: refusal counts and the small-model simulation, on the fixtures."""
import numpy as np

from bench import domain as bench_domain
from segcodec import zoo

from conftest import ISIC, isic_image


def test_refusals_count_the_fixtures_in_and_the_portrait_out():
    counted = bench_domain.refusals([(p.name, isic_image(i)) for i, p in enumerate(ISIC)])
    assert counted["cases"] == len(ISIC) and counted["refused"] == 0
    other = bench_domain.other_kinds()
    assert "astronaut" in other["names"] and "does not look like" in other["why"]["astronaut"]


def test_small_models_rates_are_shares_and_the_new_rules_refuse_no_more(monkeypatch):
    monkeypatch.setattr(bench_domain, "SUBSET_SIZES", (2,))
    images = [isic_image(i) for i in range(len(ISIC))]
    rows = bench_domain.small_models(images, images + [np.zeros_like(images[0])], 3,
                                     zoo.default_for(2))
    (row,) = rows
    assert row["n"] == 2
    for key in ("statistics", "appearance"):
        assert 0 <= row[f"{key}_now"] <= row[f"{key}_before"] <= 1
    assert row["statistics_now"] >= 1 / (len(images) + 1)  # the black image, at least
    assert "| 2 |" in bench_domain.markdown({
        "command": "c", "models": {"2d": "a", "3d": "b"}, "small_models": rows,
        "other_kinds": {"names": ["x"], "why": {}},
        **{k: {"cases": 1, "refused": 0} for k in ("isic_test_unlabeled", "isic_val",
                                                   "hippocampus_test")}})
