"""The headroom map: per task, what a user can do without CBP, and how far a prompt trained with full access goes.

    python -m simulations.headroom --backbone smollm2-135m                    # the baselines, every task
    python -m simulations.headroom --tasks sst2 --ceilings generator z bbt --generator results/effectiveness/gen-medical

A black-box search cannot beat what gradient descent with full access finds in the same space, and a user
does not need a provider to beat a wrong answer prior. So for each (backbone, task), on the same test rows
(``user_split(task, seed, shots, n_test)``, the rows ``cbp-fed customize`` tests on with those settings):

- the baselines a user would pick instead of CBP, all through ``cbp-fed customize``: ``majority`` (of its
  train rows), ``zero-shot``, ``calibrated`` (content-free inputs in the task's template, Zhao et al. 2021),
  ``calibrated-fit`` (one offset per answer fitted on its train rows), ``icl`` (its train rows as
  demonstrations, as many as fit ``--icl-max-tokens``), and ``instruction`` (the untrained generator's
  prompt: BBT's instruction initialisation, where SDT starts);
- with ``--ceilings generator z bbt`` (``cbp_fed.ceilings``): a prompt trained by back-propagation on the
  task's user-side rows outside the test rows, early-stopped on a dev slice of them, the best of ``--lrs``
  on dev: the whole generator (``ceiling-generator``), z alone through ``--generator`` (``ceiling-z``: what a
  CBP user's search can reach at most), z through BBT's projection (``ceiling-bbt``). A task with few
  user-side rows takes ``--cross-fit k``: k fits, each also trained on the test rows outside its part and
  scored on its part, so every test row is scored by a prompt that never saw it.

Each row has its Wilson 95% interval and ``vs_best_baseline``: the paired difference, row by row, against the
best of majority, zero-shot, calibrated and calibrated-fit on the same rows. Each (backbone, task) is written
as it finishes to ``<out>/parts/<backbone>/<task>.json`` (the map is built in parts: a task already there is
skipped, or gets only the ceilings it lacks or has from another ``--cross-fit``, which it replaces), every part
is merged into ``<out>/headroom.json``, and ``<out>/headroom.md`` and ``headroom.png`` are drawn from it.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from functools import partial
from pathlib import Path

import torch

from cbp_fed.backbone import FrozenLM
from cbp_fed.ceilings import SPACES, CeilingConfig, evaluate, prompt_space, train_ceiling
from cbp_fed.customize import OWN, CustomizeConfig, as_bits, customize
from cbp_fed.domain_training import _correct, load_generator
from cbp_fed.prompts import PromptGenerator, instruction_embedding
from cbp_fed.stats import paired_bits, wilson
from cbp_fed.tasks import load_task, server_user_partition, task_names, user_split

BEST_OF = OWN
"""The baselines the best baseline is chosen from (the ones a user needs no demonstrations or prompt for)."""


def paired(a: str, b: str) -> dict:
    """Mean of the per-row difference ``a - b`` of two 0/1 strings, with a 95% normal interval."""
    return {key: round(value, 4) for key, value in paired_bits(a, b).items()}


def row(method: str, correct: str, **extra) -> dict:
    n, hits = len(correct), correct.count("1")
    return {
        "method": method,
        "test_accuracy": hits / n,
        "n_test": n,
        "ci95": wilson(hits, n),
        "correct": correct,
        **extra,
    }


def baselines(lm: FrozenLM, task_name: str, args) -> list[dict]:
    """The rows a user gets without CBP, all on the same test rows."""
    common = dict(task=task_name, seed=args.seed, shots_per_class=args.shots, n_test=args.n_test, backbone=lm.name)
    clock = time.perf_counter()

    def done(what: str) -> None:
        print(f"{task_name}: {what} ({time.perf_counter() - clock:.0f} s)", flush=True)

    own = customize(CustomizeConfig(method="zero-shot", max_tokens=args.max_tokens, **common), lm, progress=False)
    rows = [row(name, own["baselines_correct"][name]) for name in OWN]
    done(", ".join(OWN))
    icl = customize(CustomizeConfig(method="icl", max_tokens=args.icl_max_tokens, **common), lm, progress=False)
    rows.append(row("icl", icl["test_correct"], demonstrations=icl["demonstrations"], max_tokens=args.icl_max_tokens))
    done("icl")
    task = load_task(task_name)
    test = user_split(task, args.seed, args.shots, n_test=args.n_test).test
    start = PromptGenerator(lm.d, args.r, args.m, args.t).to(lm.device)
    start.start_at(instruction_embedding(lm, args.t))
    rows.append(row("instruction", as_bits(_correct(lm, start, start.z0, task, test, args.max_tokens).tolist())))
    done("instruction")
    return rows


def cross_fit_splits(test: list, rest: list, folds: int, n_dev: int) -> list[tuple[list, list, list[int]]]:
    """``(train, dev, scored)`` per fit: ``dev`` is the first ``n_dev`` rows of ``rest`` (the user-side rows
    outside the test rows); with ``folds`` = 1 the fit trains on the other rows of ``rest`` and scores every
    test row; with ``folds`` = k > 1 test row ``i`` falls in part ``i % k``, and fit ``j`` also trains on the
    test rows outside part ``j`` and scores part ``j`` alone (``scored``: their positions in ``test``). Every
    test row is scored once, by a prompt that never trained on it, and small tasks get more rows to train on."""
    if folds < 1:
        raise ValueError(f"--cross-fit must be >= 1, got {folds}")
    dev, train = rest[:n_dev], rest[n_dev:]
    if folds == 1:
        return [(train, dev, list(range(len(test))))]
    parts = [[i for i in range(len(test)) if i % folds == j] for j in range(folds)]
    return [(train + [test[i] for i in range(len(test)) if i % folds != j], dev, part) for j, part in enumerate(parts)]


def ceilings(lm: FrozenLM, task_name: str, spaces: list[str], args) -> list[dict]:
    """One row per ceiling space of ``spaces``: trained on the task's user-side rows outside the test rows
    (``--ceiling-dev`` of them held out for early stopping; with ``--cross-fit k``, also on the test rows of
    the other k - 1 parts, see ``cross_fit_splits``), each learning rate of ``--lrs`` tried and the one with
    the best dev accuracy (then loss) kept. Each fit (its lr, sweep and training report) is in ``fits``, and
    the start's test accuracy (``start_test_accuracy``: the instruction prompt, or z0 through ``--generator``)
    is beside the trained one."""
    task = load_task(task_name)
    test = user_split(task, args.seed, args.shots, n_test=args.n_test).test
    held = {ex.uid for ex in test}
    rest = [ex for ex in server_user_partition(task)[1] if ex.uid not in held]
    random.Random(args.seed).shuffle(rest)
    splits = cross_fit_splits(test, rest, args.cross_fit, args.ceiling_dev)
    generator = load_generator(args.generator, lm)[0] if args.generator else None
    out = []
    for space in spaces:
        correct, start, fits = [False] * len(test), [False] * len(test), []
        for fold, (train, dev, scored) in enumerate(splits):
            label = f"{task_name} ceiling-{space} fit {fold + 1}/{len(splits)}"
            fit = _fit(lm, space, task, train, dev, [test[i] for i in scored], generator, args, label)
            for i, before, after in zip(scored, fit.pop("start"), fit.pop("correct")):
                start[i], correct[i] = before, after
            fits.append(fit)
        out.append(
            row(
                f"ceiling-{space}",
                as_bits(correct),
                start_test_accuracy=sum(start) / len(test),
                cross_fit=len(splits),
                dev_rows=len(splits[0][1]),
                trained=all(fit["trained"] for fit in fits),
                **({"generator": args.generator} if space == "z" else {}),
                fits=fits,
            )
        )
    return out


def _fit(lm: FrozenLM, space: str, task, train: list, dev: list, scored: list, generator, args, label: str) -> dict:
    """One fit: the prompt of ``space`` trained on ``train`` at each lr of ``--lrs`` (all from the same start),
    the lr best on ``dev`` kept; its report, sweep, and per-row correctness on ``scored`` before and after."""
    runs, start = [], None
    for lr in args.lrs:
        source, z, trainable = prompt_space(lm, space, train, generator, (args.r, args.m, args.t), args.max_tokens)
        if start is None:
            start = evaluate(lm, source, z, task, scored, args.max_tokens)[1].tolist()
        config = CeilingConfig(space, lr, args.steps, max_tokens=args.max_tokens, seed=args.seed)
        report = train_ceiling(
            lm, source, z, trainable, task, train, dev, config, log=partial(_progress, f"{label} lr {lr:g}")
        )
        runs.append((report, evaluate(lm, source, z, task, scored, args.max_tokens)[1].tolist(), lr))
    report, correct, lr = max(
        runs, key=lambda run: (run[0]["best_dev"]["dev_accuracy"], -run[0]["best_dev"]["dev_loss"])
    )
    sweep = [{"lr": lr_, **r["best_dev"], "trained": r["trained"]} for r, _, lr_ in runs]
    return {
        "lr": lr,
        "train_rows": len(train),
        "test_rows": len(scored),
        **report,
        "sweep": sweep,
        "start": start,
        "correct": correct,
    }


def _progress(label: str, check: dict) -> None:
    print(
        f"{label}: step {check['step']}, dev accuracy {100 * check['dev_accuracy']:.1f}%, "
        f"dev loss {check['dev_loss']:.3f} ({check['seconds']:.0f} s)",
        flush=True,
    )


def with_comparisons(rows: list[dict], backbone: str, task_name: str) -> list[dict]:
    """Each row keyed by backbone, task and domain, with its paired difference against the best baseline."""
    best = max((r for r in rows if r["method"] in BEST_OF), key=lambda r: r["test_accuracy"])
    domain = load_task(task_name).domain
    return [
        {
            "backbone": backbone,
            "task": task_name,
            "domain": domain,
            **r,
            "vs_best_baseline": {"baseline": best["method"], **paired(r["correct"], best["correct"])},
        }
        for r in rows
    ]


def merge(out: Path) -> list[dict]:
    """Every part under ``out/parts`` into ``out/headroom.json`` (sorted by backbone, task; rows in order)."""
    rows = [r for part in sorted((out / "parts").glob("*/*.json")) for r in json.loads(part.read_text())]
    (out / "headroom.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows


TABLE_METHODS = (*OWN, "icl", "instruction", "ceiling-generator", "ceiling-z", "ceiling-bbt")
USER_TASK_GAIN = 0.05
"""The rule for a user task: a white-box ceiling beats the best baseline by at least this much (paired mean),
with its 95% interval above 0."""


def meets_rule(methods: dict[str, dict]) -> str:
    """Whether a (backbone, task)'s ceilings (rows by method) make it a user task: "yes (<the ceiling>)",
    "no", or "-" without a ceiling."""
    gaps = {m: r["vs_best_baseline"] for m, r in methods.items() if m.startswith("ceiling-")}
    passing = [m for m, gap in gaps.items() if gap["mean"] >= USER_TASK_GAIN and gap["mean"] - gap["ci95"] > 0]
    return f"yes ({', '.join(passing)})" if passing else "no" if gaps else "-"


def report(rows: list[dict], out: Path) -> str:
    """``headroom.md`` (one line per backbone and task: every method's accuracy, each non-baseline's paired
    difference against the best baseline, and whether a ceiling meets the user-task rule) and
    ``headroom.png`` (those differences per task, a panel per backbone)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keyed: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        keyed.setdefault((r["backbone"], r["task"]), {})[r["method"]] = r
    shown = [m for m in TABLE_METHODS if any(m in methods for methods in keyed.values())]
    lines = [
        "| backbone | task | n test | " + " | ".join(shown) + " | best baseline | user task? |",
        "|---|---|---|" + "---|" * len(shown) + "---|---|",
    ]
    for (backbone, task), methods in sorted(keyed.items()):
        cells = []
        for m in shown:
            r = methods.get(m)
            if r is None:
                cells.append("")
                continue
            cell = f"{100 * r['test_accuracy']:.1f}"
            if m not in BEST_OF:
                d = r["vs_best_baseline"]
                cell += f" ({100 * d['mean']:+.1f} ± {100 * d['ci95']:.1f})"
            cells.append(cell)
        best = next(iter(methods.values()))["vs_best_baseline"]["baseline"]
        lines.append(
            f"| {backbone} | {task} | {next(iter(methods.values()))['n_test']} | "
            + " | ".join(cells)
            + f" | {best} | {meets_rule(methods)} |"
        )
    text = "\n".join(lines) + "\n"
    (out / "headroom.md").write_text(text)
    compared = [m for m in shown if m not in BEST_OF]
    panels: dict[str, list[str]] = {}
    for backbone, task in sorted(keyed):
        panels.setdefault(backbone, []).append(task)
    width = 0.8 / max(1, len(compared))
    most = max(map(len, panels.values()))
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6, 0.7 * most), 3.2 * len(panels)), squeeze=False)
    for ax, (backbone, tasks) in zip(axes[:, 0], panels.items()):
        for i, m in enumerate(compared):
            values = [keyed[backbone, task].get(m) for task in tasks]
            x = [j + i * width for j, v in enumerate(values) if v]
            y = [100 * v["vs_best_baseline"]["mean"] for v in values if v]
            err = [100 * v["vs_best_baseline"]["ci95"] for v in values if v]
            if x:
                ax.bar(x, y, width, yerr=err, capsize=2, color=f"C{i}", label=m)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(
            [j + width * (len(compared) - 1) / 2 for j in range(len(tasks))], tasks, fontsize=7, rotation=30, ha="right"
        )
        ax.set_ylabel("points over the best baseline\n(paired 95% interval)", fontsize=8)
        ax.set_title(backbone, fontsize=9)
    fig.suptitle("Headroom: what a prompt adds over what a user can do alone")
    labelled = {label: handle for ax in axes[:, 0] for handle, label in zip(*ax.get_legend_handles_labels())}
    if labelled:
        axes[0, 0].legend(labelled.values(), labelled.keys(), fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "headroom.png", dpi=120)
    plt.close(fig)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["all"], help="registered task names, or all")
    parser.add_argument("--ceilings", nargs="*", default=[], choices=SPACES, help="white-box ceilings to add")
    parser.add_argument("--generator", help="the SDT generator the z ceiling trains through")
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 1e-2], help="ceiling learning rates (swept)")
    parser.add_argument("--steps", type=int, default=400, help="ceiling training steps at most (early-stopped)")
    parser.add_argument("--ceiling-dev", type=int, default=100, help="user-side rows held out to early-stop on")
    parser.add_argument(
        "--cross-fit", type=int, default=1, help="k > 1: k fits, each also trained on the other parts' test rows"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shots", type=int, default=16, help="train (and dev) rows per answer: fixes the test rows")
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--icl-max-tokens", type=int, default=384, help="room for the in-context demonstrations")
    parser.add_argument("--r", type=int, default=500)
    parser.add_argument("--m", type=int, default=256)
    parser.add_argument("--t", type=int, default=10)
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--redo", action="store_true", help="recompute tasks whose part exists, baselines included")
    parser.add_argument("--out", default="results/headroom")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = FrozenLM.load(args.backbone, args.dtype, "auto")
    out = Path(args.out)
    (out / "parts" / args.backbone).mkdir(parents=True, exist_ok=True)
    for name in task_names() if args.tasks == ["all"] else args.tasks:
        part = out / "parts" / args.backbone / f"{name}.json"
        done = json.loads(part.read_text()) if part.exists() and not args.redo else []
        current = {r["method"] for r in done if r.get("cross_fit", args.cross_fit) == args.cross_fit}
        spaces = [s for s in args.ceilings if f"ceiling-{s}" not in current]  # missing, or from another k
        if done and not spaces:
            continue
        kept = [r for r in done if r["method"] not in {f"ceiling-{s}" for s in spaces}]
        rows = (kept or baselines(lm, name, args)) + ceilings(lm, name, spaces, args)
        rows = with_comparisons(rows, args.backbone, name)
        if part.exists() and not args.redo:  # keep what another run added to the part meanwhile
            ours = {r["method"] for r in rows}
            rows += [r for r in json.loads(part.read_text()) if r["method"] not in ours]
        part.write_text(json.dumps(rows, indent=1) + "\n")
        for r in rows:
            lo, hi = r["ci95"]
            d = r["vs_best_baseline"]
            print(
                f"{name:28s} {r['method']:18s} {100 * r['test_accuracy']:5.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
                f"  vs {d['baseline']} {100 * d['mean']:+.1f} ± {100 * d['ci95']:.1f}",
                flush=True,
            )
    print(report(merge(out), out))


if __name__ == "__main__":
    main()
