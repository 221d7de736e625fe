"""Markdown tables over run results: `cbp-fed report PATH ...`.

A PATH is a summary.json or a run folder holding one, of either kind: a one-process `cbp-fed customize`
summary (one user; rows are mean ± std over seeds per task, method, budget and split) or a federated
run's summary (written by the ServerApp; one row per run, its seed read from the config.json beside it).
Anything else is refused with the file named.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from .results import upgrade_summary

CUSTOMIZE_KEYS = ("task", "method", "budget", "majority_rate")
FEDERATED_KEYS = ("method", "tasks", "rounds", "final_test_accuracy")


def _mean_std(values: list[float], scale: float = 100.0) -> str:
    values = np.asarray(values, dtype=float) * scale
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}" if len(values) > 1 else f"{values.mean():.1f}"


def summary_path(path: str | Path) -> Path:
    """The summary.json a PATH names: the file itself, or the one inside a run folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path.parent}: no summary.json in it (not a run folder, or its run has not finished; "
                f"the runs below it: {path.parent}/*/summary.json)"
            )
    elif not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return path


def load_summary(path: str | Path) -> tuple[str, Path, dict]:
    """(kind, file, summary) of a PATH: kind "customize" or "federated" (its keys upgraded to today's names)."""
    file = summary_path(path)
    try:
        summary = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file}: not a JSON summary ({err})") from err
    if isinstance(summary, dict) and all(key in summary for key in CUSTOMIZE_KEYS):
        return "customize", file, summary
    if isinstance(summary, dict) and all(key in summary for key in FEDERATED_KEYS):
        return "federated", file, upgrade_summary(summary)
    keys = ", ".join(sorted(summary)[:8]) if isinstance(summary, dict) else type(summary).__name__
    raise ValueError(f"{file}: not a summary of cbp-fed customize or of a federated run (keys: {keys})")


def summaries_table(summaries: list[dict]) -> str:
    """One-process runs: one row per (task, method, budget, split): seeds, accuracy and calibrated
    accuracy on the split (mean ± std over seeds, %), majority-class rate, how often the first label word
    (" yes") is predicted, calls and wall time; then a budget curve table if the runs recorded one."""
    groups = defaultdict(list)
    for s in summaries:
        groups[(s["task"], s["method"], s["budget"], s.get("eval_split", "test"))].append(s)
    lines = [
        "| task | method | calls | seeds | split | acc % | calibrated % | majority % | predicted first label %"
        " | eval n | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (task, method, budget, split), runs in sorted(groups.items()):
        size = f"{split}_size"
        lines.append(
            f"| {task} | {method} | {budget} | {len(runs)} | {split} | "
            f"{_mean_std([r[f'{split}_accuracy'] for r in runs])} | "
            f"{_mean_std([r[f'{split}_accuracy_calibrated'] for r in runs])} | "
            f"{100 * np.mean([r['majority_rate'] for r in runs]):.1f} | "
            f"{_mean_std([r[f'{split}_predicted_share'][0] / r[size] for r in runs])} | {runs[0][size]} | "
            f"{np.mean([r['wall_seconds'] for r in runs]):.0f} |"
        )
    curves = defaultdict(list)
    for s in summaries:
        split = s.get("eval_split", "test")
        for point in s.get("curve", []):
            curves[(s["task"], s["method"], split, point["calls"])].append(point[f"{split}_accuracy"])
    if curves:
        lines += ["", "| task | method | split | calls | seeds | acc % |", "|---|---|---|---|---|---|"]
        for (task, method, split, calls), accs in sorted(curves.items()):
            lines.append(f"| {task} | {method} | {split} | {calls} | {len(accs)} | {_mean_std(accs)} |")
    return "\n".join(lines) + "\n"


def _number(value: float | None, form: str = ",.0f", scale: float = 1.0) -> str:
    """`value` x `scale` in `form`, or "-" for a missing value."""
    return "-" if value is None else f"{scale * value:{form}}"


def federated_table(runs: list[tuple[Path, dict]]) -> str:
    """Federated runs: one row per (summary.json, upgraded summary), in the order given."""
    lines = [
        "| run | method | tasks | seed | rounds | users | test acc % (± std over users) | chance % "
        "| train calls/user | model calls, all users | train B up/user/round | train B down/user/round | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for file, s in runs:
        config_path = file.parent / "config.json"
        seed = json.loads(config_path.read_text()).get("seed", "-") if config_path.exists() else "-"
        accuracy = _number(s["final_test_accuracy"], ".1f", 100)
        if s["final_test_accuracy"] is not None and s.get("final_test_accuracy_std") is not None:
            accuracy += f" ± {100 * s['final_test_accuracy_std']:.1f}"
        lines.append(
            f"| {file.parent.name} | {s['method']} | {', '.join(s['tasks'])} | {seed} | {s['rounds']} | "
            f"{s.get('users', '-')} | {accuracy} | {_number(s.get('chance_test_accuracy'), '.1f', 100)} | "
            f"{_number(s.get('train_calls_per_user'), ',.1f').removesuffix('.0')} | "
            f"{_number(s.get('model_calls_total_all_users'))} | "
            f"{_number(s.get('bytes_up_train_payload_per_user_per_round'))} | "
            f"{_number(s.get('bytes_down_train_payload_per_user_per_round'))} | "
            f"{_number(s.get('seconds_wall_total'))} |"
        )
    return "\n".join(lines) + "\n"


def report(paths: list[str | Path]) -> str:
    """The markdown report over PATHs: a section per kind of summary found."""
    loaded = [load_summary(path) for path in paths]
    customize = [s for kind, _, s in loaded if kind == "customize"]
    federated = [(file, s) for kind, file, s in loaded if kind == "federated"]
    sections = []
    if customize:
        sections.append("## One-process runs (cbp-fed customize)\n\n" + summaries_table(customize))
    if federated:
        sections.append("## Federated runs\n\n" + federated_table(federated))
    return "\n".join(sections)
