"""The suite's table: accuracy mean ± std per method x domain and calls-to-accuracy from the curves."""

from __future__ import annotations

import json

from simulations.suite import calls_to_reach, load_cells, table


def cell(method, seed, curve, domain="commonsense"):
    return {
        "domain": domain,
        "method": method,
        "seed": seed,
        "task": "boolq",
        "accuracy": curve[-1][1],
        "curve": curve,
        "calls_per_user": curve[-1][0],
        "bytes_up": 1000.0,
        "bytes_down": 100.0,
        "test_examples": 200,
        "wall_seconds": 1.0,
    }


CELLS = [
    cell("zero-shot", 0, [(0, 0.40)]),
    cell("bbt", 0, [(18, 0.40), (36, 0.45), (54, 0.50)]),
    cell("bbt", 1, [(18, 0.42), (36, 0.47), (54, 0.52)]),
    cell("cbp", 0, [(18, 0.44), (36, 0.46), (54, 0.48)]),
    cell("cbp", 1, [(18, 0.46), (36, 0.48), (54, 0.50)]),
]


def test_calls_to_reach_reads_the_seed_mean_curve():
    assert calls_to_reach(CELLS, "commonsense", "bbt", 0.46) == "36"  # means 0.41, 0.46, 0.51
    assert calls_to_reach(CELLS, "commonsense", "cbp", 0.51) == "not within 54"
    assert calls_to_reach(CELLS, "commonsense", "fedbpt", 0.40) == "not run"


def test_table_has_mean_std_over_seeds_and_the_calls_to_accuracy_rows():
    text = table(CELLS)
    assert "| bbt | 51.0 ± 1.4 | 2 | 54 | 200 | 1,000 | 100 |" in text
    assert "| zero-shot | 40.0 | 1 | 0 | 200 |" in text
    # CBP ends at 49.0: BBT gets there at 54 calls (mean 0.51), FedBPT was not run, CBP never reaches BBT's 51.0
    assert "| commonsense | cbp | 49.0 at 54 | 54 | not run | not within 54 |" in text


def test_a_cbp_cell_is_named_by_the_space_it_searched(tmp_path):
    for name, extra in (("finance-cbp-full-s0", {}), ("finance-cbp-s0", {"subspace": 3})):
        folder = tmp_path / name
        folder.mkdir()
        config = {"domain": "finance", "method": "cbp", "seed": 0, "tasks": "finance-entities"}
        (folder / "config.json").write_text(json.dumps({**config, "steps-per-round": 3, "popsize": 6, **extra}))
        summary = {"chance_test_accuracy": 0.5, "seconds_wall_total": 9.0, "train_calls_per_user": 36}
        (folder / "summary.json").write_text(json.dumps(summary))
        rounds = [{"round": r, "test_accuracy": 0.6, "bytes_up_per_user": 9, "bytes_down_per_user": 1} for r in (1, 2)]
        rounds[0]["start_test_accuracy"], rounds[1]["own_best_test_accuracy"] = 0.5, 0.55
        rounds[1].update(end_below_start=[2], users_evaluated=3)
        (folder / "rounds.jsonl").write_text("\n".join(map(json.dumps, rounds)))
    cells = load_cells(tmp_path)
    assert [(c["method"], c["calls_per_user"], c["curve"]) for c in cells] == [
        ("cbp-full", 36, [(0, 0.5), (18, 0.6), (36, 0.6)]),  # from the users' start, before any call
        ("cbp", 36, [(0, 0.5), (18, 0.6), (36, 0.6)]),
    ]
    text = table([{**c, "test_examples": 40, "wall_seconds": 1.0} for c in cells])
    assert "| cbp | 60.0 (start 50.0) | 1 | 36 | 40 |" in text  # each method against its users' start
    assert "- finance: the users' best option of their own" in text and "55.0%, the bar" in text
    assert "- finance cbp seed 0: 1 of 3 users end below their own start" in text
    assert "| finance | cbp | 60.0 at 36 |" in text and "| finance | cbp-full | 60.0 at 36 |" in text


def test_cbp_is_paired_with_the_other_searches_user_by_user():
    users = {"0": 0.5, "1": 0.6, "2": 0.7}
    cells = [
        {**cell("cbp", 0, [(36, 0.6)], "finance"), "by_user": {u: a + 0.2 for u, a in users.items()}},
        {**cell("fedbpt", 0, [(36, 0.5)], "finance"), "by_user": {**users, "2": 0.6}},
        {**cell("bbt", 0, [(36, 0.5)], "finance"), "by_user": {"0": 0.5}},  # one common user: no interval
        {**cell("cbp", 1, [(36, 0.6)], "finance")},  # a cell run before users were recorded one by one
    ]
    text = table(cells)
    # per user +0.2, +0.2, +0.3: mean +23.3, sd 5.77 points over 3 users -> 1.96 * 5.77 / sqrt(3) = 6.5
    assert "- finance seed 0, paired over users (points): cbp - fedbpt +23.3 ± 6.5 (3 users)." in text
    assert "cbp - bbt" not in text and "seed 1, paired" not in text
