"""The effectiveness table's rows, intervals and markdown, from hand-made run summaries."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

import simulations.effectiveness as effectiveness
from cbp_fed.stats import wilson
from simulations.effectiveness import (
    BASELINES,
    add_ceilings,
    ceiling_shares,
    compact,
    goal_checks,
    main,
    markdown,
    paired_gaps,
    rows_of,
)


def summary(method: str, seed: int, test: float, start: float, curve=(), generator=None) -> dict:
    return {
        "domain": "commonsense",
        "task": "arc-easy",
        "backbone": "smollm2-135m",
        "method": method,
        "seed": seed,
        "test_size": 300,
        "majority_rate": 0.28,
        "test_accuracy": test,
        "test_accuracy_calibrated": test + 0.05,
        "start_test_accuracy": start,
        "curve": [{"calls": c, "test_accuracy": a, "kept": k} for c, a, k in curve],
        "config": {"generator": generator, "subspace": 3 if method == "cbp" else 0},
    }


def test_wilson_interval_matches_a_known_value():
    low, high = wilson(150, 300)  # p = 0.5, n = 300: 0.5 +- 0.0564 (Wilson)
    assert low == pytest.approx(0.4437, abs=1e-3) and high == pytest.approx(0.5563, abs=1e-3)


def test_the_share_of_the_z_ceiling_gain_is_each_search_gain_over_the_ceilings_own(tmp_path):
    (tmp_path / "gen").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "gen")
    curve = {0: [(100, 0.56, "mean@100")], 1: [(100, 0.60, "mean@100")]}
    runs = [summary("cbp", seed, 0.0, 0.50, curve[seed], generator=str(tmp_path / "link")) for seed in (0, 1)]
    rows = [row for run in runs for row in rows_of(run)]
    ceiling = {"task": "arc-easy", "method": "ceiling-z", "test_accuracy": 0.70, "start_test_accuracy": 0.54}
    ceiling["generator"] = str(tmp_path / "gen")  # the same generator under another path
    (line,) = ceiling_shares(rows, [ceiling]).splitlines()[2:]
    assert line == "| arc-easy | cbp | 100 | 2 | +8.0 | +16.0 | 0.50 |"  # mean gain 0.08 of the ceiling's 0.16
    flat = ceiling_shares(rows, [{**ceiling, "test_accuracy": 0.54}]).splitlines()[2]
    assert flat.endswith("| - (the ceiling did not gain) |")
    other = {**ceiling, "generator": str(tmp_path / "another")}  # a ceiling through another generator
    assert ceiling_shares(rows, [other]).splitlines()[2:] == []


def test_every_row_of_a_task_carries_the_z_ceiling_through_the_generator_its_cbp_runs_searched(tmp_path):
    (tmp_path / "gen").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "gen")
    cbp = summary("cbp", 0, 0.0, 0.5, [(100, 0.6, "mean@100")], generator=str(tmp_path / "link"))
    zero, other = summary("zero-shot", 0, 0.5, 0.5), {**summary("zero-shot", 0, 0.5, 0.5), "task": "piqa"}
    rows = [row for run in (cbp, zero, other) for row in rows_of(run)]
    ceiling = {"task": "arc-easy", "method": "ceiling-z", "test_accuracy": 0.7, "generator": str(tmp_path / "gen")}
    add_ceilings(rows, [ceiling, {**ceiling, "method": "ceiling-bbt", "test_accuracy": 0.9}])
    assert [(r["task"], r["method"], r["backbone"], r["ceiling"]) for r in rows] == [
        ("arc-easy", "cbp", "smollm2-135m", 0.7),
        ("arc-easy", "zero-shot", "smollm2-135m", 0.7),  # a baseline's row says how far the generator could go
        ("arc-easy", "zero-shot-calibrated", "smollm2-135m", 0.7),
        ("piqa", "zero-shot", "smollm2-135m", None),  # no CBP run, no ceiling through its generator
        ("piqa", "zero-shot-calibrated", "smollm2-135m", None),
    ]
    add_ceilings(rows, [{**ceiling, "generator": str(tmp_path / "another")}])  # through another generator: none
    assert {r["ceiling"] for r in rows} == {None}


def test_a_searching_run_gives_one_row_per_budget_and_zero_shot_its_calibrated_twin():
    cbp = rows_of(summary("cbp", 0, 0.6, 0.55, [(50, 0.56, "start"), (100, 0.6, "mean@100")]))
    assert [(r["calls"], r["test_accuracy"], r["kept"]) for r in cbp] == [(50, 0.56, "start"), (100, 0.6, "mean@100")]
    assert all(r["start_accuracy"] == 0.55 and r["n_test"] == 300 for r in cbp)
    assert cbp[1]["ci95"][0] < 0.6 < cbp[1]["ci95"][1]
    odd = summary("cbp", 0, 0.6, 0.55, [(25, 0.56, "mean@30"), (100, 0.6, "mean@100")])
    odd["config"]["popsize"] = 10  # a checkpoint fires after the first whole population that reaches it
    assert [(r["calls"], r["calls_used"]) for r in rows_of(odd)] == [(25, 30), (100, 100)]
    assert "| arc-easy | cbp | 25 (30 used) | 1 |" in markdown(rows_of(odd))
    protected = summary("cbp", 0, 0.6, 0.55, [(100, 0.6, "mean@100")])
    options = {"calibrated": 0.65, "prompt": 0.6, "prompt+fit": 0.7}
    protected["curve"][0]["protected"] = {
        "option": "calibrated",
        "test_accuracy": 0.65,
        "protection": {"test_accuracy": options, "test_correct": {"prompt+fit": "1101"}},
    }
    rows = rows_of(protected)  # the fitted prompt and what the user ends on sit beside the search's own result
    assert [(r["method"], r["test_accuracy"], r["kept"]) for r in rows] == [
        ("cbp", 0.6, "mean@100"),
        ("cbp+fit", 0.7, None),
        ("cbp-protected", 0.65, "calibrated"),
    ]
    assert rows[1]["correct"] == "1101"  # the fitted prompt's own test rows, for its paired gaps
    full = {**summary("cbp", 0, 0.6, 0.55, [(100, 0.6, "mean@100")]), "config": {"subspace": 0}}
    assert [r["method"] for r in rows_of(full)] == ["cbp-full"]  # the ablation over all r, apart from CBP
    zero = rows_of(summary("zero-shot", 0, 0.5, 0.5))
    assert [(r["method"], r["calls"], r["test_accuracy"]) for r in zero] == [
        ("zero-shot", 0, 0.5),
        ("zero-shot-calibrated", 0, 0.55),
    ]


def test_table_only_pools_seeds_and_reports_the_worst_drop_below_the_start(tmp_path, capsys):
    runs = tmp_path / "runs" / "smollm2-135m" / "commonsense"
    for seed, (test, start) in enumerate([(0.60, 0.55), (0.50, 0.56)]):
        folder = runs / f"arc-easy-cbp-s{seed}"
        folder.mkdir(parents=True)
        run = summary("cbp", seed, test, start, [(100, test, "mean@100")])
        (folder / "summary.json").write_text(json.dumps(run))
    main(["--out", str(tmp_path), "--table-only"])
    rows = json.loads((tmp_path / "table.json").read_text())
    assert len(rows) == 2 and {r["seed"] for r in rows} == {0, 1}
    line = next(line for line in (tmp_path / "table.md").read_text().splitlines() if "| cbp | 100 |" in line)
    cells = [c.strip() for c in line.split("|")]
    assert cells[5:10] == ["2", "55.0", "51.0-58.9", "55.5", "-6.0"]  # pooled 330/600 (Wilson); worst: 50 - 56
    assert (tmp_path / "accuracy_vs_calls.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit, match="no runs"):
        main(["--out", str(tmp_path / "empty"), "--table-only"])


def test_a_run_tabulates_every_finished_run_in_its_folder_not_only_its_own(tmp_path, monkeypatch):
    """Invocations that share ``--out`` (other seeds, other methods, two lanes at once) each write the whole
    table: a run of seed 1 must not drop seed 0's row that an earlier invocation left there."""

    def finish(seed: int) -> None:
        folder = tmp_path / "runs" / "smollm2-135m" / "commonsense" / f"arc-easy-cbp-s{seed}"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps(summary("cbp", seed, 0.6, 0.5, [(100, 0.6, "mean@100")])))

    finish(0)
    monkeypatch.setattr(effectiveness, "run_all", lambda args: finish(*args.seeds))
    main(["--out", str(tmp_path), "--seeds", "1"])
    assert sorted(r["seed"] for r in json.loads((tmp_path / "table.json").read_text())) == [0, 1]


def test_each_backbone_gets_its_own_section_and_a_folder_never_passes_for_another_method(tmp_path, monkeypatch):
    """Two backbones in one folder are judged apart (a Gemma row must not enter SmolLM2's seed means), and a
    run folder whose summary is another CBP variant, or lacks a budget asked for, is refused rather than read
    back as the run asked for."""
    for backbone, test in (("smollm2-135m", 0.7), ("gemma3-270m", 0.4)):
        for method, accuracy in (("zero-shot", 0.5), ("sdt-only", 0.5), ("bbt", 0.55), ("cbp", test)):
            curve = [(100, accuracy, "mean@100")] if method in ("bbt", "cbp") else []
            run = {**summary(method, 0, accuracy, 0.5, curve), "backbone": backbone}
            folder = effectiveness.run_folder(tmp_path, backbone, "commonsense", "arc-easy", method, 0)
            folder.mkdir(parents=True)
            (folder / "summary.json").write_text(json.dumps(run))
    main(["--out", str(tmp_path), "--table-only"])
    text = (tmp_path / "table.md").read_text()
    gemma, smollm = text.split("# smollm2-135m")
    assert gemma.startswith("# gemma3-270m") and "CBP above zero-shot, SDT-only and BBT at equal calls: 0 of 1" in gemma
    assert "CBP above zero-shot, SDT-only and BBT at equal calls: 1 of 1" in smollm

    full = {**summary("cbp", 0, 0.6, 0.5, [(100, 0.6, "mean@100")]), "config": {"subspace": 0}}
    folder = effectiveness.run_folder(tmp_path / "other", "tiny-random", "medical", "drug-reviews-other", "cbp", 0)
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(full))
    monkeypatch.setattr(effectiveness, "ensure_generator", lambda *args: None)
    args = ["--out", str(tmp_path / "other"), "--domains", "medical", "--tasks", "drug-reviews-other"]
    with pytest.raises(SystemExit, match="holds a cbp-full run, not cbp"):
        main(args + ["--methods", "cbp", "--seeds", "0", "--backbone", "tiny-random"])
    (folder / "summary.json").write_text(json.dumps({**full, "config": {"subspace": 3}}))
    with pytest.raises(SystemExit, match=r"evaluated at \[100\] calls, not at \[400\]"):  # not read back as if run
        main(args + ["--methods", "cbp", "--seeds", "0", "--backbone", "tiny-random", "--budgets", "100", "400"])
    with pytest.raises(SystemExit, match="searched 3 coordinates, not --subspace 2"):
        main(
            args
            + ["--methods", "cbp", "--seeds", "0", "--backbone", "tiny-random", "--budgets", "100"]
            + ["--subspace", "2"]
        )


def test_paired_gaps_pair_the_same_seed_s_rows_pool_seeds_and_call_cbp_above_all_only_when_every_interval_is():
    def row(method, seed, bits, calls=0):
        return {"task": "arc-easy", "method": method, "calls": calls, "seed": seed, "correct": bits}

    cbp = [row("cbp", seed, "1" * 90 + "0" * 10, 100) for seed in (0, 1)]
    others = [row(m, seed, "1" * 60 + "0" * 40, 100 if m == "bbt" else 0) for m in BASELINES for seed in (0, 1)]
    line = paired_gaps(cbp + others).splitlines()[2]
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[:3] == ["arc-easy", "cbp", "100"] and cells[-1] == "yes"
    # 200 paired rows, 60 of them +1: mean 0.30, sd 0.459, half-width 1.96 * 0.459 / sqrt(200) = 0.064
    assert cells[3] == "+30.0 ± 6.4 (2)"
    # a baseline run on seed 0 only is paired on seed 0's rows alone; a missing one leaves CBP unproven
    partial = cbp + [r for r in others if r["method"] != "icl" and (r["method"] != "bbt" or r["seed"] == 0)]
    cells = [c.strip() for c in paired_gaps(partial).splitlines()[2].split("|")[1:-1]]
    assert cells[3 + BASELINES.index("bbt")].endswith("(1)") and cells[3 + BASELINES.index("icl")] == "-"
    assert cells[-1] == "no"
    assert paired_gaps([{**r, "correct": None} for r in cbp] + others).startswith("No CBP run here recorded")
    alone = [row("cbp", 0, "1" * 100, 100)] + [{**r, "correct": None} for r in others]  # nothing to pair with
    assert paired_gaps(alone).splitlines()[2].endswith("| - | - | - | - | - | - | - | - |")
    # a fitted CBP prompt meets BBT's fitted prompt, not its raw one
    fitted = [row("cbp+fit", 0, "1" * 100, 100), row("bbt+fit", 0, "1" * 80 + "0" * 20, 100)]
    lines = paired_gaps(cbp + others + fitted).splitlines()
    cells = [c.strip() for c in next(line for line in lines if "| cbp+fit |" in line).split("|")[1:-1]]
    assert cells[3 + BASELINES.index("bbt")].startswith("+20.0 ± ") and cells[3].startswith("+40.0 ± ")
    # equal accuracy, different rows right: 10 rows +1 and 10 rows -1 per seed, a mean of 0 with its noise
    swapped = cbp + [{**r, "correct": "0" * 10 + "1" * 90} for r in others]
    cells = [c.strip() for c in paired_gaps(swapped).splitlines()[2].split("|")[1:-1]]
    assert cells[3] == "+0.0 ± 6.2 (2)" and cells[-1] == "no"


def test_goal_checks_compare_seed_means_at_equal_calls_and_flag_a_run_below_its_start():
    def rows(method, seed, test, start=0.5, curve=()):
        return rows_of(summary(method, seed, test, start, curve))

    table = [
        *rows("zero-shot", 0, 0.60),
        *rows("zero-shot", 1, 0.62),
        *rows("zero-shot", 2, 0.90),  # a seed CBP never ran: left out of every mean
        *rows("cbp", 1, 0.9, 0.55, [(50, 0.9, "mean@50")]),  # a budget one seed lacks: no mean
        *rows("sdt-only", 0, 0.55),
        *rows("sdt-only", 1, 0.55),
        *rows("bbt", 0, 0.6, 0.5, [(100, 0.60, "best@100"), (400, 0.64, "best@400")]),
        *rows("bbt", 1, 0.6, 0.5, [(100, 0.60, "best@100"), (400, 0.64, "best@400")]),
        *rows("cbp", 0, 0.66, 0.55, [(100, 0.64, "mean@100"), (400, 0.66, "mean@400")]),
        *rows("cbp", 1, 0.40, 0.55, [(100, 0.66, "mean@100"), (400, 0.40, "mean@400")]),  # 15 points below start
    ]
    text = goal_checks(table)
    line = next(line for line in text.splitlines() if "| arc-easy |" in line)
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[2:8] == ["2", "61.0", "55.0", "400", "64.0", "53.0"]  # zero-shot over seeds 0-1 only
    assert cells[8:] == ["no", "65.0", "64.0", "yes"]  # CBP@400 loses; CBP@100 (65) >= BBT@400 (64)
    assert "above zero-shot, SDT-only and BBT at equal calls: 0 of 1" in text
    assert "CBP at 100 calls >= BBT at 400: 1 of 1" in text
    assert "1 of 4 searching runs end below their start by more than the start's noise: arc-easy cbp seed 1" in text
    per_task = compact(table).splitlines()[-1]
    cells = [c.strip() for c in per_task.split("|")[1:-1]]
    assert cells == [
        "commonsense",
        "arc-easy",
        "2",
        "300",
        "28.0",
        "61.0",
        "66.0",
        "55.0",
        "100 / 400",
        "60.0 / 64.0",
        "65.0 / 53.0",
    ]


def test_headroom_map_compares_every_method_with_the_best_baseline_on_the_same_rows(tmp_path):
    """One row per method on the same test rows, each paired against the best own option there; each ceiling
    fit trains on every user-side row except the test rows it scores; a task already mapped gets only what it
    lacks, or a ceiling asked with another ``--cross-fit``."""
    from cbp_fed.customize import OWN
    from cbp_fed.tasks import load_task, server_user_partition
    from simulations.headroom import main as headroom

    common = ["--backbone", "tiny-random", "--tasks", "sst2", "--steps", "4", "--lrs", "1e-3", "1e-2"]
    common += ["--ceiling-dev", "16", "--n-test", "24", "--shots", "2", "--icl-max-tokens", "96"]
    common += ["--r", "8", "--m", "4", "--t", "2", "--out", str(tmp_path)]
    args = [*common, "--ceilings", "generator", "bbt", "--cross-fit", "2"]
    headroom(args)
    rows = json.loads((tmp_path / "headroom.json").read_text())
    methods = [r["method"] for r in rows]
    assert methods == [*OWN, "icl", "instruction", "ceiling-generator", "ceiling-bbt"]
    assert {r["n_test"] for r in rows} == {24} and {r["domain"] for r in rows} == {"general"}
    best = max(rows[:4], key=lambda r: r["test_accuracy"])
    for r in rows:
        assert r["vs_best_baseline"]["baseline"] == best["method"]
        assert r["vs_best_baseline"]["mean"] == pytest.approx(r["test_accuracy"] - best["test_accuracy"], abs=1e-4)
        assert r["correct"].count("1") == round(r["test_accuracy"] * 24)
    user_side = len(server_user_partition(load_task("sst2"))[1])
    for ceiling in rows[-2:]:  # each fit: every user-side row but the 12 test rows it scores, 16 to early-stop on
        assert ceiling["cross_fit"] == 2 and [fit["test_rows"] for fit in ceiling["fits"]] == [12, 12]
        for fit in ceiling["fits"]:
            assert fit["train_rows"] + ceiling["dev_rows"] == user_side - 12
            assert [s["lr"] for s in fit["sweep"]] == [1e-3, 1e-2]  # the lr kept is the sweep's best on dev
            assert fit["lr"] == max(fit["sweep"], key=lambda s: (s["dev_accuracy"], -s["dev_loss"]))["lr"]
    assert rows[-1]["start_test_accuracy"] == rows[methods.index("instruction")]["test_accuracy"]  # BBT's z = 0
    (line,) = [row for row in (tmp_path / "headroom.md").read_text().splitlines() if "| sst2 |" in row]
    assert line.startswith("| tiny-random | sst2 | 24 |") and (tmp_path / "headroom.png").stat().st_size > 0
    part = tmp_path / "parts" / "tiny-random" / "sst2.json"
    part.write_text(json.dumps([dict(r, kept=True) for r in rows[:-1]]))  # a part without the bbt ceiling
    headroom(args)
    again = json.loads((tmp_path / "headroom.json").read_text())
    assert [r["method"] for r in again] == methods  # only the missing ceiling is trained, and appended
    assert all(r.get("kept") for r in again[:-1]) and "kept" not in again[-1]
    headroom(args)  # a finished part is kept as it is, and merged
    assert json.loads((tmp_path / "headroom.json").read_text()) == again
    headroom([*common, "--ceilings", "bbt", "--cross-fit", "1"])  # a ceiling asked with another k is replaced
    refit = json.loads((tmp_path / "headroom.json").read_text())
    assert [r["method"] for r in refit] == methods and refit[:-1] == again[:-1]
    assert refit[-1]["cross_fit"] == 1 and [fit["test_rows"] for fit in refit[-1]["fits"]] == [24]


@pytest.mark.parametrize("folds", [1, 2, 3])
def test_cross_fitting_scores_each_test_row_once_with_a_fit_that_never_trained_on_it(folds):
    from simulations.headroom import cross_fit_splits

    test, rest = [f"t{i}" for i in range(10)], [f"r{i}" for i in range(7)]
    splits = cross_fit_splits(test, rest, folds, n_dev=3)
    assert len(splits) == folds
    assert sorted(i for _, _, scored in splits for i in scored) == list(range(10))
    for train, dev, scored in splits:
        assert dev == rest[:3] and not set(dev) & set(train)
        assert set(train) == set(rest[3:]) | {test[i] for i in range(10) if i not in scored}
    with pytest.raises(ValueError, match="--cross-fit must be >= 1"):
        cross_fit_splits(test, rest, 0, 3)


def test_bbt_settings_keep_the_best_mean_dev_accuracy_and_the_first_among_equals():
    from simulations.bbt_settings import choose

    records = [
        {"task": task, "r": r, "sigma0": s, "seed": 0, "dev_accuracy": acc}
        for task, r, s, acc in [
            ("a", 50, 1.0, 0.6),
            ("b", 50, 1.0, 0.8),  # mean 0.7
            ("a", 50, 2.0, 0.9),
            ("b", 50, 2.0, 0.4),  # mean 0.65: one task's best is not the grid's best
            ("a", 500, 1.0, 0.7),
            ("b", 500, 1.0, 0.7),  # mean 0.7, later in grid order
            ("a", 500, 2.0, 0.5),
            ("b", 500, 2.0, 0.5),
        ]
    ]
    best, grid = choose(records, [50, 500], [1.0, 2.0])
    assert (best["r"], best["sigma0"]) == (50, 1.0) and best["mean_dev_accuracy"] == pytest.approx(0.7)
    assert [point["runs"] for point in grid] == [2, 2, 2, 2]
    with pytest.raises(ValueError, match="r 200, sigma0 1 has no runs"):
        choose(records, [200], [1.0])  # a point of the grid that never ran is not a choice


def test_bbt_runs_with_the_settings_chosen_on_the_sdt_tasks_dev_rows(tmp_path):
    from simulations.bbt_settings import main as bbt_settings

    small = ["--backbone", "tiny-random", "--shots", "2", "--max-tokens", "128"]
    bbt_settings(
        ["--domain", "medical", "--r", "8", "--sigma0", "2", "--budget", "10", "--n-dev", "8"]
        + small
        + ["--out", str(tmp_path / "settings")]
    )
    chosen = json.loads((tmp_path / "settings" / "tiny-random-medical.json").read_text())
    assert {(run["task"], run["scored"], run["n_dev"]) for run in chosen["runs"]} == {
        ("bioasq", "dev", 8),
        ("pubmedqa", "dev", 8),
        ("sst2", "dev", 8),
    }  # the SDT tasks, never a test row
    args = ["--out", str(tmp_path / "table"), "--domains", "medical", "--tasks", "drug-reviews-other"] + small
    args += ["--methods", "bbt", "--seeds", "0", "--budgets", "10", "--n-test", "16"]
    with pytest.raises(SystemExit, match="no BBT settings for medical on tiny-random"):
        main(args + ["--bbt-settings", str(tmp_path / "nowhere")])
    main(args + ["--bbt-settings", str(tmp_path / "settings")])
    summary = json.loads(next((tmp_path / "table" / "runs").rglob("summary.json")).read_text())
    assert (summary["bbt_r"], summary["sigma0"]) == (8, 2.0)


def test_a_task_is_a_user_task_when_a_ceiling_gains_five_points_with_its_interval_above_zero():
    from simulations.headroom import meets_rule

    def rows(**gaps):
        baseline = {"majority": {"vs_best_baseline": {"mean": 0.0, "ci95": 0.0}}}
        return baseline | {f"ceiling-{m}": {"vs_best_baseline": {"mean": a, "ci95": b}} for m, (a, b) in gaps.items()}

    assert meets_rule(rows(bbt=(0.05, 0.049))) == "yes (ceiling-bbt)"
    assert meets_rule(rows(bbt=(0.043, 0.038), z=(0.08, 0.09))) == "no"  # too small; interval reaches 0
    assert meets_rule(rows(z=(0.06, 0.02), generator=(0.07, 0.01))) == "yes (ceiling-z, ceiling-generator)"
    assert meets_rule(rows()) == "-"


def test_the_gpu_script_asks_the_runner_for_what_it_can_run():
    """The GPU script cannot run here; its flags can still be checked against the runner it calls."""
    script = (Path(__file__).resolve().parent.parent / "simulations" / "gpu_effectiveness.sh").read_text()
    command = script[script.rindex("-m simulations.effectiveness") :].split('"$@"')[0].replace("\\\n", " ")
    args = effectiveness.build_parser().parse_args(shlex.split(command)[2:])
    assert args.device == "cuda" and max(args.budgets) == 8000
    assert {"calibrated-fit", "icl", "cbp", "cbp-full"} <= set(args.methods)
