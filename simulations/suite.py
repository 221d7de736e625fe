"""The experiment suite: methods x domains x seeds through the Flower apps, at equal call budgets.

    python -m simulations.suite [--domains commonsense medical finance]
                                [--methods zero-shot sdt-only bbt fedbpt cbp cbp-full] [--subspace 3]
                                [--seeds 0 1 2] [--users 4] [--out results/suite] [--table-only]
    python -m simulations.suite --domains finance --preset simulations/finance-20.toml --users 20 \
        --methods cbp fedbpt bbt --seeds 0 --out results/suite-finance-20

Each cell is one real `flwr run .` (simulations/local_run.py) of the domain's preset
(simulations/<domain>.toml, or ``--preset``) with `method` and `seed` set, into `<out>/<domain>-<method>-s<seed>/`.
The suite is resumable: a cell with a summary.json is not run again; a cell that was killed after a
round continues from its checkpoint (`resume-from`, users keep their state under `<out>/.users`);
anything else is run afresh. Cells go seed by seed, so a stopped suite still has complete seeds.
Generators are the preset's `generator` (the effectiveness table's `results/effectiveness/gen-<domain>`,
so the suite and the table share one per domain), trained first with `cbp-fed sdt` if missing. Then it
writes `<out>/table.md` and three plots: accuracy per method per domain, accuracy vs calls per user,
bytes per user per round per method.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cbp_fed.results import chance_accuracy, legend_below, method_label, upgrade_summary  # noqa: E402
from cbp_fed.stats import paired  # noqa: E402
from simulations.local_run import ROOT, flwr_run, run_config_string  # noqa: E402

METHODS = ("zero-shot", "sdt-only", "bbt", "fedbpt", "cbp", "cbp-full")
"""``cbp``: CBP whose users search ``--subspace`` coordinates along the generator's SDT task vectors, with
sigma0 the generator's SDT noise (as ``cbp-fed customize`` sets it); ``cbp-full``: CBP over all r coordinates
of z with the preset's sigma0, the ablation."""
DOMAINS = ("commonsense", "medical", "finance")
SEARCHING = ("bbt", "fedbpt", "cbp", "cbp-full")
GENERATED = ("sdt-only", "cbp", "cbp-full")
# SDT per domain when the suite has to train a generator (the sizes results/ was made with).
SDT_STEPS = {"commonsense": 400, "medical": 200, "finance": 150}
SDT_POOL = {"commonsense": 4000, "medical": 4000, "finance": 398}


def preset(domain: str, path: Path | None = None) -> dict:
    """The domain's run-config preset: ``simulations/<domain>.toml``, or the file ``path`` instead."""
    return tomllib.loads((path or ROOT / "simulations" / f"{domain}.toml").read_text())


def generator_of(settings: dict) -> Path:
    """A preset's generator folder (its ``generator``, relative to the repository)."""
    return ROOT / settings["generator"]


def ensure_generator(domain: str, folder: Path) -> None:
    """Train the domain's generator with `cbp-fed sdt` unless the folder already holds one."""
    if (folder / "generator.json").exists():
        return
    command = [
        *(sys.executable, "-m", "cbp_fed.cli", "sdt", "--domain", domain, "--out", str(folder)),
        *("--steps", str(SDT_STEPS[domain]), "--pool-size", str(SDT_POOL[domain]), "--max-tokens", "96"),
    ]
    subprocess.run(command, check=True, cwd=ROOT)


def run_resumable(settings: dict, users: int, flwr_home: Path) -> Path:
    """One `flwr run` with ``settings`` into their results-dir/run-name: a run killed after a round
    resumes from its checkpoint (the users' state under ``user-state-dir``), one killed before starts
    afresh. Returns the run folder; raises unless the run completed."""
    folder = Path(settings["results-dir"]) / settings["run-name"]
    if (folder / "checkpoint.safetensors").exists():
        settings = {**settings, "resume-from": str(folder.resolve())}
    elif folder.exists():
        shutil.rmtree(folder)  # killed before its first round: nothing to keep
    run = flwr_run(users, run_config_string(settings), flwr_home=flwr_home)
    if run.get("status") != "finished:completed" or not (folder / "summary.json").exists():
        raise RuntimeError(f"run {folder.name} ended {run.get('status')}: see {folder}")
    return folder


def run_cell(domain: str, method: str, seed: int, users: int, out: Path, subspace: int = 3, base=None) -> dict:
    """One cell of the suite (a resumable run of the domain's preset, or of the run config ``base``);
    returns its summary."""
    name = f"{domain}-{method}-s{seed}"
    base = base or preset(domain)
    settings = {
        **base,
        "method": method,
        "seed": seed,
        "generator": str(generator_of(base)),
        "results-dir": str(out),
        "run-name": name,
        "user-state-dir": str((out / ".users").resolve()),
        "min-users": users,
    }
    if method in ("zero-shot", "sdt-only"):
        settings["num-rounds"] = 1
    if method == "cbp":
        noise = json.loads((generator_of(base) / "generator.json").read_text())["training"]["z_noise"]
        settings.update({"subspace": subspace, "sigma0": noise})
    if method == "cbp-full":
        settings.update({"method": "cbp", "subspace": 0})
    folder = run_resumable(settings, users, ROOT / ".state" / "flwr-suite")
    summary = json.loads((folder / "summary.json").read_text())
    if summary["final_test_accuracy"] is None:  # every user refused: a preset problem, not a result
        (folder / "summary.json").rename(folder / "summary.failed.json")
        raise RuntimeError(f"cell {name}: no user could be evaluated; the failures are in {folder / 'rounds.jsonl'}")
    return summary


# ----------------------------------------------------------------------------- the table and plots
def load_cells(out: Path) -> list[dict]:
    """One record per finished cell: its summary, per-round accuracy and calls, chance level and config."""
    cells = []
    for summary_path in sorted(out.glob("*-s*/summary.json")):
        folder = summary_path.parent
        config = json.loads((folder / "config.json").read_text())
        summary = upgrade_summary(json.loads(summary_path.read_text()))
        chance = summary.get("chance_test_accuracy") or chance_accuracy([t.strip() for t in config["tasks"].split(",")])
        rounds = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]
        method = method_label(config["method"], config.get("subspace"))
        searches = method in SEARCHING
        per_round_calls = config["steps-per-round"] * config["popsize"] if searches else 0
        first = rounds[0].get("start_test_accuracy")
        start = [(0, first)] if searches and first is not None else []  # the users' z before any call
        cells.append(
            {
                "domain": config["domain"],
                "method": method,
                "seed": config["seed"],
                "task": config["tasks"],
                "accuracy": rounds[-1]["test_accuracy"],
                "start": first,
                "own_best": rounds[-1].get("own_best_test_accuracy"),
                "below_start": rounds[-1].get("end_below_start"),  # users ending below their own start
                "by_user": rounds[-1].get("user_test_accuracy"),  # partition id -> its prompt's accuracy
                "users": rounds[-1].get("users_evaluated", 0),
                "curve": start + [(r["round"] * per_round_calls, r["test_accuracy"]) for r in rounds],
                "calls_per_user": per_round_calls * len(rounds),
                "bytes_up": float(np.mean([r["bytes_up_per_user"] for r in rounds])),
                "bytes_down": float(np.mean([r["bytes_down_per_user"] for r in rounds])),
                "test_examples": rounds[-1].get("test_examples", 0),
                "wall_seconds": summary["seconds_wall_total"],
                "chance": chance,
            }
        )
    return cells


def _mean_std(values: list[float]) -> str:
    values = 100 * np.asarray(values, dtype=float)
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}" if len(values) > 1 else f"{values.mean():.1f}"


def calls_to_reach(cells: list[dict], domain: str, method: str, target: float) -> str:
    """Fewest calls per user at which ``method``'s seed-mean accuracy reaches ``target``, as text."""
    curves = [c["curve"] for c in cells if c["domain"] == domain and c["method"] == method]
    if not curves:
        return "not run"
    points = defaultdict(list)
    for curve in curves:
        for calls, accuracy in curve:
            points[calls].append(accuracy)
    reached = [calls for calls in sorted(points) if np.mean(points[calls]) >= target - 1e-9]  # equal counts
    return str(reached[0]) if reached else f"not within {max(points)}"


def table(cells: list[dict]) -> str:
    """Markdown: accuracy (mean ± std over seeds) per method x domain, calls, bytes; then calls-to-accuracy."""
    groups = defaultdict(list)
    for c in cells:
        groups[(c["method"], c["domain"])].append(c)
    domains = [d for d in DOMAINS if any(c["domain"] == d for c in cells)]
    tasks = {c["domain"]: c["task"] for c in cells}
    head = " | ".join(f"{d} ({tasks[d]}) acc %" for d in domains)
    lines = [
        f"| method | {head} | seeds | calls/user | test texts | train B up/user/round | train B down/user/round |",
        "|---|" + "---|" * (len(domains) + 5),
    ]
    for method in METHODS:
        runs = [c for d in domains for c in groups.get((method, d), [])]
        if not runs:
            continue
        accs = " | ".join(_accuracy_cell(groups[(method, d)]) if groups.get((method, d)) else "-" for d in domains)
        seeds = "/".join(str(len(groups.get((method, d), []))) for d in domains)
        texts = "/".join(
            str(groups[(method, d)][0]["test_examples"]) if (method, d) in groups else "-" for d in domains
        )
        up, down = (
            " / ".join(
                f"{np.mean([c[key] for c in groups[(method, d)]]):,.0f}" if (method, d) in groups else "-"
                for d in domains
            )
            for key in ("bytes_up", "bytes_down")
        )
        lines.append(f"| {method} | {accs} | {seeds} | {runs[0]['calls_per_user']} | {texts} | {up} | {down} |")
    for d in domains:
        own = [c["own_best"] for c in cells if c["domain"] == d and c.get("own_best") is not None]
        if own:
            lines += [
                "",
                f"- {d}: the users' best option of their own (majority, zero-shot, calibrations; each user's best "
                f"on its test rows, in hindsight) {100 * np.mean(own):.1f}%, the bar a prompt has to clear.",
            ]
    for c in cells:
        if c.get("below_start") is not None:
            lines.append(
                f"- {c['domain']} {c['method']} seed {c['seed']}: {len(c['below_start'])} of {c['users']} users end "
                "below their own start on test (what they end on, never-worse choice included, against their "
                "start vector before round 1)."
            )
    lines += _paired_over_users(cells)
    lines += ["", "Calls per user to reach CBP's accuracy at its budget (from the per-round curves):", ""]
    lines += [
        "| domain | CBP | CBP acc % at calls | BBT needs | FedBPT needs | CBP needs for BBT's final |",
        "|---|---|---|---|---|---|",
    ]
    for d in domains:
        for variant in ("cbp", "cbp-full"):
            cbp = groups.get((variant, d))
            if not cbp:
                continue
            target = float(np.mean([c["accuracy"] for c in cbp]))
            budget = cbp[0]["calls_per_user"]
            bbt = groups.get(("bbt", d))
            reverse = calls_to_reach(cells, d, variant, float(np.mean([c["accuracy"] for c in bbt]))) if bbt else "-"
            needs = " | ".join(calls_to_reach(cells, d, m, target) for m in ("bbt", "fedbpt"))
            lines.append(f"| {d} | {variant} | {100 * target:.1f} at {budget} | {needs} | {reverse} |")
    return "\n".join(lines) + "\n"


def _paired_over_users(cells: list[dict]) -> list[str]:
    """CBP minus FedBPT and minus BBT, per domain and seed, paired over the users both cells evaluated (the
    same partitions, each user's accuracy on its own test rows, unweighted): a line per pair with its normal 95%
    interval; none for cells run before users were recorded one by one."""
    lines = []
    mine = {(c["domain"], c["seed"], c["method"]): c["by_user"] for c in cells if c.get("by_user")}
    for (domain, seed, method), ours in sorted(mine.items()):
        if method not in ("cbp", "cbp-full"):
            continue
        gaps = []
        for other in ("fedbpt", "bbt"):
            theirs = mine.get((domain, seed, other))
            users = sorted(set(ours) & set(theirs or {}))
            if len(users) > 1:
                gap = paired(np.array([ours[u] - theirs[u] for u in users]))
                gaps.append(
                    f"{method} - {other} {100 * gap['mean']:+.1f} ± {100 * gap['ci95']:.1f} ({len(users)} users)"
                )
        if gaps:
            lines.append(f"- {domain} seed {seed}, paired over users (points): {'; '.join(gaps)}.")
    return lines


def _accuracy_cell(cells: list[dict]) -> str:
    """Mean ± std over seeds (%), and the users' start (their z before round 1) where it was evaluated."""
    starts = [c["start"] for c in cells if c.get("start") is not None]
    start = f" (start {100 * np.mean(starts):.1f})" if starts else ""
    return _mean_std([c["accuracy"] for c in cells]) + start


def _domain_chance(cells: list[dict], domain: str) -> float | None:
    """The chance accuracy (%) of a domain's cells, None when unknown."""
    levels = [c["chance"] for c in cells if c["domain"] == domain and c.get("chance") is not None]
    return 100 * float(np.mean(levels)) if levels else None


def _colour(method: str) -> str:
    """One colour per method in every figure and panel, whichever methods a panel has."""
    return f"C{METHODS.index(method)}"


def _accuracy_bars(cells: list[dict], domains: list[str], methods: list[str]):
    """Accuracy (%) per domain, a bar per method (mean ± std over seeds), the chance level over each group."""
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    width = 0.8 / max(len(methods), 1)
    for i, method in enumerate(methods):
        accs = [[100 * c["accuracy"] for c in cells if c["method"] == method and c["domain"] == d] for d in domains]
        x = np.arange(len(domains)) + i * width
        means, stds = [np.mean(a) if a else 0 for a in accs], [np.std(a) if a else 0 for a in accs]
        ax.bar(x, means, width, yerr=stds, label=method, color=_colour(method))
    segments = [(j - width / 2, _domain_chance(cells, d)) for j, d in enumerate(domains)]
    segments = [(left, level) for left, level in segments if level is not None]
    if segments:
        left, level = zip(*segments)
        right = [x + width * len(methods) for x in left]
        ax.hlines(level, left, right, colors="black", linestyles="--", label="chance (1 / answers)")
    ax.set_xticks(np.arange(len(domains)) + width * (len(methods) - 1) / 2, domains)
    ax.set(ylabel="test accuracy (%)", title="Accuracy per method (mean ± std over seeds)")
    legend_below(fig, [ax])
    return fig


def _accuracy_curves(cells: list[dict], domains: list[str], methods: list[str]):
    """Accuracy (%) vs calls per user from the users' start (0 calls), a panel per domain, ticks at the calls
    measured; the evaluation-only methods, the users' best own option and the chance level as horizontal lines."""
    width = max(6.5, 4.5 * len(domains))  # one panel still has room for the legend's line below it
    fig, axes = plt.subplots(1, len(domains), figsize=(width, 4.2), squeeze=False, layout="constrained")
    for ax, d in zip(axes[0], domains):
        ticks = set()
        for method in methods:
            runs = [c["curve"] for c in cells if c["method"] == method and c["domain"] == d]
            if not runs:
                continue
            if method in ("zero-shot", "sdt-only"):
                style = {"zero-shot": ":", "sdt-only": "--"}[method]
                ax.axhline(100 * np.mean([r[-1][1] for r in runs]), linestyle=style, color="grey", label=method)
                continue
            calls = [p[0] for p in runs[0]]
            ticks.update(calls)
            acc = 100 * np.array([[p[1] for p in r] for r in runs if len(r) == len(calls)])
            ax.errorbar(calls, acc.mean(0), yerr=acc.std(0), marker="o", capsize=3, label=method, color=_colour(method))
        own = [c["own_best"] for c in cells if c["domain"] == d and c.get("own_best") is not None]
        if own:
            ax.axhline(100 * np.mean(own), color="grey", linestyle="-.", label="users' best own option (hindsight)")
        chance = _domain_chance(cells, d)
        if chance is not None:
            ax.axhline(chance, color="black", linestyle="--", linewidth=1.2, label="chance (1 / answers)")
        if ticks:
            ax.set_xticks(sorted(ticks))  # the call counts measured, not the locator's round numbers
        ax.set(title=d, xlabel="calls per user", ylabel="test accuracy (%)")
    legend_below(fig, axes[0])
    return fig


def _bytes_bars(cells: list[dict], methods: list[str]):
    """Train bytes per user per round, up and down, per searching method (log scale)."""
    fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
    searching = [m for m in methods if m in SEARCHING]
    for i, key in enumerate(("bytes_up", "bytes_down")):
        values = [np.mean([c[key] for c in cells if c["method"] == m]) for m in searching]
        ax.bar(np.arange(len(searching)) + 0.4 * i, values, 0.4, label=key.replace("bytes_", ""))
    ax.set_xticks(np.arange(len(searching)) + 0.2, searching)
    ax.set(ylabel="bytes per user per round", yscale="log", title="Communication per user per round")
    legend_below(fig, [ax])
    return fig


def plot(cells: list[dict], out: Path) -> dict:
    """accuracy.png (bars per domain), accuracy_vs_calls.png (curves), bytes.png (per method); every
    accuracy in %, with the domain's chance level (1 / answers) dashed. Returns the figures by file stem."""
    domains = [d for d in DOMAINS if any(c["domain"] == d for c in cells)]
    methods = [m for m in METHODS if any(c["method"] == m for c in cells)]
    figures = {
        "accuracy": _accuracy_bars(cells, domains, methods),
        "accuracy_vs_calls": _accuracy_curves(cells, domains, methods),
        "bytes": _bytes_bars(cells, methods),
    }
    for name, figure in figures.items():
        figure.savefig(out / f"{name}.png", dpi=120)
        plt.close(figure)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=DOMAINS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--subspace", type=int, default=3, help="cbp: coordinates each user searches (K)")
    parser.add_argument(
        "--preset", type=Path, help="a run-config file instead of simulations/<domain>.toml (one domain)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "suite")
    parser.add_argument("--table-only", action="store_true", help="rebuild table.md and plots from finished cells")
    args = parser.parse_args()
    if args.preset and len(args.domains) != 1:
        parser.error(f"--preset replaces one domain's preset: name that domain alone, not {args.domains}")
    args.out.mkdir(parents=True, exist_ok=True)
    presets = {domain: preset(domain, args.preset) for domain in args.domains}
    if not args.table_only:
        for domain in args.domains:
            if set(GENERATED) & set(args.methods):
                ensure_generator(domain, generator_of(presets[domain]))
        for seed in args.seeds:
            for domain in args.domains:
                for method in args.methods:
                    if (args.out / f"{domain}-{method}-s{seed}" / "summary.json").exists():
                        continue
                    summary = run_cell(domain, method, seed, args.users, args.out, args.subspace, presets[domain])
                    print(f"{domain}-{method}-s{seed}: {summary['final_test_accuracy']}", flush=True)
    cells = load_cells(args.out)
    if not cells:
        print("no finished cells yet")
        return 1
    (args.out / "table.md").write_text(table(cells))
    plot(cells, args.out)
    print((args.out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
