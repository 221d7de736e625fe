"""`python -m simulations.bench`: run the sections asked for, keep bench.json, rebuild bench.md and scaling.png."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from cbp_fed.console import make_console
from simulations.bench import __doc__ as usage
from simulations.bench.federation import federation, scale
from simulations.bench.inprocess import Bench
from simulations.bench.measure import QUICK, ROOT, Sizes
from simulations.bench.report import machine, markdown, plot_scaling

SECTIONS = ("limit", "blackbox", "tried", "options", "federation", "scale")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Sizes]:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.bench", description=usage, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    parser.add_argument("--quick", action="store_true", help="smaller shapes and runs (a few minutes)")
    parser.add_argument("--backbone", default="smollm2-135m", help="the real backbone (registry name, folder, hub id)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", help="the BlackBox's dtype: auto (as the app), fp32, bf16")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on a CPU (CPU time is per core)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile in 'tried'")
    parser.add_argument("--one", help="one user's query, CANDIDATESxTEXTS (default 6x16)")
    parser.add_argument("--many", help="each user's query in the many-users case, CANDIDATESxTEXTS (default 1x1)")
    parser.add_argument("--tried", help="the query of 'limit' and 'tried', CANDIDATESxTEXTS (default 4x4)")
    parser.add_argument("--many-users", type=int, help="users whose queries are scored in one call (default 100)")
    parser.add_argument("--users", help="users of the federation sweep, comma-separated (default 10,30,100,300)")
    parser.add_argument("--reps", type=int, help="timed repetitions per comparison (default 3)")
    parser.add_argument("--runs", help="federation, scale: rerun only these runs (e.g. tiny-300), keep the others'")
    parser.add_argument("--profile-users", help="scale: users of the profiled runs, comma-separated (default 100,1000)")
    parser.add_argument("--scale-users", help="scale: users of the curve, comma-separated (default 10,...,10000)")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench"))
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    sizes = QUICK if args.quick else Sizes()
    shape = lambda text: tuple(int(x) for x in text.lower().split("x"))
    overrides = {
        "one": args.one and shape(args.one),
        "many": args.many and shape(args.many),
        "tried": args.tried and shape(args.tried),
        "many_users": args.many_users,
        "reps": args.reps,
        "users": args.users and tuple(int(u) for u in args.users.split(",")),
        "profile_users": args.profile_users and tuple(int(u) for u in args.profile_users.split(",")),
        "scale_users": args.scale_users and tuple(int(u) for u in args.scale_users.split(",")),
    }
    return args, replace(sizes, **{k: v for k, v in overrides.items() if v})


def main(argv: list[str] | None = None) -> int:
    args, sizes = parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench.json"
    bench = json.loads(path.read_text()) if path.exists() else {}
    bench["machine"] = machine(args)
    command = "python -m simulations.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    console = make_console()
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        runner = Bench(args, sizes, progress, dict(bench))
        sections = {
            "limit": runner.limit,
            "blackbox": runner.blackbox,
            "tried": runner.tried,
            "options": runner.options,
            "federation": partial(federation, runner),
            "scale": partial(scale, runner),
        }
        for name in args.only.split(","):
            started, load = time.time(), os.getloadavg()[0]
            result = sections[name]()
            bench[name] = result | {"wall_s": round(time.time() - started, 1), "load": [load, os.getloadavg()[0]]}
            runner.finish()
            bench.setdefault("commands", {})[name] = command.strip()
            path.write_text(json.dumps(bench, indent=2, default=float) + "\n")
    (out / "bench.md").write_text(markdown(bench))
    if "federation" in bench or "scale" in bench:
        plot_scaling(bench.get("federation", {}), out / "scaling.png", bench.get("scale"))
    console.print((out / "bench.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
