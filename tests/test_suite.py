"""The suite's table: accuracy mean ± std per method x domain and calls-to-accuracy from the curves."""

from __future__ import annotations

from simulations.suite import calls_to_reach, table


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
    assert "| commonsense | 49.0 at 54 | 54 | not run | not within 54 |" in text
