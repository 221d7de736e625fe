"""The core comparison on the real SmolLM2: zero-shot, SDT-only, BBT and CBP on held-out tasks.

    python -m simulations.core_table [--seeds 0 1 2] [--budget 200] [--out results/core]

For each (task, method, seed) it runs `cbp-fed customize` in-process with the same budget, k-shot
split and test set, skipping cells whose summary.json exists (resumable), then writes
`table.md` (mean ± std over seeds) and `budget_curve.png` (test accuracy vs calls, BBT vs CBP).
Generators come from `cbp-fed sdt` runs in `<out>/gen-<domain>` (trained first if missing).
Cells run seed by seed, so a stopped run still has complete seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from cbp_fed.backbone import FrozenLM  # noqa: E402
from cbp_fed.customize import METHODS, CustomizeConfig, customize  # noqa: E402
from cbp_fed.domain_training import SDTConfig, save_generator, train_generator  # noqa: E402
from cbp_fed.report import summaries_table  # noqa: E402

TASKS = {"boolq": "commonsense", "pubmedqa": "medical"}  # held out of their domain's SDT pool


def budget_curve(summaries: list[dict], path: Path) -> None:
    """Test accuracy vs calls for the searching methods, one panel per task, mean ± std over seeds."""
    tasks = sorted({s["task"] for s in summaries})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for method, colour in (("bbt", "tab:blue"), ("cbp", "tab:red")):
            runs = [s for s in summaries if s["task"] == task and s["method"] == method and s["curve"]]
            if not runs:
                continue
            calls = [p["calls"] for p in runs[0]["curve"]]
            acc = np.array([[p["test_accuracy"] for p in r["curve"]] for r in runs]) * 100
            ax.errorbar(calls, acc.mean(0), yerr=acc.std(0), marker="o", color=colour, capsize=3, label=method.upper())
        for method, style in (("zero-shot", ":"), ("sdt-only", "--")):
            runs = [s["test_accuracy"] * 100 for s in summaries if s["task"] == task and s["method"] == method]
            if runs:
                ax.axhline(np.mean(runs), linestyle=style, color="grey", label=method)
        majority = [s["majority_rate"] * 100 for s in summaries if s["task"] == task]
        ax.axhline(np.mean(majority), color="black", linewidth=0.8, label="majority class")
        ax.set(title=task, xlabel="model calls", ylabel="test accuracy (%)", xscale="log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/core")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--checkpoints", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--sdt-steps", type=int, default=400)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    lm = FrozenLM.load("smollm2-135m")
    for domain in sorted({TASKS[t] for t in args.tasks}):
        folder = out / f"gen-{domain}"
        if not (folder / "generator.json").exists():
            gen, meta = train_generator(lm, SDTConfig(domain=domain, steps=args.sdt_steps, max_tokens=96))
            save_generator(gen, meta, folder)
    for seed in args.seeds:
        for task in args.tasks:
            for method in args.methods:
                cell = out / f"{task}-{method}-s{seed}"
                if (cell / "summary.json").exists():
                    continue
                config = CustomizeConfig(
                    task=task,
                    method=method,
                    seed=seed,
                    budget=args.budget,
                    generator=str(out / f"gen-{TASKS[task]}"),
                    shots_per_class=args.shots,
                    n_test=args.n_test,
                    max_tokens=args.max_tokens,
                    checkpoints=tuple(args.checkpoints),
                )
                summary = customize(config, lm)
                cell.mkdir(parents=True, exist_ok=True)
                (cell / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
                print(
                    f"{cell.name}: test {summary['test_accuracy']:.3f} calibrated "
                    f"{summary['test_accuracy_calibrated']:.3f} in {summary['wall_seconds']:.0f} s",
                    flush=True,
                )
    summaries = [json.loads(p.read_text()) for p in sorted(out.glob("*/summary.json"))]
    (out / "table.md").write_text(summaries_table(summaries))
    budget_curve(summaries, out / "budget_curve.png")
    print((out / "table.md").read_text())


if __name__ == "__main__":
    main()
