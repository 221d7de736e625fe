"""Choose each option-scored task's scoring, summed or length-normalised, on the provider's own rows.

    python -m simulations.length_norm [--rows 100] [--out cbp_fed/tasks/length_norm.json]

lm-evaluation-harness reports both the summed option log-likelihood (acc) and the per-character one
(acc_norm); which one a small model answers better with differs by task. The rule used here: score
``--rows`` of the task's server-side rows (the provider's, never a user's) zero-shot with the bundled
backbone both ways and keep the better (ties: summed). The registry reads the committed JSON; tasks
already in it are skipped (delete an entry to measure it again).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch

from cbp_fed.backbone import FrozenLM
from cbp_fed.prompts import NoPrompt
from cbp_fed.service import BlackBox, Query
from cbp_fed.tasks.registry import load_task, task_names
from cbp_fed.tasks.splits import server_user_partition

OUT = Path(__file__).resolve().parent.parent / "cbp_fed" / "tasks" / "length_norm.json"


def measure(lm: FrozenLM, name: str, rows: int, max_tokens: int) -> dict:
    """Zero-shot accuracy of summed and per-character option scores on ``rows`` server-side rows (of those
    whose question and longest option fit ``max_tokens``)."""
    task = load_task(name)
    fits = [
        ex for ex in server_user_partition(task)[0] if len(lm.encode("", ex.query, 10**6, ex.options)) <= max_tokens
    ]
    sample = random.Random(f"length_norm/{name}").sample(fits, min(rows, len(fits)))
    box = BlackBox(lm, NoPrompt(lm.d), max_tokens=max_tokens)
    summed = []
    for i in range(0, len(sample), 16):
        chunk = sample[i : i + 16]
        query = Query(
            np.zeros((1, 0), np.float32),
            [ex.passage for ex in chunk],
            [ex.query for ex in chunk],
            task.label_words,
            options=[list(ex.options) for ex in chunk],
        )
        summed.append(box.score([query])[0][0])
    scores = np.concatenate(summed)  # (n, C)
    chars = np.array([[len(o) for o in ex.options] for ex in sample], dtype=float)
    labels = np.array([ex.label for ex in sample])
    total = float((scores.argmax(1) == labels).mean())
    normalised = float(((scores / chars).argmax(1) == labels).mean())
    return {
        "n": len(sample),
        "summed": round(total, 4),
        "normalised": round(normalised, 4),
        "length_norm": normalised > total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.manual_seed(0)
    lm = FrozenLM.load(args.backbone, dtype="fp32")
    record = {"backbone": args.backbone, "rule": "the better zero-shot accuracy on server-side rows; ties: summed"}
    choices = json.loads(args.out.read_text())["tasks"] if args.out.exists() else {}  # resumable
    for name in task_names():
        if load_task(name).scoring != "options" or name in choices:
            continue
        choices[name] = measure(lm, name, args.rows, args.max_tokens)
        print(name, choices[name], flush=True)
        args.out.write_text(json.dumps({**record, "tasks": choices}, indent=2) + "\n")


if __name__ == "__main__":
    main()
