"""The privacy sweep: every attack without defences and under each defence at three strengths (and
the label mechanism with the z release), with what each defence costs the users' search.

    python -m simulations.privacy_sweep [--preset simulations/privacy.toml] [--users 20] [--out results/privacy]
                                        [--defences none selection-noise dp ...] [--levels 0 1 2]
                                        [--references 2] [--non-members 50] [--attacks ...]
                                        [--attribute-shadows 8] [--set "key=value ..."] [--report-only]

Each cell is one real `flwr run .` (simulations/local_run.py) of the preset with the transcript on and
one defence at one strength (``STRENGTHS``), into ``<out>/<defence>-<level>/``; then every attack
(``cbp-fed attack``) on its transcript, into that folder's ``privacy/``. The preset's generator is
trained first if missing (``simulations.suite.ensure_generator``). Resumable like the suite: a
cell with a summary.json is not run again, a cell killed after a round resumes from its checkpoint,
an attack with its JSON is not run again. A reference cell ``<out>/start/`` scores the start vector
alone (``method = "sdt-only"``: no user search) on the same test texts, so each cell's accuracy gain
over the start is paired text by text (``utility.paired_gain``).

Then ``<out>/privacy.json`` (one row per cell, machine-readable), ``<out>/privacy_report.md`` (the same
as a table: gain over the start with its interval, epsilon of the provider's view and of the released
z (``accounting.LabelChannel``, the worst user), label inference against the majority class with its
p-value, attribute, membership AUC and TPR at 0.1% / 1% FPR with bootstrap intervals, exposure) and
``<out>/privacy_utility.png`` (per leakage channel: leakage against accuracy gained, one labelled point
per strength). ``--set`` overrides preset keys (e.g. the tiny backbone).
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

from cbp_fed.config import RunConfig  # noqa: E402
from cbp_fed.privacy.accounting import LabelChannel  # noqa: E402
from cbp_fed.privacy.attacks import ATTACKS, run_attack  # noqa: E402
from cbp_fed.privacy.attacks.common import ground_truth  # noqa: E402
from cbp_fed.privacy.utility import paired_gain, utility_of  # noqa: E402
from cbp_fed.results import legend_below, upgrade_summary  # noqa: E402
from simulations.local_run import ROOT, parse_settings  # noqa: E402
from simulations.suite import ensure_generator, run_resumable  # noqa: E402

DP_CLIP = 5.0
STRENGTHS = {
    "none": [{}],
    # the label mechanism (loss-clip from the preset): provider epsilon 70 / 10.6 / 2.1 at the preset's sizes
    "selection-noise": [{"selection-noise": s} for s in (0.25, 1.0, 4.0)],
    "dp": [{"dp-clip": DP_CLIP, "dp-noise": n} for n in (0.5, 2.0, 8.0)],  # two releases: epsilon 39, 6.6, 1.4
    "dp-and-selection-noise": [{"dp-clip": DP_CLIP, "dp-noise": 2.0, "selection-noise": 1.0}],
    "decoy-texts": [{"decoy-texts": f} for f in (0.25, 0.5, 1.0)],
    "decoy-candidates": [{"decoy-candidates": f} for f in (0.5, 1.0, 2.0)],
}
START = "start"  # the reference cell: the start vector alone, no user search, no attacks
# (channel, attack, metric, chance metric or None, label on the plot)
LEAKAGE = [
    ("labels", "label-selection", "accuracy", "majority_baseline", "label inference accuracy"),
    ("membership", "membership", "auc", None, "membership ROC AUC"),
    ("membership, low FPR", "membership", "tpr_at_1%_fpr", None, "membership TPR at 1% FPR"),
    ("attribute", "attribute", "accuracy", "chance", "attribute (label skew) accuracy"),
]
# the run-config key that sets each defence's strength, and its unit (the plot's point labels)
STRENGTH_KEY = {
    "dp": ("dp-noise", "noise multiplier"),
    "selection-noise": ("selection-noise", "std, nats"),
    "dp-and-selection-noise": ("selection-noise", "selection std, nats"),
    "decoy-texts": ("decoy-texts", "decoys per text"),
    "decoy-candidates": ("decoy-candidates", "decoys per candidate"),
}
DEFENCE_KEYS = ("dp-clip", "dp-noise", "decoy-texts", "decoy-candidates", "selection-noise", "loss-clip")


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


def attack_cell(folder: Path, references: int, non_members: int, attribute_shadows: int, attacks=ATTACKS) -> dict:
    """Every attack on one cell (those already done are read back). The shadows (attribute probe,
    membership references) are trained without the cells' noise and cached in the sweep's ``.shadows/``
    with the references' scores, so the whole sweep trains and scores them once."""
    results = {}
    for name in attacks:
        path = folder / "privacy" / f"{name}.json"
        if not path.exists():
            options = {"shadows": attribute_shadows, "references": references, "non_members": non_members}
            options["defended_shadows"] = False  # one set of shadows for the whole sweep (CPU budget)
            run_attack(folder, name, **options, shadow_cache=folder.parent / ".shadows")
        results[name] = json.loads(path.read_text())
    return results


def epsilons(config: RunConfig) -> dict[str, float]:
    """The worst user's epsilon (provider's view, released z) at the run's dp-delta: the user with the
    fewest training and dev texts has the largest sensitivity."""
    truth = ground_truth(config, list(range(config.min_users)))
    worst = {"provider": 0.0, "released_z": 0.0}
    for t in truth.values():
        eps = LabelChannel.of(config, len(t.train), len(t.dev)).epsilon(config.dp_delta)
        worst = {k: max(worst[k], eps[k]) for k in worst}
    return worst


def load_cell(folder: Path, defence: str, start: Path | None) -> dict:
    """One row of privacy.json: the cell's settings, accuracy, gain over the start, epsilon, attacks."""
    raw = json.loads((folder / "config.json").read_text())
    summary = upgrade_summary(json.loads((folder / "summary.json").read_text()))
    attacks = {n: json.loads(p.read_text()) for n in ATTACKS if (p := folder / "privacy" / f"{n}.json").exists()}
    gain = cached(folder / "privacy" / "gain.json", lambda: paired_gain(folder, start)) if start is not None else None
    return {
        "name": folder.name,
        "defence": defence,
        "settings": {k: raw[k] for k in DEFENCE_KEYS},
        "users": raw["min-users"],
        "accuracy": summary["final_test_accuracy"],
        "gain_over_start": gain,
        "utility": utility(folder),
        "calls": summary["model_calls_total_all_users"],
        "epsilon": epsilons(RunConfig.from_run_config(raw)),
        "delta": raw["dp-delta"],
        "attacks": attacks,
    }


STRENGTH_TEXT = {
    "none": lambda s: "-",
    "dp": lambda s: f"clip {s['dp-clip']:g}, noise {s['dp-noise']:g}",
    "selection-noise": lambda s: f"std {s['selection-noise']:g} nats",
    "dp-and-selection-noise": lambda s: f"noise {s['dp-noise']:g}; std {s['selection-noise']:g}",
    "decoy-texts": lambda s: f"{s['decoy-texts']:g} per text",
    "decoy-candidates": lambda s: f"{s['decoy-candidates']:g} per candidate",
}


def _strength(cell: dict) -> str:
    return STRENGTH_TEXT[cell["defence"]](cell["settings"])


def cached(path: Path, compute) -> dict:
    """``compute()`` kept in ``path`` (what needs a transcript is kept beside it: the transcript stays
    local, the report is rebuilt from the JSON)."""
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(compute(), indent=1))
    return json.loads(path.read_text())


def utility(folder: Path) -> dict:
    """``utility_of`` a cell, kept in its ``privacy/utility.json``."""
    return cached(folder / "privacy" / "utility.json", lambda: utility_of(folder))


def _eps(value: float) -> str:
    return "inf" if value == float("inf") else f"{value:.3g}"


def _interval(metric: dict, key: str, scale: float = 100, digits: int = 1) -> str:
    """``value [low, high]`` of an attack metric with its bootstrap interval (``-`` when absent)."""
    if key not in metric:
        return "-"
    low, high = metric.get(f"{key}_ci95", [None, None])
    text = f"{scale * metric[key]:.{digits}f}"
    return text if low is None else f"{text} [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"


def _label_inference(result: dict) -> str:
    """``accuracy [majority] (p-value)`` of the label attack, in %."""
    if not result:
        return "-"
    return f"{100 * result['accuracy']:.1f} [{100 * result['majority_baseline']:.1f}] (p {result['p_value']:.1g})"


def report(rows: list[dict], preset: dict, users: int, start: dict | None) -> str:
    """privacy_report.md: one row per cell."""
    mia = next((r["attacks"]["membership"] for r in rows if "membership" in r["attacks"]), {})
    lines = [
        f"# Privacy sweep: {users} users, {preset.get('backbone')}, {preset.get('tasks')}, "
        f"{preset.get('num-rounds')} rounds x {preset.get('steps-per-round')} generations x {preset.get('popsize')}, "
        f"loss clip {preset.get('loss-clip', 0):g} nats",
        "",
        "Test loss: the label words' cross-entropy (nats) on the test texts. Gain: test accuracy points over the",
        "start vector alone (same users, same test texts, paired), with its 95% interval. Epsilon at delta 1e-5",
        "for one text's label, the worst user: of everything the provider sees (inf: no bound), and of the",
        "released z alone. Label inference accuracy on the users' training",
        "texts [majority class] with its one-sided p-value; attribute probe accuracy [most frequent value];",
        f"membership: offline LiRA, {mia.get('members', '?')} member and {mia.get('non_members', '?')} non-member",
        "challenges, AUC and TPR at 0.1% / 1% FPR (%) with 95% bootstrap intervals over users; exposure: share of",
        "the texts scored in training that are training rows.",
        "",
        *(
            [
                f"The start vector alone scores {100 * start['accuracy']:.1f}% on the same "
                f"{start['users']} users' test texts; a constant answer per user would score "
                f"{100 * start['constant_accuracy']:.1f}%.",
                "",
            ]
            if start is not None
            else []
        ),
        "| defence | strength | epsilon provider | epsilon z | test acc | test loss | gain [95% CI] | calls | "
        "label acc [base] (p) | attribute [chance] | MIA AUC | TPR@0.1% | TPR@1% | exposure |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a = r["attacks"]
        label, attr, member = a.get("label-selection", {}), a.get("attribute", {}), a.get("membership", {})
        exposure = a.get("exposure", {}).get("mean", {}).get("scored_texts_that_are_training_rows")
        g = r["gain_over_start"]
        gain = "-" if g is None else f"{100 * g['gain']:+.1f} [{100 * g['ci95'][0]:+.1f}, {100 * g['ci95'][1]:+.1f}]"

        def pct(d, k):
            return f"{100 * d[k]:.1f}" if k in d else "-"

        lines.append(
            f"| {r['defence']} | {_strength(r)} | {_eps(r['epsilon']['provider'])} | "
            f"{_eps(r['epsilon']['released_z'])} | {pct(r, 'accuracy')} | {r['utility']['loss']:.3f} | {gain} | "
            f"{r['calls']:,} | "
            f"{_label_inference(label)} | {pct(attr, 'accuracy')} [{pct(attr, 'chance')}] | "
            f"{_interval(member, 'auc', 1, 3)} | {_interval(member, 'tpr_at_0.1%_fpr')} | "
            f"{_interval(member, 'tpr_at_1%_fpr')} | {'-' if exposure is None else f'{100 * exposure:.0f}%'} |"
        )
    lines += ["", "![privacy-utility](privacy_utility.png)", ""]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path):
    """privacy_utility.png: per leakage channel (a panel), the leakage (y) against the accuracy gained
    over the start vector (x, points, with its interval). No defence is a star; each defence's cells
    are points labelled with their strength, not joined: the gain need not fall with strength. The
    chance level is dashed, zero gain dotted, the legend below the panels. Returns the figure."""
    fig, axes = plt.subplots(1, len(LEAKAGE), figsize=(4.4 * len(LEAKAGE), 4.4), squeeze=False, layout="constrained")
    defences = list({r["defence"]: None for r in rows})  # those in the sweep, in order
    for ax, (channel, attack, metric, chance, title) in zip(axes[0], LEAKAGE):
        for colour, defence in enumerate(defences):
            key, unit = STRENGTH_KEY.get(defence, (None, None))  # no defence: no strength
            cells = sorted(
                (r for r in rows if r["defence"] == defence and attack in r["attacks"] and r["gain_over_start"]),
                key=lambda r: r["settings"][key] if key else 0,
            )
            if not cells:
                continue
            gains = np.array([[r["gain_over_start"]["gain"], *r["gain_over_start"]["ci95"]] for r in cells]) * 100
            y = [r["attacks"][attack][metric] for r in cells]
            ax.errorbar(
                gains[:, 0],
                y,
                xerr=[gains[:, 0] - gains[:, 1], gains[:, 2] - gains[:, 0]],
                linestyle="",
                elinewidth=0.6,
                marker="*" if key is None else "o",
                markersize=12 if key is None else 6,
                color=f"C{colour}",
                label="no defence" if key is None else f"{defence} ({unit})",
            )
            for r, xi, yi in zip(cells, gains[:, 0], y):
                if key is not None:
                    text = f"{r['settings'][key]:g}"
                    ax.annotate(
                        text, (xi, yi), xytext=(4, 3), textcoords="offset points", fontsize=7, color=f"C{colour}"
                    )
        levels = [r["attacks"][attack][chance] for r in rows if chance and attack in r["attacks"]]
        ax.axhline(
            np.mean(levels) if levels else (0.5 if metric == "auc" else 0.01),
            color="grey",
            ls="--",
            lw=0.8,
            label="chance",
        )
        ax.axvline(0, color="grey", linestyle=":", lw=0.8, label="no gain over the start vector")
        ax.set(xlabel="test accuracy gained over the start (points)", ylabel=title, title=channel)
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
    parser.add_argument("--references", type=int, default=2, help="membership: shadow references per task")
    parser.add_argument("--non-members", type=int, default=50, help="membership: non-member challenges per user")
    parser.add_argument("--attribute-shadows", type=int, default=8, help="attribute: shadow users for the probe")
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=list(ATTACKS), help="attacks to run")
    parser.add_argument("--set", default="", help="preset overrides, e.g. \"backbone='tiny-random' generator=''\"")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from finished cells")
    args = parser.parse_args()
    preset = {**tomllib.loads(args.preset.read_text()), **parse_settings(args.set)}
    args.out.mkdir(parents=True, exist_ok=True)
    if preset.get("generator") and not args.report_only:
        ensure_generator(preset["domain"], ROOT / preset["generator"])  # the suite's SDT checkpoint, trained if missing
    start = args.out / START
    if not args.report_only and not (start / "summary.json").exists():
        run_cell(START, {"method": "sdt-only", "num-rounds": 1, "eval-every": 1}, preset, args.users, args.out)
    rows = []
    for name, defence in cells(args.defences, args.levels):
        folder = args.out / name
        if not args.report_only:
            if not (folder / "summary.json").exists():
                run_cell(name, defence, preset, args.users, args.out)
            attack_cell(folder, args.references, args.non_members, args.attribute_shadows, args.attacks)
            print(f"{name}: done", flush=True)
        if (folder / "summary.json").exists():
            rows.append(load_cell(folder, name.rsplit("-", 1)[0], start if (start / "summary.json").exists() else None))
    if not rows:
        print("no finished cells yet")
        return 1
    start_row = utility(start) if (start / "summary.json").exists() else None
    (args.out / "privacy.json").write_text(json.dumps({"preset": preset, "start": start_row, "cells": rows}, indent=1))
    (args.out / "privacy_report.md").write_text(report(rows, preset, args.users, start_row))
    plot(rows, args.out / "privacy_utility.png")
    print((args.out / "privacy_report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
