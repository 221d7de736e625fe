"""The privacy sweep: every attack without defences and under each defence at several strengths, with
the accuracy each defence costs.

    python -m simulations.privacy_sweep [--preset simulations/privacy.toml] [--users 20] [--out results/privacy]
                                        [--defences none dp decoy-texts decoy-candidates selection-noise]
                                        [--levels 0 1 2 3] [--shadows 8] [--attribute-shadows 24]
                                        [--membership-users 0]
                                        [--set "key=value ..."] [--report-only]

Each cell is one real `flwr run .` (simulations/local_run.py) of the preset with the transcript on and
one defence at one strength (``STRENGTHS``), into ``<out>/<defence>-<level>/``; then every attack
(``cbp-fed attack``) on its transcript, into that folder's ``privacy/``. The preset's generator is
trained first if missing (``simulations.suite.ensure_generator``). Resumable like the suite: a
cell with a summary.json is not run again, a cell killed after a round resumes from its checkpoint,
an attack with its JSON is not run again. Then ``<out>/privacy_report.md`` (one row per cell: accuracy,
test loss and the accuracy cost against no defence, epsilon where there is one, every attack's metric
against its chance level) and ``<out>/privacy_utility.png`` (each leakage metric against test accuracy, each
cell a point labelled with its defence's strength). A reference cell ``<out>/start/`` scores the start vector alone
(``method = "sdt-only"``: no user search) on the same test texts, so a defence's accuracy can be read
against what the users' search added. ``--set`` overrides preset keys (e.g. the tiny backbone).
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cbp_fed.privacy.attacks import ATTACKS, run_attack  # noqa: E402
from cbp_fed.privacy.defences import epsilon  # noqa: E402
from cbp_fed.privacy.utility import utility_of  # noqa: E402
from cbp_fed.results import legend_below, upgrade_summary  # noqa: E402
from simulations.local_run import ROOT, parse_settings  # noqa: E402
from simulations.suite import ensure_generator, run_resumable  # noqa: E402

DP_CLIP = 5.0
STRENGTHS = {
    "none": [{}],
    "dp": [{"dp-clip": DP_CLIP, "dp-noise": n} for n in (0.05, 0.2, 1.0, 4.0)],  # one release: epsilon 970, 92, 10, 2
    "decoy-texts": [{"decoy-texts": f} for f in (0.25, 0.5, 1.0)],
    "decoy-candidates": [{"decoy-candidates": f} for f in (0.5, 1.0, 2.0)],
    "selection-noise": [{"selection-noise": s} for s in (0.05, 0.2, 1.0)],
}
START = "start"  # the reference cell: the start vector alone, no user search, no attacks
# (attack, metric, chance metric or None, label on the plot)
LEAKAGE = [
    ("label-selection", "accuracy", "majority_baseline", "label inference accuracy"),
    ("membership", "auc", None, "membership ROC AUC"),
    ("attribute", "accuracy", "chance", "attribute (task) accuracy"),
]
# the run-config key that sets each defence's strength, and its unit (the plot's point labels)
STRENGTH_KEY = {
    "dp": ("dp-noise", "noise multiplier"),
    "decoy-texts": ("decoy-texts", "decoys per text"),
    "decoy-candidates": ("decoy-candidates", "decoys per candidate"),
    "selection-noise": ("selection-noise", "std, nats"),
}


def cells(defences: list[str], levels: list[int] | None = None) -> list[tuple[str, dict]]:
    """(cell name, defence settings) in sweep order: each defence at the ``levels`` of its strengths
    (all by default; no defence has the one level 0)."""
    return [
        (f"{d}-{i}", s)
        for d in defences
        for i, s in enumerate(STRENGTHS[d])
        if levels is None or i in levels or d == "none"
    ]


def run_cell(name: str, defence: dict, preset: dict, users: int, out: Path) -> None:
    """One flwr run of the preset with ``defence`` into ``out/name`` (resumes a killed one)."""
    settings = {
        **preset,
        **defence,
        "record-transcript": True,
        "results-dir": str(out),
        "run-name": name,
        "user-state-dir": str((out / ".users").resolve()),
        "min-users": users,
    }
    if settings.get("generator"):  # absolute: the ServerApp and the attacks may run elsewhere than ROOT
        settings["generator"] = str((ROOT / settings["generator"]).resolve())
    run_resumable(settings, users, ROOT / ".state" / "flwr-privacy")


def attack_cell(folder: Path, shadows: int, attribute_shadows: int, membership_users: int) -> dict:
    """Every attack on one cell (those already done are read back). Shadows are cached in the sweep's
    ``.shadows/``: cells whose shadows would be the same (no defence and the decoys) train them once."""
    results = {}
    for name in ATTACKS:
        path = folder / "privacy" / f"{name}.json"
        if not path.exists():
            options = {"shadows": attribute_shadows if name == "attribute" else shadows}
            options.update(max_users=membership_users, shadow_cache=folder.parent / ".shadows")
            run_attack(folder, name, **options)
        results[name] = json.loads(path.read_text())
    return results


def load_cell(folder: Path, defence: str) -> dict:
    config = json.loads((folder / "config.json").read_text())
    summary = upgrade_summary(json.loads((folder / "summary.json").read_text()))
    eps = epsilon(config["dp-noise"], config["num-rounds"], config["dp-delta"]) if config["dp-clip"] else None
    attacks = {n: json.loads(p.read_text()) for n in ATTACKS if (p := folder / "privacy" / f"{n}.json").exists()}
    return {
        "name": folder.name,
        "defence": defence,
        "settings": {
            k: config[k] for k in ("dp-clip", "dp-noise", "decoy-texts", "decoy-candidates", "selection-noise")
        },
        "accuracy": summary["final_test_accuracy"],
        "utility": utility(folder),
        "calls": summary["model_calls_total_all_users"],
        "epsilon": eps,
        "attacks": attacks,
    }


def _strength(cell: dict) -> str:
    s = cell["settings"]
    return {
        "none": "-",
        "dp": f"clip {s['dp-clip']:g}, noise {s['dp-noise']:g}",
        "decoy-texts": f"{s['decoy-texts']:g} per text",
        "decoy-candidates": f"{s['decoy-candidates']:g} per candidate",
        "selection-noise": f"std {s['selection-noise']:g} nats",
    }[cell["defence"]]


def utility(folder: Path) -> dict:
    """``utility_of`` a cell, kept in its ``privacy/utility.json`` (the transcript stays local)."""
    path = folder / "privacy" / "utility.json"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(utility_of(folder), indent=1))
    return json.loads(path.read_text())


def start_utility(out: Path) -> dict | None:
    """The utility of the start vector alone (the reference cell), None before it ran."""
    return utility(out / START) if (out / START / "summary.json").exists() else None


def report(rows: list[dict], preset: dict, users: int, start: dict | None) -> str:
    """privacy_report.md: one row per cell."""
    base = next((r["accuracy"] for r in rows if r["defence"] == "none"), None)
    lines = [
        f"# Privacy sweep: {users} users, {preset.get('backbone')}, tasks {preset.get('tasks')}, "
        f"{preset.get('num-rounds')} rounds x {preset.get('steps-per-round')} generations x {preset.get('popsize')}",
        "",
        "Leakage metrics with their chance level in brackets: label inference accuracy on the users' training",
        "texts [majority-class baseline]; membership LiRA ROC AUC [0.5] and TPR at 1% / 0.1% FPR; attribute",
        "probe accuracy [most frequent value]; exposure: share of the texts scored in training that are training",
        "rows. Epsilon: (epsilon, delta)-DP of each user's released z over all rounds (exact Gaussian DP).",
        "Test loss: cross-entropy (nats) of the label words on the users' test texts, mean over users; cost:",
        "test accuracy points lost against no defence.",
        "",
        *(
            [
                f"The start vector alone (no user search, same test texts) scores {100 * start['accuracy']:.1f}% "
                f"at a test loss of {start['loss']:.3f} nats, against {100 * base:.1f}% for the search without "
                f"defence; a constant answer per user would score {100 * start['constant_accuracy']:.1f}%.",
                "",
            ]
            if start is not None and base is not None
            else []
        ),
        "| defence | strength | epsilon | test acc | test loss | cost | provider calls | label acc [base] | MIA AUC | "
        "TPR@1% | TPR@0.1% | attribute acc [chance] | exposure |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a = r["attacks"]
        label = a.get("label-selection", {})
        mia = a.get("membership", {})
        attr = a.get("attribute", {})
        exposure = a.get("exposure", {}).get("mean", {}).get("scored_texts_that_are_training_rows")
        eps = "-" if r["epsilon"] is None else f"{r['epsilon']:.3g}"
        cost = "-" if base is None or r["accuracy"] is None else f"{100 * (base - r['accuracy']):+.1f}"

        def pct(d, k):
            return f"{100 * d[k]:.1f}" if k in d else "-"

        auc = f"{mia['auc']:.3f}" if "auc" in mia else "-"
        lines.append(
            f"| {r['defence']} | {_strength(r)} | {eps} | {pct(r, 'accuracy')} | {r['utility']['loss']:.3f} | "
            f"{cost} | {r['calls']:,} | "
            f"{pct(label, 'accuracy')} [{pct(label, 'majority_baseline')}] | {auc} | "
            f"{pct(mia, 'tpr_at_1%_fpr')} | {pct(mia, 'tpr_at_0.1%_fpr')} | "
            f"{pct(attr, 'accuracy')} [{pct(attr, 'chance')}] | "
            f"{'-' if exposure is None else f'{100 * exposure:.0f}%'} |"
        )
    lines += ["", "![privacy-utility](privacy_utility.png)", ""]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, start: dict | None):
    """privacy_utility.png: each leakage metric (y) against test accuracy (x, %). No defence is a star;
    each defence's cells are points labelled with their strength (weakest first, in the legend's unit),
    not joined: accuracy need not fall with strength, and a line through them would zig-zag. The chance
    level is dashed, the start vector's accuracy dotted, the legend below the panels. Returns the figure."""
    fig, axes = plt.subplots(1, len(LEAKAGE), figsize=(4.6 * len(LEAKAGE), 4.4), squeeze=False, layout="constrained")
    defences = list({r["defence"]: None for r in rows})  # those in the sweep, in order
    for ax, (attack, metric, chance, title) in zip(axes[0], LEAKAGE):
        for colour, defence in enumerate(defences):
            key, unit = STRENGTH_KEY.get(defence, (None, None))  # no defence: no strength
            cells = sorted(
                (r for r in rows if r["defence"] == defence and attack in r["attacks"] and r["accuracy"] is not None),
                key=lambda r: r["settings"][key] if key else 0,
            )
            if not cells:
                continue
            x, y = zip(*((100 * r["accuracy"], r["attacks"][attack][metric]) for r in cells))
            if key is None:
                ax.plot(x, y, marker="*", markersize=12, linestyle="", color=f"C{colour}", label="no defence")
                continue
            ax.plot(x, y, marker="o", linestyle="", color=f"C{colour}", label=f"{defence} ({unit})")
            for r, xi, yi in zip(cells, x, y):
                label = f"{r['settings'][key]:g}"
                ax.annotate(label, (xi, yi), xytext=(4, 3), textcoords="offset points", fontsize=7, color=f"C{colour}")
        levels = [r["attacks"][attack][chance] for r in rows if chance and attack in r["attacks"]]
        ax.axhline(np.mean(levels) if levels else 0.5, color="grey", linestyle="--", lw=0.8, label="chance")
        if start is not None:
            ax.axvline(100 * start["accuracy"], color="grey", linestyle=":", lw=0.8, label="start vector, no search")
        ax.set(xlabel="test accuracy (%)", ylabel=title, title=title)
        ax.margins(x=0.1)  # room for the labels of the outermost points
    legend_below(fig, axes[0])
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", type=Path, default=ROOT / "simulations" / "privacy.toml")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "privacy")
    parser.add_argument("--defences", nargs="+", default=list(STRENGTHS), choices=list(STRENGTHS))
    parser.add_argument("--levels", type=int, nargs="+", help="which strengths (0 = weakest; default all)")
    parser.add_argument("--shadows", type=int, default=8, help="membership: shadow users per target user")
    parser.add_argument("--attribute-shadows", type=int, default=24, help="attribute: shadow users for the probe")
    parser.add_argument("--membership-users", type=int, default=0, help="membership: the first N users (0 = all)")
    parser.add_argument("--set", default="", help="preset overrides, e.g. \"backbone='tiny-random' generator=''\"")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from finished cells")
    args = parser.parse_args()
    preset = {**tomllib.loads(args.preset.read_text()), **parse_settings(args.set)}
    args.out.mkdir(parents=True, exist_ok=True)
    if preset.get("generator") and not args.report_only:
        ensure_generator(preset["domain"], ROOT / preset["generator"])  # the suite's SDT checkpoint, trained if missing
    if not args.report_only and not (args.out / START / "summary.json").exists():
        run_cell(START, {"method": "sdt-only"}, preset, args.users, args.out)
    rows = []
    for name, defence in cells(args.defences, args.levels):
        folder = args.out / name
        if not args.report_only:
            if not (folder / "summary.json").exists():
                run_cell(name, defence, preset, args.users, args.out)
            attack_cell(folder, args.shadows, args.attribute_shadows, args.membership_users)
            print(f"{name}: done", flush=True)
        if (folder / "summary.json").exists():
            rows.append(load_cell(folder, name.rsplit("-", 1)[0]))
    if not rows:
        print("no finished cells yet")
        return 1
    start = start_utility(args.out)
    (args.out / "privacy_report.md").write_text(report(rows, preset, args.users, start))
    plot(rows, args.out / "privacy_utility.png", start)
    print((args.out / "privacy_report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
