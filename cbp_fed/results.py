"""The run folder `results/<run-name>/`: config, one JSON line per round, summary and plots.

Rounds are appended to `rounds.jsonl` as they finish, one complete line per write, so a run that is
killed keeps every round it finished and can still be plotted. Keys of a round record read here
(all optional except "round"): "users_ok", "users_failed", "train_loss", "test_accuracy",
"test_accuracy_std", "bytes_up_per_user", "bytes_down_per_user" (mean bytes per user that round)
and "seconds" (wall time of the round).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

KIB = 1024


def _json_default(value: Any) -> Any:
    """Numpy scalars and arrays as plain Python numbers and lists (json.dumps rejects them)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable: {value!r}")


def _write_json(path: Path, data: dict) -> None:
    """Write `data` to `path` atomically (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, sort_keys=True, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _default_run_name(root: Path) -> str:
    """A timestamp; suffixed with -1, -2, ... when a run started in the same second already took it."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name, suffix = stamp, 0
    while (root / name).exists():
        suffix += 1
        name = f"{stamp}-{suffix}"
    return name


class RunFolder:
    """One run's folder under `root`, created on construction; an existing folder is reused (resume)."""

    def __init__(self, root: str | Path, run_name: str | None = None) -> None:
        root = Path(root)
        if run_name is not None and (not run_name or Path(run_name).name != run_name or run_name in (".", "..")):
            raise ValueError(f"run_name must be a single folder name, got {run_name!r}")
        self.path = root / (run_name if run_name is not None else _default_run_name(root))
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def rounds_path(self) -> Path:
        """The append-only round log, `rounds.jsonl`."""
        return self.path / "rounds.jsonl"

    def write_config(self, config: dict) -> None:
        """Write `config.json` (sorted keys, indent 2)."""
        _write_json(self.path / "config.json", config)

    def write_summary(self, summary: dict) -> None:
        """Write `summary.json` (sorted keys, indent 2)."""
        _write_json(self.path / "summary.json", summary)

    def log_round(self, record: dict) -> None:
        """Append `record` as one line of `rounds.jsonl`; the line is on disk when this returns."""
        if "round" not in record:
            raise ValueError(f"a round record needs a 'round' key, got keys {sorted(record)}")
        line = json.dumps(record, default=_json_default) + "\n"
        with self.rounds_path.open("a", encoding="utf-8") as file:
            file.write(line)

    def keep_rounds(self, last: int) -> None:
        """Drop the records after round ``last`` (a resumed run redoes them), atomically."""
        kept = "".join(json.dumps(r, default=_json_default) + "\n" for r in self.rounds() if r["round"] <= last)
        tmp = self.rounds_path.with_name(self.rounds_path.name + ".tmp")
        tmp.write_text(kept, encoding="utf-8")
        os.replace(tmp, self.rounds_path)

    def rounds(self) -> list[dict]:
        """The round records logged so far, in order; [] before the first round."""
        if not self.rounds_path.exists():
            return []
        records = []
        for number, line in enumerate(self.rounds_path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{self.rounds_path}:{number} is not a JSON line: {error}") from error
        return records

    def plot(self) -> list[Path]:
        """Draw the PNGs whose keys appear in `rounds.jsonl`; returns the paths written.

        accuracy.png: "test_accuracy" per round, with a +-"test_accuracy_std" band where given;
        bytes.png: "bytes_up_per_user" and "bytes_down_per_user" per round, in KiB;
        fitness.png: "train_loss" per round. A plot whose keys never appear is skipped.
        """
        records = self.rounds()
        written = []
        for name, draw in (("accuracy", _draw_accuracy), ("bytes", _draw_bytes), ("fitness", _draw_fitness)):
            figure = Figure(figsize=(6, 4), layout="constrained")
            if draw(figure.add_subplot(), records):
                path = self.path / f"{name}.png"
                FigureCanvasAgg(figure).print_png(path)
                written.append(path)
        return written


def _series(records: list[dict], key: str) -> tuple[list, list[float]]:
    """(rounds, values) of the records that have `key` (None = not measured that round, e.g. no user
    could be evaluated); a value that is not a number is an error."""
    rounds, values = [], []
    for record in records:
        if record.get(key) is not None:
            value = record[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"round {record['round']}: {key!r} must be a number, got {value!r}")
            rounds.append(record["round"])
            values.append(float(value))
    return rounds, values


def _label(axes, ylabel: str, title: str) -> None:
    """Axis labels and title, with whole-number round ticks."""
    axes.set(xlabel="round", ylabel=ylabel, title=title)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _draw_accuracy(axes, records: list[dict]) -> bool:
    rounds, accuracy = _series(records, "test_accuracy")
    if not rounds:
        return False
    axes.plot(rounds, accuracy, marker="o", label="test accuracy (mean over users)")
    std_by_round = dict(zip(*_series(records, "test_accuracy_std")))
    band = [(r, a, std_by_round[r]) for r, a in zip(rounds, accuracy) if r in std_by_round]
    if band:
        band_rounds, mean, std = zip(*band)
        axes.fill_between(
            band_rounds,
            [m - s for m, s in zip(mean, std)],
            [m + s for m, s in zip(mean, std)],
            alpha=0.25,
            label="±1 std",
        )
    _label(axes, "accuracy", "Test accuracy")
    axes.legend()
    return True


def _draw_bytes(axes, records: list[dict]) -> bool:
    drawn = False
    for key, label in (("bytes_up_per_user", "up (user → server)"), ("bytes_down_per_user", "down (server → user)")):
        rounds, values = _series(records, key)
        if rounds:
            axes.plot(rounds, [v / KIB for v in values], marker="o", label=label)
            drawn = True
    if drawn:
        _label(axes, "KiB per user", "Communication per user")
        axes.legend()
    return drawn


def _draw_fitness(axes, records: list[dict]) -> bool:
    rounds, loss = _series(records, "train_loss")
    if not rounds:
        return False
    axes.plot(rounds, loss, marker="o")
    _label(axes, "train loss", "Training fitness (mean over users)")
    return True


def console_round_line(record: dict) -> str:
    """One line of progress for a round record, with only the parts the record has.

    e.g. "round 3 | users 10 ok, 1 failed | loss 0.4321 | acc 0.8125 ± 0.0400 | up 1.2 KiB, down 4.5 KiB per
    user | 12.3 s"
    """
    parts = [f"round {record['round']}"]
    if "users_ok" in record or "users_failed" in record:
        parts.append(f"users {record.get('users_ok', 0)} ok, {record.get('users_failed', 0)} failed")
    if "train_loss" in record:
        parts.append(f"loss {record['train_loss']:.4f}")
    if record.get("test_accuracy") is not None:  # None when no user could be evaluated
        accuracy = f"acc {record['test_accuracy']:.4f}"
        if record.get("test_accuracy_std") is not None:
            accuracy += f" ± {record['test_accuracy_std']:.4f}"
        parts.append(accuracy)
    traffic = [
        f"{direction} {record[key] / KIB:.1f} KiB"
        for direction, key in (("up", "bytes_up_per_user"), ("down", "bytes_down_per_user"))
        if key in record
    ]
    if traffic:
        parts.append(", ".join(traffic) + " per user")
    if "seconds" in record:
        parts.append(f"{record['seconds']:.1f} s")
    return " | ".join(parts)
