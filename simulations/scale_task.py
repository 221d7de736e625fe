"""The scale runs' data: BoolQ's rows repeated as a custom task, so that up to 10,000 users each hold a few.

    python -m simulations.scale_task [--copies 40] [--out .state/scale]   # prints the spec's path

No registered task has rows for thousands of users (the largest, HellaSwag, gives 1,000 users 3 train
and 3 dev rows and some no test row; BoolQ 3,270 rows). The scale runs measure the federation, not
accuracy, so they give each user a few real BoolQ rows, the whole set repeated ``copies`` times (each
copy its own rows: uids differ, texts repeat across users). BoolQ is scored by two label words, so the
tiny backbone's forward stays a small part of a round (HellaSwag's option scoring costs ~40x more per
pair). Writes ``boolq-x<copies>.csv`` and its spec ``boolq-x<copies>.toml`` (domain commonsense, as the
preset's provider) into ``--out``. The scale presets name it as ``tasks = ".state/scale/boolq-x40.toml"``
and the tools that start their runs (local_run, profile_round, ray_cluster, the bench) write it on first
use (``resolve``), so a preset runs as written from a fresh clone.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

from simulations.local_run import ROOT


def write(copies: int, folder: Path) -> Path:
    """The CSV of BoolQ's rows ``copies`` times and its custom-task spec; returns the spec's path (kept
    when it is already there with its CSV: the same arguments always write the same files)."""
    from cbp_fed.tasks import load_task

    spec = folder / f"boolq-x{copies}.toml"
    data = spec.with_suffix(".csv")
    if spec.exists() and data.exists():
        return spec
    folder.mkdir(parents=True, exist_ok=True)
    boolq = load_task("boolq")
    tmp = data.with_suffix(".tmp")
    with tmp.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["passage", "question", "answer"])
        for _ in range(copies):
            writer.writerows([ex.passage, ex.query, str(ex.label)] for ex in boolq.examples)
    tmp.replace(data)
    words = ", ".join(f'"{w}"' for w in boolq.label_words)
    spec.write_text(
        f"# BoolQ validation x {copies} (simulations/scale_task.py): the scale runs' users' rows\n"
        f'name = "boolq-x{copies}"\ndomain = "commonsense"\nsource = "{data.name}"\n'
        'passage_template = "{passage}"\ntemplate = "{question}"\nlabel_column = "answer"\n'
        f'label_values = ["0", "1"]\nlabel_words = [{words}]\n'
    )
    return spec


SCALE_SPEC = re.compile(r"(?:^|/)\.state/scale/boolq-x(\d+)\.toml$")
"""How a run's ``tasks`` names the scale task: its spec's path in this checkout's .state/scale."""


def resolve(settings: dict) -> dict:
    """``settings`` with each scale task its ``tasks`` names written (when missing) and named by its
    absolute path: a simulated user loads its task from another working folder than this one."""
    if "tasks" not in settings:
        return settings
    tasks = []
    for task in (t.strip() for t in settings["tasks"].split(",") if t.strip()):
        named = SCALE_SPEC.search(task)
        if named:
            path = Path(task) if Path(task).is_absolute() else ROOT / task
            task = str(write(int(named[1]), path.parent))
        tasks.append(task)
    return settings | {"tasks": ",".join(tasks)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=40, help="times BoolQ's 3,270 rows are repeated")
    parser.add_argument("--out", type=Path, default=ROOT / ".state" / "scale")
    args = parser.parse_args()
    print(write(args.copies, args.out.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
