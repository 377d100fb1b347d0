"""The student-size sweep's table and knee logic (no training here: rows are built by hand)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.sweep import (
    AUC_KEYS,
    Budget,
    SweepPoint,
    budget_use,
    knee,
    markdown_table,
    pareto_front,
    parse_points,
    score,
    seed_mean_auc_ci,
    write_report,
)

BUDGET = Budget(model_ms={1: 0.4, 3: 0.8, 12: 6.0})


def row(name: str, auc: float, ms: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "name": name,
        "label": name,
        "params": 100_000,
        "auc": {k: {"auc": auc, "ci": [auc - 0.05, auc + 0.05]} for k in AUC_KEYS},
        "model_ms": {"1": ms[0], "3": ms[1], "12": ms[2]},
        "end_to_end_ms": {"1": ms[0] + 0.5, "3": ms[1] + 1.0, "12": ms[2] + 2.0},
        "gflop": {"1": 0.01, "3": 0.03, "12": 0.3},
    }


def test_parse_points() -> None:
    pts = parse_points("64x4, 96x4h3,64x6m4")
    assert pts == [SweepPoint(64, 4), SweepPoint(96, 4, heads=3), SweepPoint(64, 6, mlp_ratio=4)]
    assert [p.name for p in pts] == ["kmerl-sweep-w64-d4", "kmerl-sweep-w96-d4-h3", "kmerl-sweep-w64-d6-m4"]
    with pytest.raises(ValueError, match="WIDTHxDEPTH"):
        parse_points("64-4")
    with pytest.raises(ValueError, match="repeat"):
        parse_points("64x4,64x4")


def test_point_config_is_student_s_with_new_sizes() -> None:
    from kmerl_edge._config import get_config

    base = get_config("kmerl-student-s").to_dict()
    cfg = SweepPoint(64, 4).model_config().to_dict()
    assert {k: v for k, v in cfg.items() if k != "name"} == {k: v for k, v in base.items() if k != "name"}
    big = SweepPoint(96, 6, heads=3, mlp_ratio=4).model_config()
    assert (big.width, big.depth, big.heads, big.mlp_dim, big.query_mlp_dim, big.proj_dim) == (96, 6, 3, 384, 384, 192)
    assert big.patch_len == base["patch_len"] and big.query_layers == base["query_layers"]


def test_score_and_budget_use() -> None:
    r = row("a", 0.8, (0.2, 0.4, 3.0))
    assert score(r) == pytest.approx(0.8)
    assert budget_use(r, BUDGET) == pytest.approx(0.5)  # 0.2/0.4, 0.4/0.8, 3/6
    r["auc"]["Holter AF I"]["auc"] = None
    assert score(r) is None
    del r["model_ms"]["12"]
    assert budget_use(r, BUDGET) is None


def test_pareto_front_drops_dominated_points() -> None:
    rows = [row("cheap", 0.70, (0.1, 0.2, 1.0)), row("worse", 0.69, (0.2, 0.4, 2.0)),
            row("mid", 0.75, (0.2, 0.4, 2.0)), row("big", 0.76, (0.3, 0.7, 5.0))]
    assert pareto_front(rows, BUDGET) == ["cheap", "mid", "big"]


def test_knee_is_cheapest_fitting_point_within_tolerance_of_best() -> None:
    rows = [row("cheap", 0.70, (0.1, 0.2, 1.0)), row("mid", 0.755, (0.2, 0.4, 2.0)),
            row("big", 0.76, (0.3, 0.7, 5.0)), row("huge", 0.80, (0.5, 1.2, 9.0))]
    k = knee(rows, BUDGET, tolerance=0.01)
    assert k["name"] == "mid"  # big is only 0.005 better; huge is better but over budget
    assert k["best_fitting_score"] == pytest.approx(0.76)
    assert k["over_budget"] == ["huge"]
    assert knee(rows, BUDGET, tolerance=0.001)["name"] == "big"
    assert knee(rows, BUDGET, tolerance=0.1)["name"] == "cheap"


def test_knee_when_nothing_fits() -> None:
    k = knee([row("huge", 0.8, (0.5, 1.2, 9.0))], BUDGET)
    assert k["name"] is None and k["over_budget"] == ["huge"]


def test_markdown_table_marks_knee_and_over_budget() -> None:
    rows = [row("big", 0.76, (0.3, 0.7, 5.0)), row("huge", 0.80, (0.5, 1.2, 9.0))]
    md = markdown_table(rows, BUDGET, knee(rows, BUDGET))
    lines = md.splitlines()
    assert len(lines) == 4 and lines[2].startswith("| **big (knee)**")
    assert "0.760 [0.71, 0.81]" in lines[2] and "(over)" in lines[3] and "150%" in lines[3]


def test_seed_mean_auc_ci() -> None:
    rng = np.random.default_rng(0)
    y = np.zeros((60, 2))
    y[:25, 0] = 1
    y[10:40, 1] = 1
    perfect = y + 0.1 * rng.random(y.shape)  # every positive above every negative
    noise = rng.random(y.shape)
    r = seed_mean_auc_ci(y, [perfect, noise], n_boot=60)
    assert r["per_seed"][0] == pytest.approx(1.0)
    assert r["auc"] == pytest.approx((1.0 + r["per_seed"][1]) / 2)
    assert r["ci"][0] <= r["auc"] <= r["ci"][1]
    assert r["sd"] > 0.1
    one = seed_mean_auc_ci(y[:, 0], [perfect[:, 0]], n_boot=0)
    assert one["auc"] == pytest.approx(1.0) and one["ci"] is None and one["sd"] is None


def test_write_report(tmp_path: Path) -> None:
    rows = [row("cheap", 0.70, (0.1, 0.2, 1.0)), row("mid", 0.755, (0.2, 0.4, 2.0))]
    doc = write_report(rows, tmp_path, BUDGET, tolerance=0.01, command="python -m benchmarks.sweep", meta={})
    assert doc["knee"]["name"] == "mid"
    assert json.loads((tmp_path / "sweep.json").read_text())["knee"]["name"] == "mid"
    assert "**Knee within the budget: mid**" in (tmp_path / "sweep.md").read_text()
    assert (tmp_path / "auc_vs_cost.png").stat().st_size > 1000


def test_cli_has_sweep() -> None:
    from benchmarks.cli import build_parser

    a = build_parser().parse_args(["sweep", "--points", "48x4,64x4", "--epochs", "3", "--report-only"])
    assert a.command == "sweep" and a.points == "48x4,64x4" and a.epochs == 3 and a.report_only


def test_combine_rounds_keeps_smallest_median() -> None:
    from benchmarks.sweep import combine_rounds

    def rnd(ms: float) -> dict[str, Any]:
        return {"model_ms": {"1": ms, "3": 2 * ms}, "model_ms_p95": {"1": ms, "3": 2 * ms},
                "end_to_end_ms": {"1": ms + 1, "3": None}, "preprocess_ms": {"1": 0.3, "3": 0.6},
                "gflop": {"1": 0.01, "3": 0.03}, "loadavg_before": [1.0, 1.0, 1.0], "loadavg_after": [1.0, 1.0, 1.0]}

    out = combine_rounds([rnd(0.3), rnd(0.2)], iters=10, warmup=1)
    assert out["model_ms"] == {"1": 0.2, "3": 0.4}
    assert out["end_to_end_ms"] == {"1": pytest.approx(1.2), "3": None}
    assert len(out["latency"]["rounds"]) == 2
    with pytest.raises(ValueError):
        combine_rounds([], iters=10, warmup=1)


def test_score_sd_over_seeds() -> None:
    from benchmarks.sweep import score_sd

    r = row("a", 0.8, (0.2, 0.4, 3.0))
    assert score_sd(r) is None  # one seed: no spread
    for k in AUC_KEYS:
        r["auc"][k]["per_seed"] = [0.7, 0.8, 0.9]
    assert score_sd(r) == pytest.approx(0.1)
    assert "0.800 ± 0.100" in markdown_table([r], BUDGET, knee([r], BUDGET))


def test_paired_delta() -> None:
    from benchmarks.sweep import paired_delta

    rng = np.random.default_rng(1)
    y = {"ptb": (rng.random((50, 2)) < 0.4).astype(float), "af": (rng.random(40) < 0.5).astype(float)}
    good = {k: [v + 0.3 * rng.random(v.shape)] for k, v in y.items()}  # separates the labels perfectly
    noise = {k: [rng.random(v.shape), rng.random(v.shape)] for k, v in y.items()}
    same = paired_delta(y, good, good, n_boot=50)
    assert same["delta"] == 0.0 and same["ci"] == [0.0, 0.0]
    d = paired_delta(y, good, noise, n_boot=50)
    assert d["ci"][0] > 0.2 and d["delta"] == pytest.approx(np.mean(list(d["per_key"].values())))
    assert paired_delta(y, noise, good, n_boot=50)["delta"] == pytest.approx(-d["delta"])


def test_seed_paired_deltas() -> None:
    from benchmarks.sweep import seed_paired_deltas, seed_scores

    a, b = row("a", 0.8, (0.2, 0.4, 3.0)), row("b", 0.8, (0.2, 0.4, 3.0))
    a["seeds"], b["seeds"] = [0, 1, 2], [0, 1]
    for k in AUC_KEYS:
        a["auc"][k]["per_seed"] = [0.80, 0.70, 0.90]
        b["auc"][k]["per_seed"] = [0.75, 0.75]
    assert seed_scores(a) == {0: pytest.approx(0.8), 1: pytest.approx(0.7), 2: pytest.approx(0.9)}
    d = seed_paired_deltas(a, b)
    assert d["seeds"] == [0, 1] and d["deltas"] == [pytest.approx(0.05), pytest.approx(-0.05)]
    assert d["positive"] == 1 and d["mean"] == pytest.approx(0.0)
