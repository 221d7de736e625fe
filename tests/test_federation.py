"""ClientApp handlers and the multi-step strategy, driven with real Flower messages in one process."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from cbp_fed import protocol as wire
from cbp_fed.client_app import User
from cbp_fed.comm import MeteredGrid
from cbp_fed.config import RunConfig
from cbp_fed.prompts import PromptGenerator
from cbp_fed.service import BlackBox
from strategies import CBPStrategy

from .loopback import LoopbackGrid, delivered_test_accuracies

pytestmark = pytest.mark.usefixtures("task_identity")

R, K, POP = 16, 3, 4
RUN = RunConfig(
    backbone="tiny-random",
    tasks="sst2",
    r=R,
    m=8,
    t=2,
    popsize=POP,
    steps_per_round=K,
    num_rounds=2,
    n_test=12,
    shots_per_class=3,
    max_tokens=96,
).to_run_config()


@pytest.fixture()
def strategy(tiny):
    gen = PromptGenerator(tiny.d, r=R, m=8, t=2, a_seed=0)
    z0 = np.full(R, 0.1, np.float32)
    records = []
    s = CBPStrategy.from_config(
        RunConfig.from_run_config(RUN),
        BlackBox(tiny, gen, max_tokens=96),
        z0,
        domain="general",
        on_round=records.append,
    )
    s.records = records
    return s


def send(grid, node, kind, content, round=1):
    return grid.send_and_receive([Message(content, dst_node_id=node, message_type=kind, group_id=str(round))])[0]


def test_user_handlers_keep_the_optimiser_at_home():
    grid = LoopbackGrid(2, RUN)
    node = 1000
    reply = send(grid, node, wire.BEGIN, wire.start(1, np.zeros(R), "run"))
    assert not reply.has_error()
    texts = wire.read_texts(reply.content)
    assert len(texts["queries"]) == 15 and texts["label-words"] == [" positive", " negative"]  # 6 train, 6 dev,
    assert texts["passages"][12:] == ["Sentence: N/A\n", "Sentence:\n", "Sentence: [MASK]\n"]  # 3 content-free
    assert wire.read_array(reply.content, "query", "z", 2).shape == (POP, R)
    assert "search" in grid.contexts[node].state.config_records  # state kept in context.state ...
    assert set(reply.content.config_records) == {"batch", "texts"}  # ... and never on the wire
    batch = wire.read_batch(reply.content, 15)
    assert batch == list(range(6))  # the population is scored on the training texts only
    for kind in (wire.STEP, wire.SELECT):
        reply = send(grid, node, kind, wire.scores(np.zeros((POP, len(batch), 2))))
        assert not reply.has_error(), reply.error
    points = wire.read_array(reply.content, "query", "z", 2)
    assert points.shape == (wire.SELECT_POINTS, R) and wire.read_batch(reply.content, 15) == list(range(6, 12))
    assert wire.read_plain(reply.content, 15) == list(range(15))  # its own options' texts, scored once
    np.testing.assert_array_equal(points[0], np.zeros(R))  # the start vector is always a contender
    labels = np.array([ex.label for ex in User(grid.contexts[node]).split.dev])
    dev_scores = np.zeros((wire.SELECT_POINTS, 6, 2))
    dev_scores[:2, np.arange(6), 1 - labels] = 1.0  # the start and the mean answer every dev text wrong,
    dev_scores[2, np.arange(6), labels] = 1.0  # the best candidate answers all of them right
    reply = send(grid, node, wire.FINISH, wire.scores(dev_scores, plain=np.zeros((1, 15, 2))))
    assert not reply.has_error(), reply.error
    # all 6 dev rows right against a constant answer that gets some of them: too few wins to leave it (p > 0.05)
    assert grid.contexts[node].state.config_records["choice"]["option"] in ("majority", "zero-shot")
    z = wire.read_array(reply.content, "result", "z", 1)
    metrics = reply.content.metric_records["metrics"]
    assert z.shape == (R,) and metrics["calls"] == 2 * POP and metrics["partition-id"] == 0
    assert metrics["kept"] == 2 and metrics["dev-accuracy"] == 1.0 and metrics["dev-accuracy-before"] == 0.0
    np.testing.assert_array_equal(z, points[int(metrics["kept"])])
    np.testing.assert_array_equal(grid.contexts[node].state.array_records["z"]["z"].numpy(), z)


def test_user_rejects_scores_of_the_wrong_shape_and_keeps_its_state():
    grid = LoopbackGrid(1, RUN)
    send(grid, 1000, wire.BEGIN, wire.start(1, np.zeros(R), "run"))
    before = grid.contexts[1000].state.config_records["search"]["blob"]
    reply = send(grid, 1000, wire.STEP, wire.scores(np.zeros((POP + 1, 6, 2))))
    assert reply.has_error() and "must have shape (4, 6, 2)" in reply.error.reason
    assert grid.contexts[1000].state.config_records["search"]["blob"] == before
    reply = send(grid, 1000, wire.STEP, wire.scores(np.full((POP, 6, 2), np.nan)))
    assert reply.has_error() and "NaN" in reply.error.reason
    huge = RecordDict({"scores": ArrayRecord({"scores": Array(np.full((POP, 6, 2), 1e300))})})  # float64
    reply = send(grid, 1000, wire.STEP, huge)
    assert reply.has_error() and reply.error.reason.startswith("ProtocolError") and "infinite" in reply.error.reason


def test_aggregate_train_keeps_each_users_z_and_the_prior_is_their_mean(strategy):
    strategy.partition_of = {10: 0, 12: 2}  # as the nodes declared at train.begin
    replies = []
    for pid, value in ((2, 3.0), (0, 1.0)):
        request = Message(RecordDict(), dst_node_id=10 + pid, message_type=wire.FINISH, group_id="1")
        metrics = {"train-loss": value, "best-loss": value, "calls": 8, "examples": 6, "partition-id": pid}
        replies.append(Message(wire.result(np.full(R, value), metrics), reply_to=request))
    _, metrics = strategy.aggregate_train(1, replies)
    assert sorted(strategy.user_z) == [0, 2]
    np.testing.assert_allclose(strategy.start_vector(), np.full(R, 2.0))
    assert metrics["train-loss"] == 2.0
    evaluation = strategy.aggregate_evaluate(
        1,
        [
            Message(
                RecordDict({"metrics": MetricRecord({"accuracy": a, "examples": 12})}),
                reply_to=Message(RecordDict(), dst_node_id=1, message_type=wire.EVAL_SCORE, group_id="1"),
            )
            for a in (0.5, 1.0)
        ],
    )
    assert evaluation["accuracy"] == 0.75 and evaluation["users"] == 2


def finish_replies(values: dict[int, float]) -> list[Message]:
    """train.finish replies of the users (partition id -> the value of every coordinate of its z)."""
    replies = []
    for pid, value in values.items():
        request = Message(RecordDict(), dst_node_id=10 + pid, message_type=wire.FINISH, group_id="1")
        metrics = {"train-loss": 1.0, "best-loss": 1.0, "calls": 8, "examples": 6, "partition-id": pid}
        replies.append(Message(wire.result(np.full(R, value), metrics), reply_to=request))
    return replies


@pytest.mark.parametrize(
    "prior, trim, expected", [("median", 0.2, 4.0), ("trimmed-mean", 0.25, 11 / 3), ("trimmed-mean", 0.0, 26.4)]
)
def test_the_prior_setting_chooses_how_the_users_z_are_aggregated(tiny, prior, trim, expected):
    """Users' z of 1, 2, 4, 5 and a poisoned 120: the median and the trimmed mean keep to the honest ones."""
    config = RunConfig.from_run_config({**RUN, "prior": prior, "prior-trim": trim})
    gen = PromptGenerator(tiny.d, r=R, m=8, t=2, a_seed=0)
    strategy = CBPStrategy.from_config(
        config, BlackBox(tiny, gen, max_tokens=96), np.zeros(R, np.float32), domain="general"
    )
    values = {0: 120.0, 1: 1.0, 2: 2.0, 3: 4.0, 4: 5.0}
    strategy.partition_of = {10 + pid: pid for pid in values}
    strategy.aggregate_train(1, finish_replies(values))
    np.testing.assert_allclose(strategy.start_vector(), np.full(R, expected))


def test_rounds_complete_and_are_metered(strategy):
    loop = LoopbackGrid(3, RUN)
    grid = MeteredGrid(loop, node_key=lambda n: strategy.partition_of.get(n, n))
    result = strategy.start(grid, num_rounds=2)
    assert [r["users_ok"] for r in strategy.records] == [3, 3]
    # in round 1 each user also has its own texts scored without a prompt: train and dev once, test once
    assert strategy.records[0]["own_calls"] == 2 * 3
    # training, three points each on dev, one evaluation call each (and in round 1 the start's evaluation)
    assert [r["calls"] for r in strategy.records] == [
        3 * (K * POP + wire.SELECT_POINTS + 2),
        3 * (K * POP + wire.SELECT_POINTS + 1),
    ]
    # each reported accuracy is the users' mean, recomputed from the scores they were sent and their labels
    start, after_round_1 = delivered_test_accuracies(loop, 1)
    assert strategy.records[0]["start_test_accuracy"] == pytest.approx(start)
    assert strategy.records[0]["test_accuracy"] == pytest.approx(after_round_1)
    assert "start_test_accuracy" not in strategy.records[1]
    assert sorted(strategy.user_start) == [0, 1, 2]  # each user's own start, kept for every later round
    assert all(set(r["end_below_start"]) <= {0, 1, 2} and "end_vs_start" in r for r in strategy.records)
    for r in strategy.records:  # each user's own accuracy, by partition: the pooled one lies among them
        assert sorted(r["user_test_accuracy"]) == ["0", "1", "2"]
        assert min(r["user_test_accuracy"].values()) <= r["test_accuracy"] <= max(r["user_test_accuracy"].values())
    assert strategy.records[1]["test_accuracy"] == pytest.approx(*delivered_test_accuracies(loop, 2))
    assert sorted(strategy.user_z) == [0, 1, 2]
    assert len(result.train_metrics_clientapp) == 2
    assert strategy.records[0]["bytes_up_minimum_per_user"] > K * POP * R * 4 + R * 4  # + texts and batches
    summary = grid.round_summary(2)
    assert sorted(summary["users"]) == [0, 1, 2]
    user = summary["users"][0]
    assert user["up"]["train.step"]["messages"] == K - 1 and user["down"]["train.finish"]["messages"] == 1
    assert user["up"]["train.select"]["messages"] == 1
    # down messages carry scores and a start vector only: never optimiser state (a full CMA-ES is MBs)
    assert all(c["payload_bytes"] < 4 * POP * 6 * 2 + 4 * R + 2000 for c in user["down"].values())


def test_subspace_users_search_only_along_the_providers_basis(tiny, monkeypatch):
    """With ``subspace``, every z a user asks the provider to score, and every z it keeps, is z0 plus a
    combination of the basis sent in train.begin; its state stays a subspace search across hops."""
    run = {**RUN, "subspace": 2}
    gen = PromptGenerator(tiny.d, r=R, m=8, t=2, a_seed=0)
    z0, basis = np.full(R, 0.1, np.float32), np.random.default_rng(0).normal(size=(2, R)).astype(np.float32)
    box = BlackBox(tiny, gen, max_tokens=96)
    strategy = CBPStrategy.from_config(RunConfig.from_run_config(run), box, z0, domain="general", basis=basis)
    scored, score = [], box.score
    monkeypatch.setattr(box, "score", lambda queries: scored.extend(q.z for q in queries) or score(queries))
    strategy.start(LoopbackGrid(2, run), num_rounds=2)

    def off_span(z: np.ndarray) -> float:
        u = np.linalg.lstsq(basis.T, (z - z0).T, rcond=None)[0].T
        return float(np.abs(u @ basis + z0 - z).max())

    searched = np.concatenate(scored)
    assert len(searched) > 2 * 2 * K * POP and np.abs(searched - z0).max() > 0.1  # the users did move z ...
    assert off_span(searched) < 1e-4  # ... along the basis only
    assert sorted(strategy.user_z) == [0, 1] and off_span(np.stack(list(strategy.user_z.values()))) < 1e-4


def test_a_subspace_user_refuses_a_begin_without_its_basis():
    grid = LoopbackGrid(1, {**RUN, "subspace": 2})
    reply = send(grid, 1000, wire.BEGIN, wire.start(1, np.zeros(R), "run"))
    assert reply.has_error() and "lacks array start/basis" in reply.error.reason
    reply = send(grid, 1000, wire.BEGIN, wire.start(1, np.zeros(R), "run", basis=np.ones((3, R))))
    assert reply.has_error() and "start/basis must have shape (2, 16)" in reply.error.reason


def test_a_crashing_a_silent_and_a_malformed_user_do_not_stop_the_round(strategy, monkeypatch):
    grid = LoopbackGrid(4, RUN, faults={1001: "crash", 1002: "silent"})
    original = grid.send_and_receive

    def poison(messages, timeout=None):  # user 1003 sends NaN candidates in its step replies
        replies = list(original(messages, timeout=timeout))
        for r in replies:
            if r.metadata.src_node_id == 1003 and r.metadata.message_type == wire.STEP and not r.has_error():
                r.content["query"] = wire.arrays(z=np.full((POP, R), np.nan))
        return replies

    monkeypatch.setattr(grid, "send_and_receive", poison)
    strategy.start(grid, num_rounds=1)
    record = strategy.records[0]
    assert record["users_ok"] == 1 and record["users_failed"] == 3
    reasons = {f["node_id"]: f["reason"] for f in record["failures"] if f["stage"].startswith("train")}
    assert "crashed" in reasons[1001] and "no reply" in reasons[1002] and "NaN" in reasons[1003]
    assert sorted(strategy.user_z) == [0]
