"""Failures, a robust prior and resume: the round survives users that crash, answer late or go away,
their state survives with them, poisoned vectors barely move the prior, and a provider killed
mid-run resumes to the same results as a run that was never interrupted."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Context, Message, RecordDict

from cbp_fed import protocol as wire
from cbp_fed.checkpoint import load_checkpoint
from cbp_fed.config import RunConfig
from cbp_fed.faults import parse_faults
from cbp_fed.prompts import PromptGenerator
from cbp_fed.search import CMASearch
from cbp_fed.server_app import app as server_app
from cbp_fed.service import BlackBox
from strategies import CBPStrategy
from strategies.cbp import domain_prior

from .loopback import LoopbackGrid

pytestmark = pytest.mark.usefixtures("task_identity")

R, K, POP = 16, 2, 4
SMALL = dict(
    backbone="tiny-random", tasks="sst2", r=R, m=8, t=2, popsize=POP, steps_per_round=K, n_test=12, shots_per_class=3
)


# ----------------------------------------------------------------------------- fault plans
def test_fault_plans_parse_and_bad_ones_name_the_entry():
    faults = parse_faults("crash:1@2, late:2@2,away:3@2-4")
    assert [(f.kind, f.partition, f.first, f.last) for f in faults] == [
        ("crash", 1, 2, 2),
        ("late", 2, 2, 2),
        ("away", 3, 2, 4),
    ]
    for bad in ("explode:1@2", "crash:1", "crash:x@2", "away:1@3-2", "crash:1@0"):
        with pytest.raises(ValueError, match="fault"):
            parse_faults(bad)
    with pytest.raises(ValueError, match="'inject-faults'"):
        RunConfig(inject_faults="crash:1")


def test_crashed_late_and_away_users_are_recorded_keep_their_state_and_rejoin(tiny):
    # the late user sleeps past the timeout; 5 s leaves the others' replies room on a loaded machine
    run = RunConfig(**SMALL, num_rounds=3, round_timeout=5.0, inject_faults="crash:1@2,late:2@2,away:3@1-2")
    gen = PromptGenerator(tiny.d, r=R, m=8, t=2, a_seed=0)
    records = []
    strategy = CBPStrategy.from_config(
        run, BlackBox(tiny, gen, max_tokens=96), np.zeros(R, np.float32), domain="general", on_round=records.append
    )
    finished_z = {}  # partition -> z after each round, to check nothing a user finished is lost
    original_aggregate = strategy.aggregate

    def remember(server_round):
        original_aggregate(server_round)
        finished_z.update({p: z.copy() for p, z in strategy.user_z.items()})

    strategy.aggregate = remember
    grid = LoopbackGrid(5, run.to_run_config())
    strategy.start(grid, num_rounds=3, timeout=run.round_timeout)

    assert [r["users_ok"] for r in records] == [4, 2, 5]  # round 1: user 3 away; round 2: 1, 2, 3 out; all back
    reasons = {(r["round"], f["node_id"] - 1000, f["stage"]): f["reason"] for r in records for f in r["failures"]}
    assert "unreachable" in reasons[(1, 3, wire.BEGIN)]
    assert "crashed (injected)" in reasons[(2, 1, wire.FINISH)]
    assert "no reply within 5 s" in reasons[(2, 2, wire.FINISH)]
    assert "unreachable" in reasons[(2, 3, wire.BEGIN)]
    assert records[2]["failures"] == [] and records[2]["users_evaluated"] == 5
    # user 1's optimiser went on from where the crash left it: rounds 1 and 3 in full, and the K
    # generations of round 2 told before it crashed at train.finish (after its train.select)
    saved = grid.contexts[1001].state.config_records["search"]
    assert CMASearch.from_bytes(saved["blob"]).calls == (K + K + K) * POP
    # user results lost: none. Every user that ever finished has its latest z in the registry
    assert sorted(strategy.user_z) == [0, 1, 2, 3, 4] == sorted(finished_z)


# ----------------------------------------------------------------------------- robust prior
def test_a_poisoned_minority_barely_moves_the_median_or_trimmed_prior():
    rng = np.random.default_rng(0)
    honest = rng.normal(0.0, 0.1, size=(10, R))
    poisoned = np.vstack([honest, np.full((3, R), 50.0)])  # 3 of 13 users send huge vectors
    clean = np.median(honest, axis=0)
    for how in ("median", "trimmed-mean"):
        shift = np.abs(domain_prior(poisoned, how, trim=0.25) - clean).max()
        assert shift < 0.15, how
    assert np.abs(domain_prior(poisoned, "mean") - clean).max() > 10  # the plain mean is dragged away
    np.testing.assert_allclose(domain_prior(honest, "trimmed-mean", trim=0.0), honest.mean(0), rtol=1e-6)


# ----------------------------------------------------------------------------- resume
class Killed(BaseException):
    """The provider's process dying (not an Exception: nothing in the app may catch it)."""


def _server_run(run_config: dict, grid: LoopbackGrid) -> None:
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)
    server_app(grid, context)


def _kill_at_second_step_of_round_2(grid: LoopbackGrid) -> None:
    original = grid.send_and_receive

    def send(messages, timeout=None):
        messages = list(messages)
        if messages and messages[0].metadata.group_id == "2" and messages[0].metadata.message_type == wire.FINISH:
            raise Killed()
        return original(messages, timeout=timeout)

    grid.send_and_receive = send


def _results(folder) -> tuple[list[dict], dict]:
    keys = ("round", "users_ok", "train_loss", "best_loss", "calls", "tokens", "test_accuracy", "bytes_up_per_user")
    rounds = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]
    arrays, _ = load_checkpoint(folder)
    return [{k: r.get(k) for k in keys} for r in rounds], arrays


def test_a_provider_killed_mid_run_resumes_to_the_same_results(tmp_path):
    """Uninterrupted vs killed in round 2 (after its scores went out) and resumed in a fresh 'run'
    (new user contexts: only the users' own disk and the provider's checkpoint survive)."""

    def config(name: str, **extra) -> dict:
        return RunConfig(
            **SMALL,
            num_rounds=3,
            sdt_steps=2,
            min_users=3,
            results_dir=str(tmp_path),
            run_name=name,
            user_state_dir=str(tmp_path / "users"),
            **extra,
        ).to_run_config()

    _server_run(config("run-a"), LoopbackGrid(3, config("run-a")))

    killed = LoopbackGrid(3, config("run-b"))
    _kill_at_second_step_of_round_2(killed)
    with pytest.raises(Killed):
        _server_run(config("run-b"), killed)
    assert [r["round"] for r in _results(tmp_path / "run-b")[0]] == [1]
    with pytest.raises(FileExistsError, match="resume-from"):  # a plain rerun may not mix into it
        _server_run(config("run-b"), LoopbackGrid(3, config("run-b")))
    with pytest.raises(ValueError, match="popsize"):  # resuming with other settings is refused
        bad = {**config("run-b", resume_from=str(tmp_path / "run-b")), "popsize": POP + 1}
        _server_run(bad, LoopbackGrid(3, bad))

    resumed = config("run-b", resume_from=str(tmp_path / "run-b"))
    _server_run(resumed, LoopbackGrid(3, resumed))

    rounds_a, arrays_a = _results(tmp_path / "run-a")
    rounds_b, arrays_b = _results(tmp_path / "run-b")
    assert [r["round"] for r in rounds_b] == [1, 2, 3]
    assert rounds_a == rounds_b
    assert sorted(arrays_a) == sorted(arrays_b) == ["prior", "user-0", "user-1", "user-2"]
    for key in arrays_a:
        np.testing.assert_array_equal(arrays_a[key], arrays_b[key])
    summary = json.loads((tmp_path / "run-b" / "summary.json").read_text())
    assert summary["resumed_after_round"] == 1 and summary["rounds"] == 3


def test_a_run_whose_users_all_fail_fails_and_writes_no_summary(tmp_path):
    """Every user away in every round: the ServerApp raises (Flower marks the run failed) instead of
    finishing with a summary that a resumable sweep would take for a finished run."""
    config = RunConfig(
        **SMALL,
        num_rounds=2,
        sdt_steps=2,
        min_users=2,
        results_dir=str(tmp_path),
        run_name="all-away",
        inject_faults="away:0@1-2,away:1@1-2",
        eval_start=False,
    ).to_run_config()
    with pytest.raises(RuntimeError, match="no user finished a round"):
        _server_run(config, LoopbackGrid(2, config))
    assert [r["users_ok"] for r in _results(tmp_path / "all-away")[0]] == [0, 0]
    assert not (tmp_path / "all-away" / "summary.json").exists()


def test_resume_from_a_folder_without_a_checkpoint_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text(json.dumps(RunConfig(**SMALL).to_run_config()))
    resumed = RunConfig(**SMALL, resume_from=str(tmp_path / "empty")).to_run_config()
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        _server_run(resumed, LoopbackGrid(2, resumed))


def test_users_refuse_steps_of_a_round_they_did_not_begin_and_path_like_run_keys():
    run = RunConfig(**SMALL).to_run_config()
    grid = LoopbackGrid(1, run)
    step = Message(wire.scores(np.zeros((POP, 6, 2))), dst_node_id=1000, message_type=wire.STEP, group_id="1")
    reply = grid.send_and_receive([step])[0]
    assert reply.has_error() and "without a train.begin" in reply.error.reason
    for key in ("../../etc", "a/b", ""):
        begin = Message(wire.start(1, np.zeros(R), key), dst_node_id=1000, message_type=wire.BEGIN, group_id="1")
        reply = grid.send_and_receive([begin])[0]
        assert reply.has_error() and "run-key" in reply.error.reason
    assert "search" not in grid.contexts[1000].state.config_records
