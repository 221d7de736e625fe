"""What a federated run cost: time per round, framework time per message, bytes vs the payload floor.

    python -m simulations.federation_report results/<run> [results/<run> ...]

Per run (from rounds.jsonl, summary.json and local_run.json): users, mean wall seconds per round,
the share of a round spent in the model forward, framework time per user message (round time
outside the BlackBox forward, divided by the messages exchanged), up bytes per user per round for
the train.* messages against the payload floor (texts once + K populations + batch indices + the
final z) with the per-message overhead, down bytes per user per round, and the peak memory of all
Flower/Ray processes. FedBPT's reference design ships its pickled CMA-ES (~4.3 MB at r = 500) down to
every user every round (docs/method.md): the last column compares our down bytes with that.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

FEDBPT_DOWN_BYTES = 4.3e6


def run_row(folder: Path) -> dict:
    rounds = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]
    config = json.loads((folder / "config.json").read_text())
    monitor = folder / "local_run.json"
    peak = json.loads(monitor.read_text())["peak_rss_gib"] if monitor.exists() else None
    messages = [
        sum(c["messages"] for u in r["bytes"]["users"].values() for d in u.values() for c in d.values()) for r in rounds
    ]
    up_messages = config["steps-per-round"] + 1
    seconds = np.array([r["seconds"] for r in rounds])
    forward = np.array([r["forward_seconds"] for r in rounds])
    up = np.mean([r["bytes_up_per_user"] for r in rounds])
    floor = np.mean([r["bytes_up_minimum_per_user"] for r in rounds])
    down = np.mean([r["bytes_down_per_user"] for r in rounds])
    return {
        "run": folder.name,
        "backbone": config["backbone"],
        "users": rounds[0]["users_sampled"],
        "rounds": len(rounds),
        "users_ok": min(r["users_ok"] for r in rounds),
        "round_s": seconds.mean(),
        "forward_share": forward.sum() / seconds.sum(),
        "framework_ms_per_msg": 1000 * (seconds - forward).sum() / sum(messages),
        "up_bytes": up,
        "floor_bytes": floor,
        "overhead_per_msg": (up - floor) / up_messages,
        "down_bytes": down,
        "fedbpt_ratio": FEDBPT_DOWN_BYTES / down,
        "peak_gib": peak,
        "accuracy": [r.get("test_accuracy") for r in rounds],
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| run | backbone | users (ok) | rounds | s/round | forward share | framework ms/msg | up B/user/round "
        "(floor, overhead/msg) | down B/user/round (FedBPT ref. / ours) | peak GiB | test acc per round |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        acc = ", ".join("-" if a is None else f"{100 * a:.1f}" for a in r["accuracy"])
        lines.append(
            f"| {r['run']} | {r['backbone']} | {r['users']} ({r['users_ok']}) | {r['rounds']} | {r['round_s']:.1f} | "
            f"{100 * r['forward_share']:.0f}% | {r['framework_ms_per_msg']:.1f} | {r['up_bytes']:,.0f} "
            f"({r['floor_bytes']:,.0f}, +{r['overhead_per_msg']:,.0f}) | {r['down_bytes']:,.0f} "
            f"({r['fedbpt_ratio']:,.0f}x less) | {r['peak_gib'] if r['peak_gib'] is not None else '-'} | {acc} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    print(table([run_row(folder) for folder in parser.parse_args().runs]))


if __name__ == "__main__":
    main()
