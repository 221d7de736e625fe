"""The table that decides whether CBP helps: every method on each domain's two user tasks, by budget.

    python -m simulations.effectiveness [--domains commonsense medical finance] [--seeds 0 1 2]
        [--budgets 50 100 200 400] [--out results/effectiveness]

Per domain and backbone the provider's generator is trained once (``generator_folder``: SDT on the
domain's pool, which shares no task with its user tasks). Then for each (user task, method, seed) one user runs
``cbp-fed customize`` in this process: zero-shot (and its calibrated score), SDT-only, BBT and CBP, which
searches the ``--subspace`` leading directions of the generator's SDT task vectors (``--methods`` adds the
user's other own options, ICL, and ``cbp-full``, CBP over all r coordinates of z, the ablation),
the searching methods evaluated at every budget of one run (``checkpoints``), with the never-worse
protocol (natural-prior splits, mini-batches, the kept z chosen on dev). BBT's r and sigma0 are its
defaults (500, 1), or with ``--bbt-settings`` what ``simulations.bbt_settings`` chose on the domain's SDT
tasks. Runs are resumable: a run whose ``summary.json`` exists under ``<out>/runs/<backbone>/`` is read
back, not rerun.

Writes, from every finished run under ``<out>/runs`` (this invocation's and earlier ones),
``<out>/table.json`` (one row per domain, task, backbone, method, calls, seed: test_accuracy, n_test,
majority, start_accuracy, ci95, ``correct``, which test rows it got right, and ``ceiling``, the z-alone
ceiling from ``--headroom``), ``<out>/table.md`` (per backbone: means over seeds with pooled 95% intervals,
the goal checks, CBP minus each baseline paired over the same test rows) and ``<out>/accuracy_vs_calls.png``
(a panel per task and backbone).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from cbp_fed.backbone import FrozenLM  # noqa: E402
from cbp_fed.customize import OWN, CustomizeConfig, customize  # noqa: E402
from cbp_fed.domain_training import SDTConfig, save_generator, train_generator  # noqa: E402
from cbp_fed.results import legend_below, method_label  # noqa: E402
from cbp_fed.stats import paired_bits, wilson  # noqa: E402
from cbp_fed.tasks import DOMAINS, domain_capacity  # noqa: E402

METHODS = ("zero-shot", "sdt-only", "bbt", "cbp")
CHOICES = (*OWN, "icl", "sdt-only", "bbt", "cbp", "cbp-full")
"""What ``--methods`` may name: the user's own options, in-context demonstrations, and the prompts;
``cbp`` searches ``--subspace`` coordinates along the SDT task vectors, ``cbp-full`` all r of z."""
GENERATED = ("sdt-only", "cbp", "cbp-full")
"""The methods that query the provider's generator."""
ROW_METHODS = (
    "majority",
    "zero-shot",
    "zero-shot-calibrated",
    "calibrated",
    "calibrated-fit",
    "icl",
    *(
        f"{prompt}{suffix}"
        for prompt in ("sdt-only", "bbt", "cbp", "cbp-full")
        for suffix in ("", "+fit", "-protected")
    ),
)
"""A ``<method>+fit`` row is that method's prompt with one offset per answer fitted on the user's train rows
(as ``calibrated-fit`` fits them to the prompt-free scores), one of the options the protected choice weighs.
A ``<method>-protected`` row is what that method's user ends on (``protected``: its prompt, or an option of
its own, named in ``kept``). Both sit beside the method's own row, never in its place."""


def method_name(summary: dict) -> str:
    """A run's method in the table: a CBP run is ``cbp`` when it searched the SDT subspace, ``cbp-full``
    when it searched all r coordinates of z."""
    return method_label(summary["method"], summary.get("config", {}).get("subspace"))


def rows_of(summary: dict) -> list[dict]:
    """A run's rows of the table: one per evaluated budget (searching methods) or one at 0 calls, each
    followed by its ``<method>+fit`` and ``<method>-protected`` rows when the run made a protected choice there."""
    base = {
        "domain": summary["domain"],
        "task": summary["task"],
        "backbone": summary["backbone"],
        "seed": summary["seed"],
        "n_test": summary["test_size"],
        "majority": summary["majority_rate"],
        "start_accuracy": summary["start_test_accuracy"],
        "generator": summary.get("config", {}).get("generator"),
    }
    popsize = summary.get("config", {}).get("popsize", 1)
    if summary["curve"]:  # a checkpoint fires after the first whole population that reaches it
        points = [
            (p["calls"], p.get("calls_used", math.ceil(p["calls"] / popsize) * popsize), p["test_accuracy"])
            + (p.get("test_correct"), p["kept"], p.get("protected"))
            for p in summary["curve"]
        ]
    else:
        points = [(0, 0, summary["test_accuracy"], summary.get("test_correct"), None, summary.get("protected"))]
    name = method_name(summary)
    rows = []
    for calls, used, accuracy, correct, kept, protected in points:
        at = {**base, "calls": calls, "calls_used": used}
        rows.append({**at, "method": name, "test_accuracy": accuracy, "kept": kept, "correct": correct})
        if protected:
            record = protected.get("protection", {})
            fitted = record.get("test_accuracy", {}).get("prompt+fit")
            if fitted is not None:
                fit_correct = record.get("test_correct", {}).get("prompt+fit")  # runs before it was recorded: none
                rows.append(
                    {**at, "method": f"{name}+fit", "test_accuracy": fitted, "kept": None, "correct": fit_correct}
                )
            final = {"method": f"{name}-protected", "test_accuracy": protected["test_accuracy"]}
            rows.append({**at, **final, "kept": protected["option"], "correct": protected.get("test_correct")})
    if summary["method"] == "zero-shot" and "test_accuracy_calibrated" in summary:
        calibrated = summary["test_accuracy_calibrated"]
        calibrated_row = {"method": "zero-shot-calibrated", "test_accuracy": calibrated, "kept": None}
        rows.append({**base, "calls": 0, "calls_used": 0, **calibrated_row})
    for row in rows:
        row["ci95"] = list(wilson(row["test_accuracy"] * row["n_test"], row["n_test"]))
    return rows


def ensure_generator(lm: FrozenLM, domain: str, folder: Path, args) -> None:
    if (folder / "generator.json").exists():
        return
    pool_size = min(args.sdt_pool, domain_capacity(domain) - args.sdt_eval)  # a small domain gives all it has
    if pool_size < args.sdt_pool:
        print(f"SDT {domain}: the domain has {pool_size} items beside {args.sdt_eval} held out; training on all")
    config = SDTConfig(
        domain=domain,
        steps=args.sdt_steps,
        batch_size=args.sdt_batch,
        max_tokens=args.max_tokens,
        pool_size=pool_size,
        eval_size=args.sdt_eval,
        lr=args.sdt_lr,
    )
    gen, meta = train_generator(lm, config)
    save_generator(gen, meta, folder)
    evidence = meta["task_vectors"]
    print(
        f"SDT {domain}: own z beats z0 on {evidence['own_beats_z0']} SDT tasks, paired gain "
        f"{evidence['paired_gain']}; sigma 1 step moves the prompt {meta['steering']}",
        flush=True,
    )


def bbt_settings(folder: str, backbone: str, domain: str) -> dict:
    """BBT's ``bbt_r`` and ``sigma0`` for a domain, as ``simulations.bbt_settings`` chose them on its SDT tasks."""
    path = Path(folder) / f"{backbone}-{domain}.json"
    if not path.exists():
        raise SystemExit(
            f"no BBT settings for {domain} on {backbone} ({path}): run "
            f"python -m simulations.bbt_settings --domain {domain} --backbone {backbone} --out {folder}"
        )
    chosen = json.loads(path.read_text())["chosen"]
    return {"bbt_r": chosen["r"], "sigma0": chosen["sigma0"]}


def generator_folder(out: Path, domain: str, backbone: str) -> Path:
    """Where the provider's generator for ``domain`` on ``backbone`` lives: ``<out>/gen-<domain>`` for the
    default backbone (the path its committed runs record), ``<out>/gen-<domain>-<backbone>`` for another."""
    default = CustomizeConfig.__dataclass_fields__["backbone"].default
    return out / (f"gen-{domain}" if backbone == default else f"gen-{domain}-{backbone}")


def run_folder(out: Path, backbone: str, domain: str, task: str, method: str, seed: int) -> Path:
    return out / "runs" / backbone / domain / f"{task}-{method}-s{seed}"


def run_all(args) -> None:
    """Train what is missing and run what is missing; each run leaves its ``summary.json`` under
    ``<out>/runs/<backbone>/<domain>/<task>-<method>-s<seed>``."""
    out = Path(args.out)
    lm = FrozenLM.load(args.backbone, args.dtype, args.device)
    for domain in args.domains:
        generator = generator_folder(out, domain, lm.name)
        if set(GENERATED) & set(args.methods):
            ensure_generator(lm, domain, generator, args)
        bbt = bbt_settings(args.bbt_settings, lm.name, domain) if args.bbt_settings else {}
        for seed in args.seeds:
            for task in args.tasks or DOMAINS[domain].user_tasks:
                for method in args.methods:
                    path = run_folder(out, lm.name, domain, task, method, seed) / "summary.json"
                    if not path.exists():
                        config = CustomizeConfig(
                            task=task,
                            method="cbp" if method == "cbp-full" else method,
                            subspace=args.subspace if method == "cbp" else 0,
                            seed=seed,
                            budget=max(args.budgets),
                            popsize=args.popsize,
                            generator=str(generator) if method in GENERATED else None,
                            shots_per_class=args.shots,
                            n_test=args.n_test,
                            max_tokens=args.max_tokens,
                            batch_size=args.batch_size,
                            checkpoints=tuple(args.budgets),
                            backbone=args.backbone,
                            dtype=args.dtype,
                            device=args.device,
                            **(bbt if method == "bbt" else {}),
                        )
                        summary = customize(config, lm)
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_text(json.dumps(summary, indent=2) + "\n")
                        print(
                            f"{domain}/{path.parent.name}: test {summary['test_accuracy']:.3f} "
                            f"(start {summary['start_test_accuracy']:.3f}) in {summary['wall_seconds']:.0f} s",
                            flush=True,
                        )
                    check_read_back(json.loads(path.read_text()), method, args, bbt, path)


def check_read_back(summary: dict, method: str, args, bbt: dict, path: Path) -> None:
    """Refuse a finished run that is not the run asked for: another method or CBP variant, another
    subspace, fewer budgets evaluated, or BBT settings other than the chosen ones (``bbt``)."""
    problems = []
    if method_name(summary) != method:
        problems.append(f"holds a {method_name(summary)} run, not {method}")
    elif method == "cbp" and summary["config"]["subspace"] != args.subspace:
        problems.append(f"searched {summary['config']['subspace']} coordinates, not --subspace {args.subspace}")
    evaluated = [p["calls"] for p in summary["curve"]]
    if summary["curve"] and set(args.budgets) - set(evaluated):
        problems.append(f"was evaluated at {evaluated} calls, not at {sorted(set(args.budgets) - set(evaluated))}")
    if method == "bbt" and bbt and (summary["bbt_r"], summary["sigma0"]) != (bbt["bbt_r"], bbt["sigma0"]):
        problems.append(f"ran BBT with r {summary['bbt_r']}, sigma0 {summary['sigma0']}, not the chosen {bbt}")
    if problems:
        raise SystemExit(f"{path} {'; '.join(problems)}: move it aside to rerun it, or give another --out")


def markdown(rows: list[dict]) -> str:
    """Means over seeds per (task, method, calls), pooled 95% interval, start, majority, worst drop; a budget
    that is not a whole number of populations says the calls its checkpoint used ("25 (30 used)")."""
    groups = defaultdict(list)
    for row in rows:
        groups[(row["domain"], row["task"], row["method"], row["calls"])].append(row)
    order = {m: i for i, m in enumerate(ROW_METHODS)}
    lines = [
        "| domain | task | method | calls | seeds | test acc % | 95% CI (pooled) | start % | worst vs start (pts) "
        "| majority % | test n |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (domain, task, method, calls), runs in sorted(
        groups.items(), key=lambda i: (*i[0][:2], order[i[0][2]], i[0][3])
    ):
        n = sum(r["n_test"] for r in runs)
        correct = sum(r["test_accuracy"] * r["n_test"] for r in runs)
        low, high = wilson(correct, n)
        worst = min(100 * (r["test_accuracy"] - r["start_accuracy"]) for r in runs)
        used = max(r.get("calls_used", calls) for r in runs)
        budget = f"{calls} ({used} used)" if used != calls else str(calls)
        lines.append(
            f"| {domain} | {task} | {method} | {budget} | {len(runs)} | {100 * correct / n:.1f} | "
            f"{100 * low:.1f}-{100 * high:.1f} | {100 * np.mean([r['start_accuracy'] for r in runs]):.1f} | "
            f"{worst:+.1f} | {100 * np.mean([r['majority'] for r in runs]):.1f} | {runs[0]['n_test']} |"
        )
    return "\n".join(lines) + "\n"


def cbp_variant(rows: list[dict]) -> str:
    """The CBP the summary tables judge: ``cbp`` (the subspace search) where it ran, else ``cbp-full``."""
    return "cbp" if any(r["method"] == "cbp" for r in rows) else "cbp-full"


def _seed_means(rows: list[dict], task: str, cbp: str = "cbp") -> tuple[int, dict]:
    """Mean test accuracy by (method, calls) over the seeds every compared method ran for ``task``,
    and how many seeds that is (so no method is averaged over seeds another lacks); a budget that not all
    of those seeds evaluated has no mean."""
    compared = ("zero-shot", "sdt-only", "bbt", cbp)
    mine = [r for r in rows if r["task"] == task]
    seeds = set.intersection(*({r["seed"] for r in mine if r["method"] == m} for m in compared))
    values = defaultdict(list)
    for row in mine:
        if row["seed"] in seeds:
            values[(row["method"], row["calls"])].append(row["test_accuracy"])
    return len(seeds), {key: float(np.mean(v)) for key, v in values.items() if len(v) == len(seeds)}


def _majority(rows: list[dict]) -> float:
    """The majority-class rate of a task's test rows, averaged over its seeds (each seed once)."""
    return float(np.mean(list({r["seed"]: r["majority"] for r in rows}.values())))


def _percent(means: dict, method: str, calls: int = 0) -> str:
    return "-" if (method, calls) not in means else f"{100 * means[(method, calls)]:.1f}"


def compact(rows: list[dict], cbp: str = "cbp") -> str:
    """One line per task: every method's seed mean (%) over the seeds all methods ran, the searches at
    each budget ("50 / 100 / 200"), beside the majority class and the test size."""
    lines = [
        "| domain | task | seeds | test n | majority | zero-shot | calibrated | SDT-only | budgets | BBT | CBP |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for domain, task in sorted({(r["domain"], r["task"]) for r in rows}):
        seeds, at = _seed_means(rows, task, cbp)
        if not seeds:
            continue
        budgets = sorted({c for m, c in at if m == cbp})
        mine = [r for r in rows if r["task"] == task]
        cell = partial(_percent, at)
        lines.append(
            f"| {domain} | {task} | {seeds} | {mine[0]['n_test']} | {100 * _majority(mine):.1f} "
            f"| {cell('zero-shot')} | {cell('zero-shot-calibrated')} | {cell('sdt-only')} "
            f"| {' / '.join(map(str, budgets))} | {' / '.join(cell('bbt', b) for b in budgets)} "
            f"| {' / '.join(cell(cbp, b) for b in budgets)} |"
        )
    return "\n".join(lines) + "\n"


def goal_checks(rows: list[dict], cbp: str = "cbp") -> str:
    """The issue's goal, checked on seed means per task: CBP above zero-shot, SDT-only and BBT at the
    largest budget both searches ran (goal: >= 4 of 6 tasks); CBP at 100 calls >= BBT at 400 (or BBT's
    largest budget when 400 was not run, marked; goal: >= 3); and never worse: searching runs whose final
    test accuracy is below their start by more than the start's binomial noise (1.96 standard errors)."""
    lines = [
        "| domain | task | seeds | zero-shot | SDT-only | budget | BBT | CBP | CBP above all three | CBP@100 "
        "| BBT@400 | CBP@100 >= BBT@400 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    above = fast = judged = 0
    for domain, task in sorted({(r["domain"], r["task"]) for r in rows}):
        seeds, at = _seed_means(rows, task, cbp)
        budgets = sorted({c for m, c in at if m == cbp} & {c for m, c in at if m == "bbt"})
        if not seeds or not budgets:
            continue
        judged += 1
        budget, late = budgets[-1], 400 if ("bbt", 400) in at else budgets[-1]
        zero, sdt, bbt, ours = at[("zero-shot", 0)], at[("sdt-only", 0)], at[("bbt", budget)], at[(cbp, budget)]
        quick = at.get((cbp, 100))
        wins, quick_ok = ours > max(zero, sdt, bbt), quick is not None and quick >= at[("bbt", late)]
        above, fast = above + wins, fast + quick_ok
        lines.append(
            f"| {domain} | {task} | {seeds} | {100 * zero:.1f} | {100 * sdt:.1f} | {budget} | {100 * bbt:.1f} | "
            f"{100 * ours:.1f} | {'yes' if wins else 'no'} | {'-' if quick is None else f'{100 * quick:.1f}'} | "
            f"{100 * at[('bbt', late)]:.1f}{'' if late == 400 else f' (at {late}: 400 not run)'} | "
            f"{'yes' if quick_ok else 'no'} |"
        )
    finals = {}
    for row in rows:
        if row["method"] in ("bbt", "cbp", "cbp-full"):
            key = (row["task"], row["method"], row["seed"])
            if key not in finals or row["calls"] > finals[key]["calls"]:
                finals[key] = row
    worse = [
        f"{task} {method} seed {seed}"
        for (task, method, seed), r in sorted(finals.items())
        if r["test_accuracy"]
        < r["start_accuracy"] - 1.96 * math.sqrt(r["start_accuracy"] * (1 - r["start_accuracy"]) / r["n_test"])
    ]
    worst = min((r["test_accuracy"] - r["start_accuracy"] for r in finals.values()), default=0.0)
    lines += [
        "",
        f"- CBP above zero-shot, SDT-only and BBT at equal calls: {above} of {judged} tasks (goal: >= 4 of 6).",
        f"- CBP at 100 calls >= BBT at 400: {fast} of {judged} tasks (goal: >= 3 of 6).",
        f"- Never worse: {len(worse)} of {len(finals)} searching runs end below their start by more than the "
        f"start's noise{': ' + ', '.join(worse) if worse else ''}; the worst change is {100 * worst:+.1f} points.",
    ]
    return "\n".join(lines) + "\n"


BASELINES = ("majority", "zero-shot", "calibrated", "calibrated-fit", "icl", "sdt-only", "bbt")
"""What CBP is paired against: every option a user has without the provider's search, and BBT."""


def gap_over_seeds(bits: dict[tuple, str], ours: tuple, theirs: tuple) -> tuple[dict, int]:
    """``ours - theirs`` paired over the test rows of every seed both recorded (``bits`` keyed by a cell's key
    plus its seed, e.g. ``(task, method, calls, seed)``): ``(stats.paired_bits result, seeds)``."""
    seeds = sorted(k[-1] for k in bits if k[:-1] == ours and (*theirs, k[-1]) in bits)
    if not seeds:
        return {}, 0
    return paired_bits("".join(bits[(*ours, s)] for s in seeds), "".join(bits[(*theirs, s)] for s in seeds)), len(seeds)


def paired_gaps(rows: list[dict]) -> str:
    """CBP minus each baseline, row by row on the same test rows (a seed fixes a user's test rows), pooled
    over the seeds both ran: per task, CBP variant and budget, each difference's mean and 95% interval in
    points (``stats.paired_bits``); BBT at the same budget, the others at 0 calls. A fitted CBP prompt (``+fit``)
    meets BBT's fitted prompt. ``above all`` when every baseline was run and every interval lies above 0, ``-``
    when no baseline recorded its rows."""
    bits = {(r["task"], r["method"], r["calls"], r["seed"]): r["correct"] for r in rows if r.get("correct")}
    lines = [
        f"| task | method | calls | {' | '.join(BASELINES)} | above all |",
        "|---|---|---|" + "---|" * (len(BASELINES) + 1),
    ]
    searches = ("cbp", "cbp-full", "cbp+fit", "cbp-full+fit")
    if not any(k[1] in searches for k in bits):
        return "No CBP run here recorded which test rows it answered right, so nothing can be paired.\n"
    for task, method, calls in sorted({k[:3] for k in bits if k[1] in searches}):
        cells, above = [], True
        for baseline in BASELINES:
            at = calls if baseline == "bbt" else 0
            baseline = "bbt+fit" if baseline == "bbt" and method.endswith("+fit") else baseline
            gap, seeds = gap_over_seeds(bits, (task, method, calls), (task, baseline, at))
            if not seeds:
                cells.append("-")
                above = False
                continue
            cells.append(f"{100 * gap['mean']:+.1f} ± {100 * gap['ci95']:.1f} ({seeds})")
            above = above and gap["mean"] - gap["ci95"] > 0
        verdict = "-" if set(cells) == {"-"} else "yes" if above else "no"  # "-": nothing to pair with
        lines.append(f"| {task} | {method} | {calls} | {' | '.join(cells)} | {verdict} |")
    return "\n".join(lines) + "\n"


def _folder(path) -> str:
    return str(Path(path).resolve())


def z_ceilings(ceilings: list[dict]) -> dict[tuple[str, str], dict]:
    """The headroom map's ``ceiling-z`` rows by (task, generator folder once links are resolved)."""
    return {(c["task"], _folder(c["generator"])): c for c in ceilings if c["method"] == "ceiling-z"}


def add_ceilings(rows: list[dict], ceilings: list[dict]) -> None:
    """Set each row's ``ceiling``: the test accuracy of the z-alone ceiling of its task through the generator
    its CBP runs on the same backbone searched (the same folder), None where the map has none. Every row of a
    task gets it, so a baseline's row says how far a prompt through the provider's generator could have gone."""
    by_task = defaultdict(set)
    for row in rows:
        if row.get("generator") and row["method"].startswith("cbp"):
            by_task[(row["task"], row["backbone"])].add(_folder(row["generator"]))
    found = z_ceilings(ceilings)
    for row in rows:
        generators = sorted(by_task[(row["task"], row["backbone"])])
        hits = [found[(row["task"], g)] for g in generators if (row["task"], g) in found]
        row["ceiling"] = hits[0]["test_accuracy"] if len(hits) == 1 else None


def ceiling_shares(rows: list[dict], ceilings: list[dict]) -> str:
    """How much of the z-alone ceiling's gain each CBP search recovered: per task, method and budget, the
    seed mean of (test accuracy - start) over the ceiling's (ceiling-z - its start, z0 through the same
    generator; ``simulations.headroom --ceilings z``). A run is compared only with a ceiling through its own
    generator (the same folder once links are resolved). The ceiling is measured on its own test rows (those
    of seed 0 with 16 train rows per answer), so a share is a ratio of two gains, each with its own noise."""
    lines = [
        "| task | method | calls | seeds | search gain (pts) | z-ceiling gain (pts) | share |",
        "|---|---|---|---|---|---|---|",
    ]
    by_run = z_ceilings(ceilings)
    groups = defaultdict(list)
    for row in rows:
        key = (row["task"], _folder(row["generator"])) if row.get("generator") else None
        if row["method"] in ("cbp", "cbp-full") and key in by_run:
            groups[(*key, row["method"], row["calls"])].append(row["test_accuracy"] - row["start_accuracy"])
    for (task, generator, method, calls), gains in sorted(groups.items()):
        ceiling = by_run[(task, generator)]["test_accuracy"] - by_run[(task, generator)]["start_test_accuracy"]
        gain = float(np.mean(gains))
        share = f"{gain / ceiling:.2f}" if ceiling > 0 else "- (the ceiling did not gain)"
        lines.append(
            f"| {task} | {method} | {calls} | {len(gains)} | {100 * gain:+.1f} | {100 * ceiling:+.1f} | {share} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path):
    """Test accuracy (%) vs calls per task and backbone for each search (mean over seeds, min-max band) with
    the zero-shot, calibrated-fit (where it was run), SDT-only and majority lines, two panels per row; the x
    axis is logarithmic with a tick at each budget measured, and one legend sits below the panels. Returns
    the figure."""
    tasks = sorted({(r["domain"], r["task"], r["backbone"]) for r in rows})
    cols = min(len(tasks), 2)  # a domain's two tasks side by side, one domain per row
    rows_of_panels = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(
        rows_of_panels, cols, figsize=(4.8 * cols, 3.6 * rows_of_panels), squeeze=False, layout="constrained"
    )
    axes = axes.ravel()
    for ax in axes[len(tasks) :]:
        ax.set_visible(False)
    for ax, (domain, task, backbone) in zip(axes, tasks):
        mine = [r for r in rows if r["task"] == task and r["backbone"] == backbone]
        searches = (("bbt", "tab:blue"), ("cbp", "tab:red"), ("cbp-full", "tab:purple"))
        budgets = sorted({r["calls"] for r in mine if r["method"] in dict(searches)})
        for method, colour in searches:
            by_calls = defaultdict(list)
            for r in mine:
                if r["method"] == method:
                    by_calls[r["calls"]].append(100 * r["test_accuracy"])
            if by_calls:
                calls = sorted(by_calls)
                mean = [np.mean(by_calls[c]) for c in calls]
                ax.plot(calls, mean, marker="o", color=colour, label=method.upper())
                ax.fill_between(
                    calls,
                    [min(by_calls[c]) for c in calls],
                    [max(by_calls[c]) for c in calls],
                    color=colour,
                    alpha=0.15,
                )
        for method, style in (("zero-shot", ":"), ("calibrated-fit", "-."), ("sdt-only", "--")):
            values = [100 * r["test_accuracy"] for r in mine if r["method"] == method]
            if values:
                ax.axhline(np.mean(values), linestyle=style, color="grey", label=method)
        ax.axhline(100 * _majority(mine), color="black", linewidth=0.8, label="majority class")
        ax.set(
            title=f"{task} ({domain}, {backbone})",
            xlabel="model calls per user",
            ylabel="test accuracy (%)",
            xscale="log",
        )
        if budgets:  # log ticks fall on powers of ten: name every budget measured instead
            ax.set_xticks(budgets, [str(b) for b in budgets])
            ax.minorticks_off()
    legend_below(fig, axes[: len(tasks)])
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def report(rows: list[dict], backbone: str, ceilings: list[dict]) -> str:
    """``table.md``'s section for one backbone: its rows summarised, judged, paired and listed."""
    rows = [r for r in rows if r["backbone"] == backbone]
    cbp = cbp_variant(rows)
    section = (
        f"# {backbone}\n\n## Per task (test accuracy %, means over seeds)\n\n"
        + compact(rows, cbp)
        + "\n## Goal checks (means over seeds)\n\n"
        + goal_checks(rows, cbp)
        + "\n## CBP minus each baseline, paired over test rows and pooled over seeds (pts, 95% interval, seeds)\n\n"
        + paired_gaps(rows)
        + "\n## Every cell\n\n"
        + markdown(rows)
    )
    if ceilings:
        section += "\n## Share of the z-alone ceiling's gain recovered\n\n" + ceiling_shares(rows, ceilings)
    return section + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/effectiveness")
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=list(DOMAINS))
    parser.add_argument("--tasks", nargs="+", default=None, help="user tasks (default: each domain's two)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=CHOICES)
    parser.add_argument(
        "--subspace", type=int, default=3, help="cbp: coordinates searched (K, at most the generator's SDT tasks)"
    )
    parser.add_argument(
        "--bbt-settings", help="folder of simulations.bbt_settings choices: BBT's r and sigma0 per domain"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--popsize", type=int, default=10)
    parser.add_argument("--shots", type=int, default=8, help="train rows = shots x options (natural prior)")
    parser.add_argument("--batch-size", type=int, default=8, help="train texts per call")
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--sdt-steps", type=int, default=300)
    parser.add_argument("--sdt-batch", type=int, default=8)
    parser.add_argument("--sdt-lr", type=float, default=SDTConfig.lr)
    parser.add_argument("--sdt-pool", type=int, default=3000, help="SDT items (at most what the domain has)")
    parser.add_argument("--sdt-eval", type=int, default=400)
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--table-only", action="store_true", help="rebuild the table from the run folders")
    parser.add_argument(
        "--headroom", help="headroom.json with ceiling-z rows: adds the share of its gain each search recovered"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if "cbp" in args.methods and args.subspace < 1:
        parser.error("cbp searches --subspace K >= 1 coordinates; cbp-full is CBP over all r")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if not args.table_only:
        run_all(args)
    # every finished run, not only this invocation's: runs of other seeds or methods may share the folder
    summaries = [json.loads(p.read_text()) for p in sorted(out.glob("runs/**/summary.json"))]
    if not summaries:
        raise SystemExit(f"no runs under {out / 'runs'}: nothing to tabulate")
    rows = [row for s in summaries for row in rows_of(s)]
    ceilings = json.loads(Path(args.headroom).read_text()) if args.headroom else []
    add_ceilings(rows, ceilings)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "table.md").write_text(
        "".join(report(rows, backbone, ceilings) for backbone in sorted({r["backbone"] for r in rows}))
    )
    plot(rows, out / "accuracy_vs_calls.png")
    print((out / "table.md").read_text())


if __name__ == "__main__":
    main()
