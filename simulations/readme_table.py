"""The README's decisive results table, generated from an effectiveness folder (never typed by hand).

    python -m simulations.readme_table results/pilot --cbp cbp            # print the table
    python -m simulations.readme_table results/pilot --cbp cbp --write    # and put it in README.md

One row per (task, backbone) of ``<folder>/table.json`` (``simulations.effectiveness``): the seeds and test
rows behind it; the best a user can do without the provider (the best seed mean of majority, zero-shot,
both calibrations and in-context demonstrations, picked on test: the bar CBP has to clear, in hindsight);
BBT and CBP (the ``--cbp`` variant: ``cbp``, the subspace search, or the ``cbp-full`` ablation) at the
largest budget both ran, and CBP at 100 calls; CBP minus the best own option and minus BBT at equal calls,
paired over the same test rows and pooled over the seeds both ran (``stats.paired_bits``); the z-alone
ceiling where the table has it; and the command that makes the row's runs, rebuilt from their
``summary.json`` files. ``--write`` replaces the README's block between its ``<!-- readme_table ... -->``
and ``<!-- /readme_table -->`` markers; a test checks the README holds what this script writes from the
committed folder.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from simulations.effectiveness import CHOICES, gap_over_seeds, method_name

ROOT = Path(__file__).resolve().parent.parent
OWN_OPTIONS = ("majority", "zero-shot", "calibrated", "calibrated-fit", "icl")
QUICK = 100
START, END = "<!-- readme_table {args} -->", "<!-- /readme_table -->"
BLOCK = re.compile(r"<!-- readme_table (?P<args>[^>]*) -->\n(?P<table>.*?)<!-- /readme_table -->", re.S)


def command(folder: Path, task: str, backbone: str) -> str:
    """The ``simulations.effectiveness`` command that makes the task's runs under ``folder``: its methods,
    seeds, budgets and user settings as the runs' ``summary.json`` files record them (the budgets every search
    run evaluated: the runner refuses a run that lacks one it is asked for)."""
    summaries = [json.loads(p.read_text()) for p in sorted(folder.glob(f"runs/**/{task}-*-s*/summary.json"))]
    summaries = [s for s in summaries if s["task"] == task and s["backbone"] == backbone]
    methods, seeds, budgets, subspace = set(), set(), None, 0
    for s in summaries:
        config = s["config"]
        methods.add(method_name(s))
        seeds.add(s["seed"])
        if s["curve"]:
            evaluated = {p["calls"] for p in s["curve"]}
            budgets = evaluated if budgets is None else budgets & evaluated
        subspace = config.get("subspace") or subspace
    config = summaries[0]["config"]
    parts = [
        f"python -m simulations.effectiveness --out {folder.as_posix()} --domains {summaries[0]['domain']}",
        f"--tasks {task} --methods {' '.join(sorted(methods, key=CHOICES.index))}"
        + (f" --subspace {subspace}" if subspace else ""),
        f"--seeds {' '.join(map(str, sorted(seeds)))} --budgets {' '.join(map(str, sorted(budgets or ())))}",
        f"--shots {config['shots_per_class']} --n-test {config['n_test']} --max-tokens {config['max_tokens']}",
        f"--backbone {backbone}",
    ]
    return " ".join(parts)


def _gap(bits: dict, ours: tuple[str, int], theirs: tuple[str, int]) -> str:
    """``ours - theirs`` in points, paired over the test rows of the seeds both recorded, with its interval."""
    gap, seeds = gap_over_seeds(bits, ours, theirs)
    return f"{100 * gap['mean']:+.1f} ± {100 * gap['ci95']:.1f}" if seeds else "-"


def table(folder: Path, cbp: str = "cbp") -> str:
    """The markdown table of ``folder``'s ``table.json``: one row per (task, backbone) where ``cbp`` and BBT ran."""
    rows = json.loads((folder / "table.json").read_text())
    groups = defaultdict(list)
    for row in rows:
        groups[(row["domain"], row["task"], row["backbone"])].append(row)
    lines = [
        "| task (domain) | backbone | seeds x test rows | best own option | BBT | CBP at 100 calls / at B "
        "| CBP - best own option | CBP - BBT | z-alone ceiling | command |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (domain, task, backbone), mine in sorted(groups.items()):
        means = defaultdict(list)
        for row in mine:
            means[(row["method"], row["calls"])].append(row["test_accuracy"])
        mean = {key: float(np.mean(values)) for key, values in means.items()}
        budgets = sorted({c for m, c in mean if m == cbp} & {c for m, c in mean if m == "bbt"})
        own = [o for o in OWN_OPTIONS if (o, 0) in mean]
        if not budgets or not own:
            continue
        budget, best = budgets[-1], max(own, key=lambda o: mean[(o, 0)])
        seeds = sorted({r["seed"] for r in mine if r["method"] == cbp})
        quick = f"{100 * mean[(cbp, QUICK)]:.1f}" if (cbp, QUICK) in mean else "-"
        ceilings = {r.get("ceiling") for r in mine} - {None}
        bits = {(r["method"], r["calls"], r["seed"]): r["correct"] for r in mine if r.get("correct")}
        lines.append(
            f"| {task} ({domain}) | {backbone} | {len(seeds)} x {mine[0]['n_test']} "
            f"| {best} {100 * mean[(best, 0)]:.1f} | {100 * mean[('bbt', budget)]:.1f} at {budget} "
            f"| {quick} / {100 * mean[(cbp, budget)]:.1f} at {budget} "
            f"| {_gap(bits, (cbp, budget), (best, 0))} | {_gap(bits, (cbp, budget), ('bbt', budget))} "
            f"| {', '.join(f'{100 * c:.1f}' for c in sorted(ceilings)) or '-'} "
            f"| `{command(folder, task, backbone)}` |"
        )
    return "\n".join(lines) + "\n"


def write(readme: Path, text: str, args: str) -> None:
    """Replace the README's block for ``args`` (the markers' text) with ``text``."""
    content = readme.read_text()
    block = f"{START.format(args=args)}\n{text}{END}"
    found = [m for m in BLOCK.finditer(content) if m["args"] == args]
    if not found:
        raise SystemExit(f"{readme} has no block {START.format(args=args)} ... {END} to fill")
    readme.write_text(content[: found[0].start()] + block + content[found[0].end() :])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="an effectiveness --out folder (its table.json and runs/)")
    parser.add_argument("--cbp", default="cbp", choices=("cbp", "cbp-full"), help="the CBP variant the table reports")
    parser.add_argument("--write", action="store_true", help="put the table into README.md between its markers")
    args = parser.parse_args(argv)
    text = table(args.folder, args.cbp)
    if args.write:
        write(ROOT / "README.md", text, f"{args.folder.as_posix()} --cbp {args.cbp}")
    print(text, end="")


if __name__ == "__main__":
    main()
