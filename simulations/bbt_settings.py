"""BBT's settings chosen the way CBP's are: on the provider's side, never on a user's row.

    python -m simulations.bbt_settings --domain medical --r 50 200 500 --sigma0 0.5 1 2 --budget 100

BBT's random projection has two settings a fair comparison must not pick on the users' tasks: the
intrinsic dimension ``r`` and the CMA-ES step size ``sigma0``. This grid runs BBT (``cbp-fed customize
--method bbt``) on each of the domain's SDT tasks, which no user of the domain has, with
``eval_split="dev"``: every run reports its dev accuracy and no test row is ever scored. The setting with
the highest dev accuracy, averaged over tasks and seeds, is kept (ties: the first in grid order, smaller
``r`` first). Each run is written as it finishes (``<out>/<backbone>-<domain>/runs/``, rerunning resumes),
and the grid and the choice go to ``<out>/<backbone>-<domain>.json``, which
``simulations.effectiveness --bbt-settings`` reads.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from cbp_fed.backbone import FrozenLM
from cbp_fed.customize import CustomizeConfig, customize
from cbp_fed.tasks import DOMAINS


def grid_runs(lm: FrozenLM, args) -> list[dict]:
    """One record per (task, r, sigma0, seed): its dev accuracy after ``--budget`` calls (the search mean)."""
    folder = Path(args.out) / f"{lm.name}-{args.domain}" / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for task, r, sigma0, seed in itertools.product(DOMAINS[args.domain].sdt_tasks, args.r, args.sigma0, args.seeds):
        path = folder / f"{task}-r{r}-sigma{sigma0:g}-s{seed}.json"
        if not path.exists():
            config = CustomizeConfig(
                task=task,
                method="bbt",
                seed=seed,
                budget=args.budget,
                sigma0=sigma0,
                bbt_r=r,
                shots_per_class=args.shots,
                n_dev=args.n_dev,
                eval_split="dev",
                select_on_dev=False,
                max_tokens=args.max_tokens,
                backbone=lm.name,
            )
            summary = customize(config, lm, progress=False)
            record = {
                "task": task,
                "r": summary["bbt_r"],
                "sigma0": summary["sigma0"],
                "seed": seed,
                "dev_accuracy": summary["dev_accuracy"],
                "start_dev_accuracy": summary["start_dev_accuracy"],
                "n_dev": summary["dev_size"],
                "scored": summary["eval_split"],
            }
            path.write_text(json.dumps(record) + "\n")
            print(f"{task} r {r} sigma0 {sigma0:g} seed {seed}: dev {100 * record['dev_accuracy']:.1f}%", flush=True)
        records.append(json.loads(path.read_text()))
    return records


def choose(records: list[dict], rs: list[int], sigma0s: list[float]) -> tuple[dict, list[dict]]:
    """The grid's mean dev accuracy per (r, sigma0) over tasks and seeds, in grid order, and its best
    (the first among equals)."""
    grid = []
    for r, sigma0 in itertools.product(rs, sigma0s):
        mine = [rec["dev_accuracy"] for rec in records if rec["r"] == r and rec["sigma0"] == sigma0]
        if not mine:
            raise ValueError(f"grid point r {r}, sigma0 {sigma0:g} has no runs")
        grid.append({"r": r, "sigma0": sigma0, "runs": len(mine), "mean_dev_accuracy": float(np.mean(mine))})
    best = max(range(len(grid)), key=lambda i: (grid[i]["mean_dev_accuracy"], -i))
    return grid[best], grid


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True, choices=list(DOMAINS))
    parser.add_argument("--r", type=int, nargs="+", default=[50, 200, 500], help="intrinsic dimensions to try")
    parser.add_argument("--sigma0", type=float, nargs="+", default=[0.5, 1.0, 2.0], help="CMA-ES step sizes")
    parser.add_argument("--budget", type=int, default=100, help="calls per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--shots", type=int, default=16, help="train rows per answer")
    parser.add_argument("--n-dev", type=int, default=100, help="dev rows each run is judged on")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default="results/bbt-settings")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = FrozenLM.load(args.backbone)
    records = grid_runs(lm, args)
    best, grid = choose(records, args.r, args.sigma0)
    out = Path(args.out) / f"{lm.name}-{args.domain}.json"
    settings = vars(args) | {"tasks": list(DOMAINS[args.domain].sdt_tasks)}
    out.write_text(json.dumps({"chosen": best, "grid": grid, "settings": settings, "runs": records}, indent=1) + "\n")
    for point in grid:
        print(f"r {point['r']:4d} sigma0 {point['sigma0']:<4g} mean dev {100 * point['mean_dev_accuracy']:.1f}%")
    print(f"chosen: r {best['r']}, sigma0 {best['sigma0']:g} -> {out}")


if __name__ == "__main__":
    main()
