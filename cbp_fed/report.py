"""Markdown tables over ``summary.json`` files: mean and std over seeds per (task, method, budget)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def _mean_std(values: list[float], scale: float = 100.0) -> str:
    values = np.asarray(values, dtype=float) * scale
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}" if len(values) > 1 else f"{values.mean():.1f}"


def summaries_table(summaries: list[dict]) -> str:
    """One row per (task, method, budget): seeds, test accuracy and calibrated accuracy (mean ± std, %),
    majority-class rate, how often the first label word (" yes") is predicted, calls and wall time; then
    a budget curve table if the runs recorded one."""
    groups = defaultdict(list)
    for s in summaries:
        groups[(s["task"], s["method"], s["budget"])].append(s)
    lines = [
        "| task | method | calls | seeds | test acc % | calibrated % | majority % | predicted first label %"
        " | test n | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (task, method, budget), runs in sorted(groups.items()):
        lines.append(
            f"| {task} | {method} | {budget} | {len(runs)} | {_mean_std([r['test_accuracy'] for r in runs])} | "
            f"{_mean_std([r['test_accuracy_calibrated'] for r in runs])} | "
            f"{100 * np.mean([r['majority_rate'] for r in runs]):.1f} | "
            f"{_mean_std([r['test_predicted_share'][0] / r['test_size'] for r in runs])} | {runs[0]['test_size']} | "
            f"{np.mean([r['wall_seconds'] for r in runs]):.0f} |"
        )
    curves = defaultdict(list)
    for s in summaries:
        for point in s.get("curve", []):
            curves[(s["task"], s["method"], point["calls"])].append(point["test_accuracy"])
    if curves:
        lines += ["", "| task | method | calls | seeds | test acc % |", "|---|---|---|---|---|"]
        for (task, method, calls), accs in sorted(curves.items()):
            lines.append(f"| {task} | {method} | {calls} | {len(accs)} | {_mean_std(accs)} |")
    return "\n".join(lines) + "\n"
