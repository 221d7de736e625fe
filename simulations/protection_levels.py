"""What the never-worse protocol's level costs and buys, judged again from the choices finished runs recorded.

    python -m simulations.protection_levels results/pilot results/protect [--alphas 0.05 0.1 0.2 0.3 0.5]

A user with a prompt keeps its best option without the provider (the baseline) unless the best option
with it (the contender) wins a one-sided sign test on the dev rows where exactly one of the two is right
(``calibration.protect``, level ``alpha``). Every run with test rows records that choice in its summary
(``protection``: baseline, contender, their dev wins and losses and the sign test's p-value, each option's
test accuracy), so each
choice can be judged again at any level without scoring a row. Per level: how many choices moved to the
contender, the mean test change over the user's baseline (what the provider added) and the worst one
(what a user lost). Choices at several budgets of one search share their user and rows: they are not
independent draws, so the table is a map of the trade-off, not a test of it.

Writes ``<out>/protection_levels.json`` (the levels and every choice), ``<out>/protection_levels.md`` and
``<out>/protection_levels.png`` (mean and worst change against the level).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cbp_fed.calibration import PROTECT_ALPHA


def recorded_choices(summary: dict, run: str) -> list[dict]:
    """Each protected choice of one run's summary on its test rows: one per evaluated budget of a search,
    one for a run without a search; none when the run had no dev rows or no prompt."""
    points = summary.get("curve") or [{"calls": 0, "protected": summary.get("protected")}]
    choices = []
    for point in points:
        record = (point.get("protected") or {}).get("protection") or {}
        if not record.get("contender") or "test_accuracy" not in record:
            continue
        test = record["test_accuracy"]
        choices.append(
            {
                "run": run,
                "task": summary["task"],
                "method": summary["method"],
                "calls": point["calls"],
                "baseline": record["baseline"],
                "contender": record["contender"],
                "wins": record["wins"],
                "losses": record["losses"],
                "p_value": record["p_value"],
                "baseline_test": test[record["baseline"]],
                "contender_test": test[record["contender"]],
            }
        )
    return choices


def judge(choices: list[dict], alpha: float) -> dict:
    """The choices judged at level ``alpha``: how many moved, and the test change over the baseline
    (mean and worst, in accuracy points of 1) of what each user would have ended on."""
    moved = [c["p_value"] <= alpha for c in choices]
    changes = [c["contender_test"] - c["baseline_test"] if move else 0.0 for c, move in zip(choices, moved)]
    return {
        "alpha": alpha,
        "choices": len(choices),
        "moved": sum(moved),
        "mean_change": sum(changes) / len(changes),
        "worst_change": min(changes),
        "ended_below": sum(change < 0 for change in changes),
    }


def markdown(levels: list[dict], choices: list[dict]) -> str:
    lines = [
        "| alpha | choices | moved to the provider | mean change vs baseline (pts) | worst (pts) | ended below |",
        "|---|---|---|---|---|---|",
    ]
    for level in levels:
        lines.append(
            f"| {level['alpha']:g}{' (default)' if level['alpha'] == PROTECT_ALPHA else ''} | {level['choices']} "
            f"| {level['moved']} | {100 * level['mean_change']:+.1f} | {100 * level['worst_change']:+.1f} "
            f"| {level['ended_below']} |"
        )
    lines += [
        "",
        "| run | calls | baseline | contender | dev wins-losses | p | baseline test % | contender test % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in choices:
        lines.append(
            f"| {c['run']} | {c['calls']} | {c['baseline']} | {c['contender']} | {c['wins']}-{c['losses']} "
            f"| {c['p_value']:.3f} | {100 * c['baseline_test']:.1f} "
            f"| {100 * c['contender_test']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(levels: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = [level["alpha"] for level in levels]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(alphas, [100 * level["mean_change"] for level in levels], "o-", label="mean change")
    ax.plot(alphas, [100 * level["worst_change"] for level in levels], "s--", label="worst change")
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(PROTECT_ALPHA, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("level of the dev sign test (alpha)")
    ax.set_ylabel("test accuracy vs own best option (pts)")
    ax.set_title(f"never-worse protocol: {levels[0]['choices']} recorded choices")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="folders searched for run summaries (summary.json)")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.01, PROTECT_ALPHA, 0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--out", default="results/protection-levels")
    args = parser.parse_args(argv)
    if any(not 0 < alpha < 1 for alpha in args.alphas):
        raise SystemExit(f"every level must be in (0, 1), got {args.alphas}")
    choices = []
    for folder in map(Path, args.folders):
        if not folder.is_dir():
            raise SystemExit(f"{folder}: no such folder")
        for path in sorted(folder.rglob("summary.json")):
            choices += recorded_choices(json.loads(path.read_text()), str(path.parent))
    if not choices:
        raise SystemExit(f"no protected choices on test rows in the summaries under {args.folders}")
    levels = [judge(choices, alpha) for alpha in sorted(args.alphas)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "protection_levels.json").write_text(json.dumps({"levels": levels, "choices": choices}, indent=1) + "\n")
    (out / "protection_levels.md").write_text(markdown(levels, choices))
    plot(levels, out / "protection_levels.png")
    print(markdown(levels, choices))


if __name__ == "__main__":
    main()
