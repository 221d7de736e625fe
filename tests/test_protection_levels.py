"""The never-worse protocol's choices judged again at other levels, from hand-made run summaries."""

from __future__ import annotations

import json

import pytest

from cbp_fed.calibration import sign_test
from simulations.protection_levels import judge, main, recorded_choices


def choice(wins: int, losses: int, baseline_test: float, contender_test: float) -> dict:
    """A ``protected`` record as ``customize`` writes it (baseline calibrated-fit, contender prompt+fit)."""
    return {
        "option": "calibrated-fit",
        "protection": {
            "baseline": "calibrated-fit",
            "contender": "prompt+fit",
            "wins": wins,
            "losses": losses,
            "p_value": sign_test(wins, losses),
            "test_accuracy": {"calibrated-fit": baseline_test, "prompt+fit": contender_test, "majority": 0.5},
        },
    }


def summary(*points) -> dict:
    curve = [{"calls": calls, "test_accuracy": 0.6, "protected": protected} for calls, protected in points]
    return {"task": "finance-entities", "method": "cbp", "curve": curve}


def test_each_budget_is_one_choice_and_runs_without_a_contender_or_dev_rows_give_none():
    run = summary((100, choice(8, 2, 0.61, 0.76)), (400, None))
    assert [(c["calls"], c["wins"], c["contender_test"]) for c in recorded_choices(run, "r")] == [(100, 8, 0.76)]
    alone = {"task": "t", "method": "zero-shot", "curve": [], "protected": {"protection": {"contender": None}}}
    assert recorded_choices(alone, "r") == []
    sdt_only = {"task": "t", "method": "sdt-only", "curve": [], "protected": choice(5, 3, 0.6, 0.7)}
    assert [c["calls"] for c in recorded_choices(sdt_only, "r")] == [0]


def test_a_level_moves_exactly_the_choices_whose_sign_test_passes_it():
    choices = recorded_choices(summary((100, choice(8, 2, 0.61, 0.76))), "gain")  # p = 56/1024 = 0.055
    choices += recorded_choices(summary((100, choice(6, 5, 0.80, 0.69))), "loss")  # p = 0.5
    strict, loose, coin = judge(choices, 0.05), judge(choices, 0.1), judge(choices, 0.5)
    assert (strict["moved"], strict["mean_change"], strict["worst_change"]) == (0, 0.0, 0.0)
    assert loose["moved"] == 1 and loose["mean_change"] == pytest.approx(0.15 / 2) and loose["worst_change"] == 0
    assert coin["moved"] == 2 and coin["worst_change"] == pytest.approx(-0.11) and coin["ended_below"] == 1


def test_main_writes_the_levels_and_fails_loudly_without_choices(tmp_path, capsys):
    run = tmp_path / "runs" / "finance" / "finance-entities-cbp-s0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps(summary((100, choice(7, 1, 0.63, 0.78)))))
    main([str(tmp_path / "runs"), "--alphas", "0.05", "0.01", "--out", str(tmp_path / "out")])
    written = json.loads((tmp_path / "out" / "protection_levels.json").read_text())
    assert [(level["alpha"], level["moved"]) for level in written["levels"]] == [(0.01, 0), (0.05, 1)]  # p = 0.035
    assert (tmp_path / "out" / "protection_levels.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 0.05 (default) | 1 | 1 | +15.0 |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no protected choices"):
        main([str(tmp_path / "out"), "--out", str(tmp_path / "out2")])
    with pytest.raises(SystemExit, match="in \\(0, 1\\)"):
        main([str(tmp_path / "runs"), "--alphas", "1.5"])
