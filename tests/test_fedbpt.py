"""FedBPT: the server update is pycma's own tell on the users' means, users search from the global
mean with nothing of their own kept, only a mean and a sigma go down, resume restores the global
CMA-ES, and a failed user turns the round into a mean-only update instead of breaking it."""

from __future__ import annotations

import pickle

import cma
import numpy as np
import pytest
from cma.recombination_weights import RecombinationWeights
from cma.sigma_adaptation import CMAAdaptSigmaCSA
from flwr.app import Message, RecordDict

from cbp_fed import protocol as wire
from cbp_fed.checkpoint import load_checkpoint, save_checkpoint
from cbp_fed.client_app import User
from cbp_fed.comm import MeteredGrid
from cbp_fed.config import RunConfig
from cbp_fed.prompts import ProjectedPrompt
from cbp_fed.search import CMASearch, SearchConfig, fitness
from cbp_fed.service import BlackBox
from strategies import STRATEGIES, FedBPTStrategy

from .loopback import LoopbackGrid

pytestmark = pytest.mark.usefixtures("task_identity")

R, K, POP, N_TRAIN = 16, 3, 4, 6
CONFIG = RunConfig(
    method="fedbpt",
    backbone="tiny-random",
    tasks="sst2",
    r=R,
    t=2,
    popsize=POP,
    steps_per_round=K,
    num_rounds=2,
    n_test=12,
    shots_per_class=3,
    max_tokens=96,
)
RUN = CONFIG.to_run_config()


def make_strategy(tiny) -> FedBPTStrategy:
    box = BlackBox(tiny, ProjectedPrompt.for_backbone(tiny, CONFIG.t, R, CONFIG.seed), max_tokens=96)
    s = FedBPTStrategy.from_config(CONFIG, box, np.zeros(R, np.float32))
    s.records, s.globals = [], []  # each round's record and the global (mean, sigma) after it

    def on_round(record):
        s.records.append(record)
        s.globals.append((s.es.mean.copy(), s.es.sigma))

    s.on_round = on_round
    return s


@pytest.fixture()
def strategy(tiny):
    return make_strategy(tiny)


def capture_replies(grid: LoopbackGrid) -> list[Message]:
    """Make ``grid`` keep every reply it returns (in delivery order)."""
    replies, original = [], grid.send_and_receive

    def send(messages, timeout=None):
        out = list(original(messages, timeout=timeout))
        replies.extend(out)
        return out

    grid.send_and_receive = send
    return replies


def send(grid, node, kind, content, round=1):
    return grid.send_and_receive([Message(content, dst_node_id=node, message_type=kind, group_id=str(round))])[0]


def finish_reply(partition: int, z: np.ndarray, loss: float, sigma: float) -> Message:
    request = Message(RecordDict(), dst_node_id=10 + partition, message_type=wire.FINISH, group_id="1")
    metrics = {
        "train-loss": loss,
        "best-loss": loss,
        "calls": K * POP,
        "examples": N_TRAIN,
        "partition-id": partition,
        "local-loss": loss,
        "local-sigma": sigma,
    }
    return Message(wire.result(z, metrics), reply_to=request)


# ----------------------------------------------------------------------------- the server update
def test_the_server_update_is_pycmas_tell_with_the_calibrated_sigma(strategy):
    m = 4
    strategy.es = strategy.new_global(m)
    strategy.partition_of = {10 + p: p for p in range(m)}
    means = np.random.default_rng(0).normal(0.0, 0.3, (m, R)).astype(np.float32)
    losses, sigmas = np.array([0.7, 0.2, 0.9, 0.4]), np.array([0.5, 0.6, 0.4, 0.55])
    replies = [finish_reply(p, means[p], losses[p], sigmas[p]) for p in (3, 1, 0, 2)]  # arrival order is irrelevant
    _, metrics = strategy.aggregate_train(1, replies)

    # pycma itself, told the same population at the calibrated sigma sqrt(mean(local sigma^2))
    options = {"popsize": m, "CMA_mu": m, "CMA_mirrors": 0, "AdaptSigma": CMAAdaptSigmaCSA, "verbose": -9}
    reference = cma.CMAEvolutionStrategy(np.zeros(R), CONFIG.sigma0, options)
    calibrated = np.sqrt(np.mean(sigmas**2))
    reference.sigma = calibrated
    reference.ask()
    reference.tell(list(means.astype(float)), list(losses))
    np.testing.assert_allclose(strategy.es.mean, reference.mean, rtol=1e-12)
    np.testing.assert_allclose(strategy.es.sm.C, reference.sm.C, rtol=1e-12)
    # the next broadcast sigma: sigma0 scaled by the factor pycma's step-size update applied
    assert strategy.es.sigma == pytest.approx(CONFIG.sigma0 * reference.sigma / calibrated, rel=1e-12)
    assert strategy.es.sigma != pytest.approx(CONFIG.sigma0)
    # every user is a parent: the new mean is the rank-weighted average of all four means
    weights = RecombinationWeights(2 * m).positive_weights
    np.testing.assert_allclose(strategy.es.mean, weights @ means[np.argsort(losses)], rtol=1e-6)
    assert metrics["global-told"] == m and metrics["global-sigma"] == strategy.es.sigma
    assert sorted(strategy.user_z) == [0, 1, 2, 3]


def test_a_short_round_moves_only_the_mean_and_an_empty_one_nothing(strategy):
    strategy.es = strategy.new_global(4)
    strategy.partition_of = {10 + p: p for p in range(4)}
    means = np.random.default_rng(1).normal(0.0, 0.3, (3, R)).astype(np.float32)
    losses = np.array([0.5, 0.3, 0.8])
    _, metrics = strategy.aggregate_train(1, [finish_reply(p, means[p], losses[p], 0.5) for p in range(3)])
    # pycma refuses a tell of 3 < mu = 4 solutions; the mean is what CMA_mu = 3 would recombine
    np.testing.assert_allclose(strategy.es.mean, RecombinationWeights(6).positive_weights @ means[[1, 0, 2]], rtol=1e-6)
    assert strategy.es.sigma == CONFIG.sigma0 and strategy.es.countiter == 0
    np.testing.assert_array_equal(strategy.es.sm.C, strategy.new_global(4).sm.C)  # covariance untouched
    assert metrics["global-told"] == 0
    before = strategy.es.mean.copy()
    _, metrics = strategy.aggregate_train(2, [])
    np.testing.assert_array_equal(strategy.es.mean, before)
    assert metrics["global-told"] == 0 and strategy.es.sigma == CONFIG.sigma0


# ----------------------------------------------------------------------------- the user
def test_a_user_searches_from_the_global_mean_and_keeps_nothing():
    grid = LoopbackGrid(2, RUN)
    node, mean, sigma = 1001, np.linspace(-1, 1, R, dtype=np.float32), 0.7
    reply = send(grid, node, wire.BEGIN, wire.start(2, mean, "run", sigma=sigma), round=2)
    assert not reply.has_error(), reply.error
    # a fresh CMA-ES at (global mean, global sigma), seeded by (seed, partition id, round)
    seed = int(np.random.SeedSequence([CONFIG.seed, 1, 2]).generate_state(1)[0])
    expected = CMASearch(mean, SearchConfig(POP, sigma, K * POP), seed)
    sigmas = [expected.es.sigma]
    np.testing.assert_array_equal(wire.read_array(reply.content, "query", "z", 2), expected.ask())
    labels = np.array([ex.label for ex in User(grid.contexts[node]).split.train])
    scores = np.random.default_rng(0).normal(size=(K, POP, N_TRAIN, 2))
    for step, kind in enumerate([wire.STEP] * (K - 1) + [wire.FINISH]):
        reply = send(grid, node, kind, wire.scores(scores[step]), round=2)
        assert not reply.has_error(), reply.error
        losses = fitness(scores[step], labels)
        expected.tell(losses)
        if kind == wire.STEP:
            sigmas.append(expected.es.sigma)
            expected.ask()
    z, metrics = wire.read_result(reply.content, R)
    local = wire.read_local_search(reply.content)
    np.testing.assert_allclose(z, expected.result)
    assert metrics["calls"] == K * POP == CONFIG.calls_per_round  # the same per-round calls as CBP and BBT
    mu = POP // 2
    assert local["local-sigma"] == pytest.approx(np.sqrt(np.sum(np.square(sigmas)) / mu))
    weights = RecombinationWeights(POP).positive_weights
    assert local["local-loss"] == pytest.approx(np.sort(losses)[:mu] @ weights)
    state = grid.contexts[node].state
    assert "search" not in state.config_records and "z" not in state.array_records  # nothing outlives the round
    # evaluation: the user has no z of its own, it queries with the global mean it is sent
    reply = send(grid, node, wire.EVAL_QUERY, wire.start(2, mean, "run"), round=2)
    np.testing.assert_array_equal(wire.read_array(reply.content, "query", "z", 2), mean[None])


@pytest.mark.parametrize("sigma", [None, 0.0, -1.0, float("nan"), float("inf")])
def test_a_user_refuses_a_begin_without_a_valid_sigma(sigma):
    grid = LoopbackGrid(1, RUN)
    reply = send(grid, 1000, wire.BEGIN, wire.start(1, np.zeros(R), "run", sigma=sigma))
    assert reply.has_error() and "round/sigma" in reply.error.reason
    assert "search" not in grid.contexts[1000].state.config_records


# ----------------------------------------------------------------------------- the round loop
def test_rounds_send_the_global_mean_and_sigma_only_and_move_the_mean(strategy):
    assert STRATEGIES["fedbpt"].__self__ is FedBPTStrategy
    loop = LoopbackGrid(4, RUN)
    replies = capture_replies(loop)
    grid = MeteredGrid(loop, node_key=lambda n: strategy.partition_of.get(n, n))
    strategy.start(grid, num_rounds=2)

    assert [r["users_ok"] for r in strategy.records] == [4, 4]
    assert [r["global_told"] for r in strategy.records] == [4, 4]
    # training + one evaluation call each (in round 1 also the start's); FedBPT users never select on dev
    assert [r["calls"] for r in strategy.records] == [4 * K * POP + 8, 4 * K * POP + 4]
    (mean1, sigma1), (mean2, sigma2) = strategy.globals
    assert np.abs(mean1).max() > 0 and np.abs(mean2 - mean1).max() > 0  # the global mean moves every round
    assert strategy.records[0]["global_sigma"] == sigma1 and strategy.records[1]["global_sigma"] == sigma2
    for round, (mean, sigma) in ((1, (np.zeros(R), CONFIG.sigma0)), (2, strategy.globals[0])):
        sent = [(m, m.metadata.message_type, m.metadata.group_id) for m in loop.delivered]
        begins = [m for m, kind, group in sent if kind == wire.BEGIN and group == str(round)]
        assert len(begins) == 4
        for m in begins:  # every user starts from the global mean and sigma of the round before
            np.testing.assert_allclose(wire.read_array(m.content, "start", "z-start", 1), mean, rtol=1e-6)
            assert wire.read_sigma(m.content) == pytest.approx(sigma)
    queries = [r for r in replies if r.metadata.message_type == wire.EVAL_QUERY and r.metadata.group_id == "2"]
    assert len(queries) == 4
    for r in queries:  # evaluation scores the global mean, not a personal z
        np.testing.assert_allclose(wire.read_array(r.content, "query", "z", 2)[0], mean2, rtol=1e-6)
    # down per user per round: one mean (4 r bytes) and one sigma, K scores (k, n, C) float32, and Flower's
    # envelope (under 1 KB a message, K + 1 messages); never the optimiser, which the reference pickles
    # to every user every round (already larger at r = 16, and O(r^2): ~4 MB at r = 500)
    scores = 4 * POP * N_TRAIN * 2
    floor = 4 * R + K * scores + 1000 * (K + 1)
    for round in (1, 2):
        for user in grid.round_summary(round)["users"].values():
            down = {t: c["payload_bytes"] / c["messages"] for t, c in user["down"].items()}
            assert down[wire.BEGIN] < 4 * R + 1000
            assert down[wire.STEP] < scores + 1000 and down[wire.FINISH] < scores + 1000
            assert sum(c["payload_bytes"] for t, c in user["down"].items() if t.startswith("train.")) < floor
    assert floor < len(pickle.dumps(strategy.es))


# ----------------------------------------------------------------------------- resume
def test_checkpoint_and_restore_carry_the_global_cmaes(tiny, tmp_path):
    """Round 1's checkpoint (written as the server app does, after the round) restored into a fresh
    strategy gives the same global CMA-ES, and round 2 from it ends where the uninterrupted run does."""
    uninterrupted = make_strategy(tiny)
    after_round = uninterrupted.on_round
    saved = {}

    def checkpoint_round_1(record):
        after_round(record)
        if record["round"] == 1:
            save_checkpoint(tmp_path, *uninterrupted.checkpoint())
            saved["es"] = pickle.loads(pickle.dumps(uninterrupted.es))

    uninterrupted.on_round = checkpoint_round_1
    uninterrupted.start(LoopbackGrid(3, RUN), num_rounds=2)

    resumed = make_strategy(tiny)
    resumed.restore(*load_checkpoint(tmp_path))
    assert resumed.rounds_done == 1
    for key in ("mean", "pc"):
        np.testing.assert_array_equal(getattr(resumed.es, key), getattr(saved["es"], key))
    np.testing.assert_array_equal(resumed.es.sm.C, saved["es"].sm.C)
    assert (resumed.es.sigma, resumed.es.countiter, resumed.es.popsize) == (saved["es"].sigma, 1, 3)

    resumed.start(LoopbackGrid(3, RUN), num_rounds=2)  # round 2 only, with users that kept nothing
    assert [r["round"] for r in resumed.records] == [2]
    np.testing.assert_array_equal(resumed.es.mean, uninterrupted.es.mean)
    np.testing.assert_array_equal(resumed.es.sm.C, uninterrupted.es.sm.C)
    assert resumed.es.sigma == uninterrupted.es.sigma
    keys = ("train_loss", "global_sigma", "global_told", "test_accuracy")
    assert {k: resumed.records[0][k] for k in keys} == {k: uninterrupted.records[1][k] for k in keys}


# ----------------------------------------------------------------------------- failures
def test_a_crashed_and_a_malformed_user_leave_a_mean_only_round(strategy, monkeypatch):
    loop = LoopbackGrid(4, RUN, faults={1001: "crash"})
    replies = capture_replies(loop)
    captured = loop.send_and_receive

    def poison(messages, timeout=None):  # user 3 reports a zero local sigma at finish
        out = list(captured(messages, timeout=timeout))
        for r in out:
            if r.metadata.src_node_id == 1003 and r.metadata.message_type == wire.FINISH and not r.has_error():
                r.content["metrics"]["local-sigma"] = 0.0
        return out

    monkeypatch.setattr(loop, "send_and_receive", poison)
    strategy.start(loop, num_rounds=1)
    record = strategy.records[0]
    assert record["users_ok"] == 2 and record["global_told"] == 0
    reasons = {f["node_id"]: f["reason"] for f in record["failures"]}
    assert "crashed" in reasons[1001] and "local-sigma must be > 0" in reasons[1003]
    finished = sorted(
        (r for r in replies if r.metadata.message_type == wire.FINISH and r.metadata.src_node_id in (1000, 1002)),
        key=lambda r: r.metadata.src_node_id,
    )
    means = np.stack([wire.read_result(r.content, R)[0] for r in finished]).astype(float)
    losses = [wire.read_local_search(r.content)["local-loss"] for r in finished]
    expected = RecombinationWeights(4).positive_weights @ means[np.argsort(losses)]
    np.testing.assert_allclose(strategy.es.mean, expected, rtol=1e-6)
    assert strategy.es.sigma == CONFIG.sigma0 and strategy.es.countiter == 0
    assert record["users_evaluated"] == 3  # the malformed user still scores the global mean
