"""The README's decisive table: generated from the committed runs, and computed right from hand-made ones."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from simulations.readme_table import BLOCK, table, write

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_holds_what_the_script_writes_from_the_committed_runs(monkeypatch):
    monkeypatch.chdir(ROOT)  # the commands name the folder as the README's command does
    blocks = list(BLOCK.finditer((ROOT / "README.md").read_text()))
    assert blocks, "the README lost its generated results table"
    for block in blocks:
        folder, flag, cbp = shlex.split(block["args"])
        assert flag == "--cbp"
        assert block["table"] == table(Path(folder), cbp), "README.md is stale: rerun simulations.readme_table --write"


def _row(method, calls, seed, accuracy, correct, **extra):
    return {"domain": "finance", "task": "t", "backbone": "b", "method": method, "calls": calls, "seed": seed,
            "test_accuracy": accuracy, "n_test": 4, "correct": correct, **extra}  # fmt: skip


def _summary(method, seed, curve=(), subspace=0):
    config = {"subspace": subspace, "shots_per_class": 16, "n_test": 4, "max_tokens": 64}
    return {"task": "t", "domain": "finance", "backbone": "b", "method": method, "seed": seed, "curve": list(curve),
            "config": config}  # fmt: skip


def test_each_row_pairs_cbp_with_the_best_own_option_and_bbt_at_the_largest_common_budget(tmp_path):
    rows = []
    for seed in (0, 1):
        rows += [
            _row("majority", 0, seed, 0.5, "1100"),
            _row("calibrated-fit", 0, seed, 0.75, "1110"),  # the best own option, by its mean over seeds
            _row("zero-shot", 0, seed, 0.25, "1000"),
            _row("bbt", 100, seed, 0.5, "1010"),
            _row("bbt", 400, seed, 0.5, "0110"),
            _row("cbp", 100, seed, 0.75, "1101", ceiling=0.9),
            _row("cbp", 400, seed, 1.0, "1111", ceiling=0.9),
            _row("cbp", 800, seed, 1.0, "1111"),  # BBT did not get this far: not compared
            _row("cbp-full", 400, seed, 0.25, "0001"),  # the ablation: not this table's
        ]
    (tmp_path / "table.json").write_text(json.dumps(rows))
    for name, method, subspace in (("bbt", "bbt", 0), ("cbp", "cbp", 3), ("zero-shot", "zero-shot", 0)):
        run = tmp_path / "runs" / "b" / "finance" / f"t-{name}-s0"
        run.mkdir(parents=True)
        budgets = {"bbt": [100, 400], "cbp": [25, 100, 400], "zero-shot": []}[name]  # 25: one run only
        summary = _summary(method, 0, curve=[{"calls": c} for c in budgets], subspace=subspace)
        (run / "summary.json").write_text(json.dumps(summary))
    (line,) = table(tmp_path).splitlines()[2:]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:9] == [
        "t (finance)",
        "b",
        "2 x 4",
        "calibrated-fit 75.0",
        "50.0 at 400",
        "75.0 / 100.0 at 400",
        "+25.0 ± 32.1",  # 1111 - 1110 on both seeds: one row in four gained; sd 0.46 over 8 rows
        "+50.0 ± 37.0",  # 1111 - 0110: two in four
        "90.0",
    ]
    assert cells[9] == (
        f"`python -m simulations.effectiveness --out {tmp_path.as_posix()} --domains finance --tasks t "
        "--methods zero-shot bbt cbp --subspace 3 --seeds 0 --budgets 100 400 --shots 16 --n-test 4 "
        "--max-tokens 64 --backbone b`"
    )


def test_writing_replaces_only_its_own_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- readme_table x --cbp y -->\nold\n<!-- /readme_table -->\nb\n")
    write(readme, "| new |\n", "x --cbp y")
    assert readme.read_text() == "a\n<!-- readme_table x --cbp y -->\n| new |\n<!-- /readme_table -->\nb\n"
