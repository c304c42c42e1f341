"""`hexa study`: equal-compute budgets from the step ideals, cell-by-cell resume after a kill, and the
summary's statistics against an independent computation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats

from hexa_zoo.errors import ConfigError
from hexa_zoo.records import make_record, metric, write_record
from orchestration import study
from orchestration.plan import plan_cells

GRID = study.Grid(("moco_v2", "hexa_moco"), (0, 1, 2), "equal-epochs", 0.5, "embedded")

# Made-up results per (method, seed): kNN top-1 (one value) and few-shot episodes (three values).
KNN = {("moco_v2", 0): 50.0, ("hexa_moco", 0): 52.5, ("moco_v2", 1): 48.0, ("hexa_moco", 1): 51.0,
       ("moco_v2", 2): 51.0, ("hexa_moco", 2): 53.0}


def fake_pretrain(calls):
    def pretrain(cell, data, out, extra=()):
        calls.append(cell.name)
        folder = Path(out) / "zoo" / f"{cell.method}_r18.s{cell.seed}_ep{cell.epochs}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return pretrain


def fake_suite(killed_at=None):
    seen = []

    def evaluate(zoo_dir, suite, records, seed, overrides, only, data_for=()):
        seen.append(zoo_dir.name)
        if killed_at is not None and len(seen) == killed_at:
            raise KeyboardInterrupt  # the study dies inside a cell's suite
        method = zoo_dir.name.split("_r18")[0]
        model = {"name": zoo_dir.name, "weights_sha256": "0" * 64}
        episodes = [KNN[(method, seed)] / 100 + d for d in (0.0, 0.1, -0.1)]
        for bench, metrics in (("embedded_knn", {"top1@20": metric(KNN[(method, seed)])}),
                               ("embedded_fewshot", {"acc": metric(episodes)})):
            write_record(records, make_record(protocol=bench.split("_")[1], benchmark=bench, dataset={"name": "x"},
                                              model=model, metrics=metrics, config={}, seed=seed))
    return evaluate


def test_equal_compute_budgets_come_from_the_step_ideals():
    cells = plan_cells(["moco_v2", "hexa_moco"], [0], "equal-compute", 1.0, "embedded")
    epochs = {c.method: c.epochs for c in cells}
    assert cells[0].method == "hexa_moco"  # HEXA first: its baseline's budget follows it
    assert epochs == {"hexa_moco": 12, "moco_v2": round(12 * (10 / 3) / (4 / 3))}  # 30
    same = plan_cells(["moco_v2", "hexa_moco"], [0, 1], "equal-epochs", 0.5, "embedded")
    assert {c.epochs for c in same} == {6} and len(same) == 4
    with pytest.raises(ConfigError, match="add moco_v2"):
        plan_cells(["hexa_moco"], [0], "equal-epochs", 1.0, "embedded")


def test_a_killed_study_resumes_without_redoing_finished_cells(tmp_path):
    methods, seeds, calls = ["moco_v2", "hexa_moco"], [0, 1, 2], []
    with pytest.raises(KeyboardInterrupt):
        study.run_study(GRID, "embedded", tmp_path, pretrain=fake_pretrain(calls), evaluate=fake_suite(killed_at=3))
    assert len(list((tmp_path / "cells").glob("*.json"))) == 2
    with pytest.raises(ConfigError, match="--resume auto"):
        study.run_study(GRID, "embedded", tmp_path)
    calls.clear()
    summary = study.run_study(GRID, "embedded", tmp_path, resume="auto", pretrain=fake_pretrain(calls),
                              evaluate=fake_suite())
    assert calls == ["hexa_moco_s1", "moco_v2_s1", "hexa_moco_s2", "moco_v2_s2"]  # seed 0's cells were kept
    assert summary["cells_done"] == 6
    assert summary["command"] == (f"hexa study --methods moco_v2 hexa_moco --seeds 0 1 2 --mode equal-epochs "
                                  f"--budget 0.5 --data embedded --suite embedded --out {tmp_path.name} --resume auto")
    assert json.loads((tmp_path / "summary.json").read_text()) == summary

    knn = summary["comparisons"]["hexa_moco - moco_v2"]["embedded_knn:top1@20"]
    diffs = [KNN[("hexa_moco", s)] - KNN[("moco_v2", s)] for s in seeds]
    low, high = stats.t.interval(0.95, 2, loc=sum(diffs) / 3, scale=stats.sem(diffs))
    assert knn["values"]["hexa_moco"] == [52.5, 51.0, 53.0]
    assert knn["t_interval"]["low"] == pytest.approx(low) and knn["t_interval"]["high"] == pytest.approx(high)
    assert knn["verdict"].startswith("HEXA ahead by 2.50") and "bootstrap_interval" not in knn
    few = summary["comparisons"]["hexa_moco - moco_v2"]["embedded_fewshot:acc"]
    assert few["bootstrap_interval"]["n"] == 9  # three seeds x three episodes, paired


def test_the_study_report_compiles_byte_identically_and_links_every_record(tmp_path):
    from leaderboards.cli import main as leaderboard_main

    calls = []
    study.run_study(GRID, "embedded", tmp_path / "pair", pretrain=fake_pretrain(calls), evaluate=fake_suite())
    for out in ("a", "b"):
        assert leaderboard_main(["--studies", str(tmp_path / "pair"), "--out", str(tmp_path / out)]) == 0
    first, second = tmp_path / "a" / "studies" / "pair", tmp_path / "b" / "studies" / "pair"
    for name in ("README.md", "differences.png", "differences.svg"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    # the leaderboard's web page inlines each study's plot of differences with their t-intervals
    from leaderboards.compiler import compile_leaderboard

    page = compile_leaderboard([], tmp_path / "a", plots=False).site.read_text()
    assert "Study pair: HEXA minus its baseline per metric, mean and 95% t-interval" in page
    assert page.count("<svg") == 1 and "embedded_knn:top1" in page
    text = (first / "README.md").read_text()
    assert "HEXA ahead by 2.50" in text and "equal-epochs" in text
    assert "Reproduce: `hexa study --methods moco_v2 hexa_moco --seeds 0 1 2 --mode equal-epochs" in text
    for record in (tmp_path / "pair" / "records").glob("*.json"):
        assert record.name in text
