"""The provider: a Flower ServerApp that owns the frozen LLM and serves it as a black box.

It builds the run config, the backbone, the method's strategy (which trains or loads the prompt
generator), wraps the Grid in a ``MeteredGrid`` and writes the run folder: config.json, one line of
rounds.jsonl per round (accuracy, loss, calls, tokens, failures and bytes by user x type x
direction), a checkpoint after every round, summary.json, plots, and environment.json (the Python, torch and
Flower that ran it, with where torch was imported from). ``resume-from = DIR`` continues
a killed run from DIR's checkpoint, in DIR.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from . import linkstate_index
from .backbone import FrozenLM
from .checkpoint import check_resumable, load_checkpoint, save_checkpoint
from .comm import MeteredGrid, WaitProgress
from .config import RunConfig
from .privacy.transcript import TranscriptWriter
from .results import RunFolder, chance_accuracy, console_round_line, train_calls_per_user
from .tasks import MIN_TEST_TEXTS, check_run_splits

log = logging.getLogger("cbp_fed.server")
app = ServerApp()


def wait_for_users(grid: Grid, expected: int, timeout: float = 300.0, settle: float = 3.0) -> list[int]:
    """Block until at least ``expected`` users are connected and no more joined for ``settle`` seconds
    (simulated nodes register while the ServerApp is already running). Flower's ``sample_nodes`` waits
    for a minimum too, but without a deadline and returns as soon as it is reached, while more nodes
    are still registering."""
    deadline = time.time() + timeout
    nodes, last_change = [], time.time()
    while True:
        current = list(grid.get_node_ids())
        if len(current) != len(nodes):
            nodes, last_change = current, time.time()
        if len(nodes) >= expected and time.time() - last_change >= settle:
            return nodes
        if time.time() > deadline:
            raise TimeoutError(f"only {len(nodes)} of min-users={expected} users connected after {timeout:.0f} s")
        time.sleep(0.5)


def train_bytes(summary: dict, direction: str) -> dict[str, float]:
    """Mean bytes per user of one round's train.* messages in one direction (payload and wire)."""
    per_user = [
        [
            sum(c[k] for t, c in user[direction].items() if t.startswith("train."))
            for k in ("payload_bytes", "wire_bytes")
        ]
        for user in summary["users"].values()
        if any(t.startswith("train.") for t in user[direction])
    ]
    mean = np.mean(per_user, axis=0) if per_user else (0.0, 0.0)
    return {"payload": float(mean[0]), "wire": float(mean[1])}


def open_run(config: RunConfig) -> tuple[RunFolder, tuple[dict, dict] | None]:
    """The run folder and, when resuming, the checkpoint to restore; a new run never reuses a folder
    that already holds rounds (it would mix two runs' results)."""
    if config.resume_from:
        folder = Path(config.resume_from)
        run = RunFolder(folder.parent, folder.name)
        if not (run.path / "config.json").exists():
            raise FileNotFoundError(f"resume-from {folder}: no config.json there; is it a run folder?")
        check_resumable(json.loads((run.path / "config.json").read_text()), config.to_run_config())
        return run, load_checkpoint(run.path)
    run = RunFolder(config.results_dir, config.run_name or None)
    if run.rounds():
        raise FileExistsError(f"{run.path} already holds a run's rounds: choose another run-name, or resume-from it")
    run.write_config(config.to_run_config())
    return run, None


def environment(lm: FrozenLM) -> dict:
    """What ran the provider: interpreter, package versions, where torch came from (the environment
    `make setup` built, not one Flower's runtime installer made), and the backbone's dtype and device."""
    import torch

    return {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "torch": torch.__version__,
        "torch_path": str(Path(torch.__file__).parent),
        "flwr": version("flwr"),
        "transformers": version("transformers"),
        "dtype": str(lm.dtype).removeprefix("torch."),
        "device": str(lm.device),
    }


def check_data(config: RunConfig, num_users: int) -> None:
    """Refuse a run whose users cannot all train and test (``check_user_splits``), before any training.
    A custom task whose file only the users hold cannot be checked here: it is left to them."""
    try:
        sizes = check_run_splits(config, num_users)
    except FileNotFoundError as err:
        log.warning("users' data not checked (the provider cannot read it): %s", err)
        return
    log.info("users' data: rows per user (min, max) %s, %d test texts in all", sizes["per_user"], sizes["test_texts"])


def hop_progress(every: float = 10.0) -> Callable[[WaitProgress], None]:
    """A `MeteredGrid.on_wait` that logs how a hop that has waited ``every`` seconds or more stands (users
    answered and still waiting), at most once per ``every`` seconds; the same lines reach `flwr log`."""
    last = [time.monotonic()]

    def report(wait: WaitProgress) -> None:
        if wait.seconds >= every and time.monotonic() - last[0] >= every:
            last[0] = time.monotonic()
            log.info(
                "round %s | %s: %d/%d users answered, %d waiting, %.0f s",
                wait.round,
                wait.message_type,
                wait.answered,
                wait.sent,
                wait.sent - wait.answered,
                wait.seconds,
            )

    return report


def _show_progress_logs() -> None:
    """Our INFO lines (per-round progress) on stderr, without turning on every library's INFO logs."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    for name in ("cbp_fed", "strategies"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


@app.main()
def main(grid: Grid, context: Context) -> None:
    from strategies import STRATEGIES  # the strategies import torch via the library: server side only

    _show_progress_logs()
    linkstate_index.install()  # the simulation's message delivery, per node instead of per stored message
    config = RunConfig.from_run_config(context.run_config)
    run, saved = open_run(config)
    log.info("run folder %s", run.path.resolve())
    started = time.time()
    lm = FrozenLM.load(config.backbone, config.dtype, config.device)
    (run.path / "environment.json").write_text(json.dumps(environment(lm), indent=2) + "\n")
    strategy = None
    metered = MeteredGrid(grid, node_key=lambda node: strategy.partition_of.get(node, node) if strategy else node)
    metered.on_wait = hop_progress()

    def on_round(record: dict) -> None:
        summary = metered.round_summary(record["round"])
        up, down = train_bytes(summary, "up"), train_bytes(summary, "down")
        record.update(
            bytes_up_per_user=up["payload"],
            wire_up_per_user=up["wire"],
            bytes_down_per_user=down["payload"],
            wire_down_per_user=down["wire"],
            bytes=summary,
        )
        run.log_round(record)
        save_checkpoint(run.path, *strategy.checkpoint())
        log.info(console_round_line(record))

    nodes = wait_for_users(metered, config.min_users)
    if saved is None:
        check_data(config, len(nodes))
    strategy = STRATEGIES[config.method](config, lm, run.path, on_round)
    if config.record_transcript:  # what the provider sees, per user and step, for the privacy attacks
        strategy.transcript = TranscriptWriter(run.path / "transcript")
    if saved is not None:
        strategy.restore(*saved)
        run.keep_rounds(strategy.rounds_done)
        log.info("resuming after round %s", strategy.rounds_done)
    result = strategy.start(metered, num_rounds=config.num_rounds, timeout=config.round_timeout)
    rounds = run.rounds()
    if not any(r.get("users_ok") or r.get("users_evaluated") for r in rounds):  # fail the run, write no summary
        failures = str(rounds[-1].get("failures") if rounds else None)[:1000]
        raise RuntimeError(f"no user finished a round or was evaluated in {len(rounds)} round(s): {failures}")
    evaluated = [r for r in rounds if r.get("test_accuracy") is not None]
    final = evaluated[-1] if evaluated else {}
    reportable = final.get("test_examples", 0) >= MIN_TEST_TEXTS
    if evaluated and not reportable:
        log.error("only %d test texts were evaluated: no accuracy is reported", final.get("test_examples", 0))
    train_metrics = {r: dict(m) for r, m in result.train_metrics_clientapp.items()}
    plain = getattr(strategy, "plain_blackbox", None)  # the users' own options, scored without a prompt
    own_seconds = plain.meter.seconds if plain is not None else 0.0
    run.write_summary(  # every key is documented in results.SUMMARY_FIELDS (the run folder's README.md)
        {
            "method": config.method,
            "backbone": config.backbone,
            "tasks": config.task_list,
            "rounds": len(rounds),
            "resumed_after_round": saved[1]["rounds_done"] if saved else None,
            "users": len(strategy.user_z),
            # users that finished some round but whose customised z the provider no longer holds (must be none)
            "users_lost": sorted({p for r in rounds for p in r.get("users_finished", [])} - set(strategy.user_z)),
            "final_test_accuracy": final["test_accuracy"] if reportable else None,
            "final_test_accuracy_std": final["test_accuracy_std"] if reportable else None,
            "final_test_texts": final.get("test_examples", 0),
            "chance_test_accuracy": chance_accuracy(config.task_list),
            "model_calls_total_all_users": strategy.blackbox.meter.calls,
            "train_calls_per_user": train_calls_per_user(train_metrics),
            "tokens_scored_total_all_users": strategy.blackbox.meter.tokens,
            "seconds_model_forward_total": round(strategy.blackbox.meter.seconds + own_seconds, 2),
            "seconds_wall_total": round(time.time() - started, 2),
            "bytes_up_train_payload_per_user_per_round": float(np.mean([r["bytes_up_per_user"] for r in rounds])),
            "bytes_down_train_payload_per_user_per_round": float(np.mean([r["bytes_down_per_user"] for r in rounds])),
            "train_metrics": train_metrics,
        }
    )
    run.plot()
    log.info("finished: %s", run.path.resolve())
