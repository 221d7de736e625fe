"""The run folder `results/<run-name>/`: config, one JSON line per round, summary, plots and a README.

Rounds are appended to `rounds.jsonl` as they finish, one complete line per write, so a run that is
killed keeps every round it finished and can still be plotted. Every file and every field of a round
record and of `summary.json` is documented here (`RUN_FILES`, `ROUND_FIELDS`, `SUMMARY_FIELDS`) and
written into the folder's README.md, so a run folder explains itself; `cbp-fed customize` folders get
theirs from `CUSTOMIZE_FILES` and `CUSTOMIZE_SUMMARY_FIELDS`. Summaries written before the summary keys
got their units and scope are read with `upgrade_summary` (`RENAMED_SUMMARY_KEYS`).
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

CALL = "one model call = one candidate prompt scored on one batch of texts"
RUN_FILES = {
    "README.md": "this file: what each file holds, every field with its unit and scope",
    "config.json": "the run config as run: the `[tool.flwr.app.config]` keys of pyproject.toml with this run's "
    "overrides; written at the start",
    "environment.json": "what ran the provider: Python, torch (and where it was imported from), Flower, "
    "transformers, the backbone's dtype and device",
    "rounds.jsonl": "one JSON object per finished round (fields below), appended as each round ends, so a killed "
    "run keeps the rounds it finished",
    "summary.json": "the run's totals (fields below), written when the run ends",
    "checkpoint.safetensors": "the provider's state after the last finished round (users' z, prior, meter, RNG), "
    "for `resume-from`",
    "accuracy.png": "test accuracy (%) per round: the evaluated users' texts pooled, a ±1 std band over users, the "
    "users' start and the chance level",
    "bytes.png": "KiB per user per round of the train.* messages (payload), up and down",
    "fitness.png": "train loss per round (over the users that finished it, weighted by their texts), on an axis from 0",
    "generator/": "the SDT prompt generator the provider trained for this run (cbp and sdt-only without a "
    "`generator` setting)",
    "transcript/": "with `record-transcript = true`: what the provider saw, per user and step, for `cbp-fed "
    "attack` (described by its own schema.json)",
    "privacy/": "the results of `cbp-fed attack` on the transcript, one JSON file per attack",
    "local_run.json": "written by `python -m simulations.local_run`: Flower's run id, its status, elapsed "
    "seconds and the peak memory (GiB) of the Flower/Ray processes",
}
SUMMARY_FIELDS = {
    "method": "the method: cbp, bbt, fedbpt, or the evaluation-only zero-shot and sdt-only",
    "backbone": "the frozen LLM the provider served (registry name, folder or hub id)",
    "tasks": "the users' tasks (list of names)",
    "rounds": "rounds in rounds.jsonl (count)",
    "resumed_after_round": "the round this run was resumed after (`resume-from`); null if never interrupted",
    "users": "users whose customised z the provider holds at the end (count)",
    "users_lost": "partition ids of users that finished a round but whose z the provider no longer holds (must be [])",
    "final_test_accuracy": "test accuracy at the last evaluated round, fraction 0-1, over the users evaluated, "
    "each on its own test texts, weighted by their test texts (the texts pooled); null if no user could be "
    "evaluated or they had fewer than MIN_TEST_TEXTS (20) test texts in all (an accuracy from so few texts is "
    "not a result)",
    "final_test_texts": "test texts the users evaluated at the last evaluated round had in all",
    "final_test_accuracy_std": "standard deviation over those users of their test accuracy, fraction 0-1",
    "chance_test_accuracy": "accuracy of a uniformly random answer, fraction 0-1: mean over the tasks of "
    "1 / answers; null when the provider cannot read a task (a custom task whose file only the users hold)",
    "model_calls_total_all_users": f"model calls the provider served in the whole run, all users together: "
    f"search, dev selection and evaluation ({CALL})",
    "train_calls_per_user": "CMA-ES search calls of one user over all rounds, mean over the users that finished "
    "the last round (the budget compared between methods; selection and evaluation calls are extra); null for "
    "zero-shot and sdt-only",
    "tokens_scored_total_all_users": "tokens the model ran in the whole run, all users together (options included)",
    "seconds_model_forward_total": "seconds spent in the model forward for all users together (provider side; "
    "their own options' prompt-free scoring included)",
    "seconds_wall_total": "wall seconds of the ServerApp from start to summary (loading the backbone, waiting for "
    "users and every round); a resumed run counts from its resume",
    "bytes_up_train_payload_per_user_per_round": "bytes of a user's train.* replies per round (payload, deflated), "
    "mean over the users and then over the rounds",
    "bytes_down_train_payload_per_user_per_round": "bytes of the train.* messages to a user per round (payload, "
    "deflated), mean over the users and then over the rounds",
    "train_metrics": "per round (key: round number), means over the users that finished it: train-loss and "
    "best-loss (nats, cross-entropy, or the hinge loss; noisy under selection-noise), calls (search calls per "
    "user so far, cumulative), dev-accuracy and dev-accuracy-before (fraction 0-1, with dev selection and no "
    "selection-noise), kept-earlier-share (fraction of "
    "users that kept their earlier z), global-sigma and global-told (fedbpt: next sigma, means told to CMA-ES)",
}
RENAMED_SUMMARY_KEYS = {
    "calls": "model_calls_total_all_users",
    "tokens": "tokens_scored_total_all_users",
    "forward_seconds": "seconds_model_forward_total",
    "wall_seconds": "seconds_wall_total",
    "mean_bytes_up_per_user_round": "bytes_up_train_payload_per_user_per_round",
    "mean_bytes_down_per_user_round": "bytes_down_train_payload_per_user_per_round",
}
"""Old federated summary.json key -> its name since the keys carry units and scope."""
ROUND_FIELDS = {
    "round": "the round number, from 1",
    "users_sampled": "users sent train.begin this round (count)",
    "users_ok": "users that finished the round (count)",
    "users_failed": "users sampled that did not finish it (count)",
    "users_finished": "partition ids of the users that finished it",
    "failures": "one {node_id, stage, reason} per user dropped this round",
    "train_loss": "mean over the users that finished of their training loss, weighted by their training texts "
    "(nats for cross-entropy)",
    "best_loss": "mean over those users of the best candidate's batch loss, weighted as train_loss",
    "dev_accuracy": "mean over those users of the kept z's dev accuracy, weighted as train_loss, fraction 0-1 "
    "(with dev selection)",
    "dev_accuracy_before": "mean over those users of the dev accuracy of the z they kept before, weighted as "
    "train_loss, fraction 0-1",
    "kept_earlier_share": "fraction of those users that kept their earlier z",
    "global_sigma": "fedbpt: the global CMA-ES sigma broadcast next round",
    "global_told": "fedbpt: users' means told to the global CMA-ES (0 for a mean-only round)",
    "start_test_accuracy": "round 1: test accuracy of the start vector before any training, fraction 0-1, "
    "weighted as test_accuracy",
    "start_users": "round 1: users evaluated at the start (count)",
    "test_accuracy": "test accuracy after the round, fraction 0-1, over the users evaluated weighted by their "
    "test texts (the texts pooled); null if none",
    "test_accuracy_std": "standard deviation of their accuracies over those users (unweighted), fraction 0-1",
    "users_evaluated": "users evaluated after the round (count)",
    "protected_test_accuracy": "test accuracy of the option each protecting user ends on (its prompt, or an option "
    "it has without the provider when its dev rows do not favour the prompt), weighted as test_accuracy, over "
    "protected_users; never counted as the method's own accuracy",
    "protected_own_share": "fraction of those users that end on an option of their own (no prompt)",
    "protected_users": "users that reported a protected choice (count)",
    "own_best_test_accuracy": "test accuracy of each protecting user's best option of its own on its test rows, "
    "picked in hindsight (an upper bar: the maximum of several noisy accuracies), weighted as test_accuracy",
    "protected_vs_own_best": "mean over protecting users of (accuracy of the option it ends on - its "
    "own_best_test_accuracy), fraction; below 0 when users end below their own best option",
    "protected_vs_own_best_ci95": "half-width of a normal 95% interval of protected_vs_own_best over users",
    "protected_below_own_best": "protecting users that end strictly below their own best option on test (count)",
    "own_test_accuracy": "{option: test accuracy had every protecting user kept that own option}, weighted as "
    "test_accuracy: the best of them is a bar one choice for all users would reach",
    "user_test_accuracy": "{partition id: that user's prompt accuracy on its own test rows}, so two runs over the "
    "same partitions compare user by user",
    "end_vs_start": "mean over the users evaluated at the start and now of (accuracy of what each ends on: the "
    "option it keeps when it protects, else its prompt - its start vector's accuracy in round 1), fraction",
    "end_vs_start_ci95": "half-width of a normal 95% interval of end_vs_start over those users",
    "end_below_start": "partition ids of those users that end strictly below their own start on test",
    "own_calls": "calls served without a prompt for the users' own options this round (one per user that asked)",
    "test_examples": "test texts scored in that evaluation, all users together (count)",
    "calls": f"model calls served this round, all users together: search, dev selection and evaluation ({CALL})",
    "tokens": "tokens the model ran this round, all users together",
    "forward_seconds": "seconds in the model forward this round, all users together (their own options' "
    "prompt-free scoring included)",
    "seconds": "wall seconds of the round",
    "bytes_up_per_user": "bytes of a user's train.* replies this round (payload, deflated), mean over users",
    "wire_up_per_user": "the same with Flower's message metadata (wire bytes)",
    "bytes_down_per_user": "bytes of the train.* messages to a user this round (payload, deflated), mean over users",
    "wire_down_per_user": "the same with Flower's message metadata (wire bytes)",
    "bytes_up_minimum_per_user": "the payload floor of a user's train.* replies: its texts once, every population, "
    "its batches and the final z (bytes, mean over users)",
    "bytes": "every message this round: users -> partition id -> down/up -> message type -> {messages, "
    "payload_bytes, wire_bytes, errors}, and the totals per direction",
}
CUSTOMIZE_FILES = {
    "README.md": "this file: every field of summary.json with its unit and scope",
    "summary.json": "one user's customisation in one process (`cbp-fed customize`, no Flower): fields below",
    "task.toml": "only when --task was a data file: the task spec inferred from its columns, which the run used "
    "(copy it to change the columns, templates or label words)",
}
CUSTOMIZE_SUMMARY_FIELDS = {
    "task": "the user's task",
    "domain": "the task's domain",
    "method": "majority, zero-shot, calibrated, calibrated-fit, icl (no provider prompt), sdt-only, bbt or cbp",
    "seed": "the seed of the user's split, search and mini-batches",
    "scoring": "how answers are scored: label words, or options (summed or length-normalised)",
    "budget": "search calls allowed (0 without a search)",
    "calls_used": f"search calls spent ({CALL})",
    "sigma0": "the search's initial step size (null without a search)",
    "backbone": "the frozen LLM",
    "dtype": "its dtype",
    "train_size": "the user's training texts (count)",
    "train_label_share": "fraction of the training texts per answer",
    "batch_size": "training texts per call (null without a search)",
    "dev_size": "the user's dev texts (count)",
    "test_size": "the user's test texts (count)",
    "eval_split": "the split the accuracies below are on: test, or dev (then their prefix is dev_)",
    "test_accuracy": "accuracy of the method (with a search: the kept z, the search's own result), fraction 0-1",
    "test_correct": "which test rows it answers right, one 0/1 character per row in row order (paired comparisons)",
    "test_accuracy_calibrated": "the same prompt with its content-free prior divided out (N/A, '', [MASK] in the "
    "task's template), fraction 0-1",
    "test_predicted_share": "how often each answer was predicted (counts, in answer order)",
    "dev_accuracy": "the kept z's dev accuracy, fraction 0-1 (eval_split dev: its accuracy on dev)",
    "dev_accuracy_calibrated": "eval_split dev: the calibrated dev accuracy, fraction 0-1",
    "dev_predicted_share": "eval_split dev: how often each answer was predicted on dev (counts)",
    "start_test_accuracy": "accuracy of the start vector, fraction 0-1",
    "start_dev_accuracy": "eval_split dev: the start vector's dev accuracy, fraction 0-1",
    "majority_rate": "accuracy of always answering the most frequent answer of the evaluated texts, fraction 0-1",
    "baselines": "test accuracy of each option the user has without the provider's generator: majority (of its "
    "train rows), zero-shot, calibrated (content-free), calibrated-fit (offsets fitted on its train rows)",
    "baselines_correct": "which test rows each of those answers right (0/1 per row)",
    "protected": "with a prompt and dev rows: the option the user ends on (option), its test and dev accuracy, and "
    "protection: the rule, the best own option on train (left out one at a time) and dev rows (baseline; "
    "own_rows, own_accuracy, own_loss), the best prompt option on dev (contender), their discordant dev rows "
    "(wins, losses), the sign test's p_value and alpha, every option's dev and test accuracy and which test "
    "rows each answers right (test_correct)",
    "demonstrations": "icl: demonstrations in front of each test row (mean, min, max)",
    "kept": "the kept point (start, mean@calls or best@calls) with its dev accuracy and loss; null without selection",
    "selection": "every point scored on dev: calls, point, dev_accuracy (fraction), dev_loss (nats)",
    "selection_calls": "calls spent scoring those points on dev",
    "best_train_loss": "the best batch loss the search saw (null without a search)",
    "curve": "accuracy at each checkpoint: calls (the checkpoint), calls_used (search calls so far: whole "
    "populations, so at least calls), kept point, the accuracies above",
    "calls_total": "all model calls of the run: search, dev selection, evaluation and the own options",
    "own_calls": "with a prompt: calls without a prompt (the own options' train, dev and test scores)",
    "eval_calls": "calls spent on evaluation (calls_total minus search and selection)",
    "tokens_scored": "tokens the model ran, all calls",
    "forward_seconds": "seconds in the model forward",
    "wall_seconds": "wall seconds of the whole customisation",
    "z_norm": "Euclidean norm of the kept z",
    "z_distance_from_start": "Euclidean distance of the kept z from the start vector",
    "search_dimensions": "coordinates the search moved in: r, or K with --subspace (0 without a search)",
    "config": "the CustomizeConfig as run",
    "bbt_r": "bbt: the dimension of z",
    "bbt_t": "bbt: the prompt length in tokens",
    "generator": "cbp, sdt-only: the SDT generator's folder",
    "generator_domain": "the domain it was trained on",
    "generator_data": "the fingerprint of its training data",
}


def train_calls_per_user(train_metrics: dict) -> float | None:
    """The search calls per user so far at the last round with train metrics (keys: round numbers, as ints
    or JSON strings); None when no user trained (the evaluation-only methods)."""
    if not train_metrics:
        return None
    return train_metrics[max(train_metrics, key=int)].get("calls")


def upgrade_summary(summary: dict) -> dict:
    """A federated summary.json with today's key names: older keys renamed (`RENAMED_SUMMARY_KEYS`) and
    `train_calls_per_user` derived from the train metrics where it is missing."""
    upgraded = {RENAMED_SUMMARY_KEYS.get(key, key): value for key, value in summary.items()}
    upgraded.setdefault("train_calls_per_user", train_calls_per_user(upgraded.get("train_metrics") or {}))
    return upgraded


def chance_accuracy(tasks: list[str] | tuple[str, ...]) -> float | None:
    """Accuracy of a uniformly random answer: the mean over `tasks` of 1 / answers. None when a task cannot
    be read here (a custom task whose file only the users hold), as the ServerApp's data check allows."""
    from .tasks import load_task_spec

    try:
        answers = [len(load_task_spec(task).label_words) for task in tasks]
    except FileNotFoundError:
        return None
    return sum(1 / n for n in answers) / len(answers) if answers else None


def readme_text(title: str, files: dict[str, str], tables: dict[str, dict[str, str]]) -> str:
    """A run folder's README.md: a title, what each file holds, then one table per JSON file of its fields."""
    lines = [f"# {title}", "", "## Files", "", "| file | what it holds |", "|---|---|"]
    lines += [f"| `{name}` | {text} |" for name, text in files.items()]
    for heading, fields in tables.items():
        lines += ["", f"## {heading}", "", "| field | meaning (unit, scope) |", "|---|---|"]
        lines += [f"| `{key}` | {text} |" for key, text in fields.items()]
    return "\n".join(lines) + "\n"


def write_customize_readme(folder: str | Path) -> None:
    """README.md of a `cbp-fed customize` output folder."""
    text = readme_text(
        "A one-process customisation (cbp-fed customize)",
        CUSTOMIZE_FILES,
        {"summary.json": CUSTOMIZE_SUMMARY_FIELDS},
    )
    (Path(folder) / "README.md").write_text(text, encoding="utf-8")


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
        """Write `config.json` (sorted keys, indent 2) and the folder's README.md."""
        _write_json(self.path / "config.json", config)
        self.write_readme()

    def write_summary(self, summary: dict) -> None:
        """Write `summary.json` (sorted keys, indent 2) and the folder's README.md (a folder made before
        READMEs existed gets one when its resumed run ends)."""
        _write_json(self.path / "summary.json", summary)
        self.write_readme()

    def write_readme(self) -> None:
        """README.md: every file of a run folder and every field of rounds.jsonl and summary.json."""
        text = readme_text(
            "A federated run (Flower ServerApp)",
            RUN_FILES,
            {"summary.json": SUMMARY_FIELDS, "rounds.jsonl (one JSON object per line)": ROUND_FIELDS},
        )
        (self.path / "README.md").write_text(text, encoding="utf-8")

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

    def figures(self) -> dict[str, Figure]:
        """The figures whose keys appear in `rounds.jsonl`, by name; a figure whose keys never appear is skipped.

        accuracy: "test_accuracy" per round in %, a ±"test_accuracy_std" band where given, and the chance
        level when summary.json gives it ("chance_test_accuracy"), the users' start when round 1 measured it
        ("start_test_accuracy"); bytes: "bytes_up_per_user" and
        "bytes_down_per_user" per round, in KiB; fitness: "train_loss" per round, on an axis from 0 (a loss
        is never negative: a zoomed axis would make small changes look large).
        """
        records = self.rounds()
        summary_path = self.path / "summary.json"
        chance = json.loads(summary_path.read_text()).get("chance_test_accuracy") if summary_path.exists() else None
        drawers = {
            "accuracy": lambda axes: _draw_accuracy(axes, records, chance),
            "bytes": lambda axes: _draw_bytes(axes, records),
            "fitness": lambda axes: _draw_fitness(axes, records),
        }
        figures = {}
        for name, draw in drawers.items():
            figure = Figure(figsize=(7, 4), layout="constrained")
            if draw(figure.add_subplot()):
                figures[name] = figure
        return figures

    def plot(self) -> list[Path]:
        """Write `figures()` as `<name>.png`; returns the paths written."""
        written = []
        for name, figure in self.figures().items():
            path = self.path / f"{name}.png"
            FigureCanvasAgg(figure).print_png(path)
            written.append(path)
        return written


def legend_below(figure, axes) -> None:
    """One legend for a figure (each label once over the panels `axes`), below them, where it cannot cover
    a line or a bar. The figure needs layout="constrained"."""
    entries = {}
    for ax in axes:
        entries.update((label, handle) for handle, label in zip(*ax.get_legend_handles_labels()))
    figure.legend(entries.values(), entries.keys(), loc="outside lower center", ncols=min(len(entries), 4), fontsize=8)


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
    """Axis labels, title, whole-number round ticks, and the legend (if any line has a label) outside the
    axes, where it cannot hide a line."""
    axes.set(xlabel="round", ylabel=ylabel, title=title)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)


def _draw_accuracy(axes, records: list[dict], chance: float | None) -> bool:
    rounds, accuracy = _series(records, "test_accuracy")
    if not rounds:
        return False
    percent = [100 * a for a in accuracy]
    axes.plot(rounds, percent, marker="o", label="test accuracy\n(users' texts pooled)")
    std_by_round = dict(zip(*_series(records, "test_accuracy_std")))
    band = [(r, a, 100 * std_by_round[r]) for r, a in zip(rounds, percent) if r in std_by_round]
    if band:
        band_rounds, mean, std = zip(*band)
        axes.fill_between(
            band_rounds,
            [m - s for m, s in zip(mean, std)],
            [m + s for m, s in zip(mean, std)],
            alpha=0.25,
            label="±1 std over users",
        )
    start = records[0].get("start_test_accuracy")
    if start is not None:  # what every round is measured against: the users' start vectors, before any search
        axes.axhline(100 * start, color="tab:grey", linestyle=":", label="start (before round 1)")
    if chance is not None:
        axes.axhline(100 * chance, color="black", linestyle="--", linewidth=0.8, label="chance (1 / answers)")
    _label(axes, "test accuracy (%)", "Test accuracy")
    return True


def _draw_bytes(axes, records: list[dict]) -> bool:
    drawn = False
    for key, label in (("bytes_up_per_user", "up (user → server)"), ("bytes_down_per_user", "down (server → user)")):
        rounds, values = _series(records, key)
        if rounds:
            axes.plot(rounds, [v / KIB for v in values], marker="o", label=label)
            drawn = True
    if drawn:
        _label(axes, "KiB per user per round", "Communication per user (train.* payload)")
    return drawn


def _draw_fitness(axes, records: list[dict]) -> bool:
    rounds, loss = _series(records, "train_loss")
    if not rounds:
        return False
    axes.plot(rounds, loss, marker="o")
    axes.set_ylim(bottom=0)
    _label(axes, "train loss (0 = perfect)", "Training fitness (users weighted by their texts)")
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


def method_label(method: str, subspace: int | None) -> str:
    """A run's method in the result tables: CBP is ``cbp`` when it searched the subspace of the SDT task
    vectors (``subspace`` K >= 1) and ``cbp-full`` when it searched all r coordinates of z."""
    if method != "cbp":
        return method
    return "cbp" if subspace else "cbp-full"
