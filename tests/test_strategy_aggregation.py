"""The strategy's Flower hooks on hand-made replies (as Flower's own strategy tests do): metrics weighted
by the users' examples, the domain prior, node sampling, and the constructor a run config fills."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from cbp_fed import protocol as wire
from cbp_fed.config import RunConfig
from strategies import CBPStrategy, FedBPTStrategy
from strategies.cbp import domain_prior
from strategies.multistep import read_evaluation

pytestmark = pytest.mark.usefixtures("task_identity")

R = 4


def reply(content: RecordDict, node: int, kind: str) -> Message:
    return Message(content, reply_to=Message(RecordDict(), dst_node_id=node, message_type=kind, group_id="1"))


def finish(node: int, value: float, examples: int, **selection) -> Message:
    metrics = {"train-loss": value, "best-loss": value - 1, "calls": 8 + node, "examples": examples, **selection}
    return reply(wire.result(np.full(R, value), {**metrics, "partition-id": node}), node, wire.FINISH)


def score(accuracy: float, examples: int) -> Message:
    return reply(
        RecordDict({"metrics": MetricRecord({"accuracy": accuracy, "examples": examples})}), 1, wire.EVAL_SCORE
    )


def strategy(**options) -> CBPStrategy:
    """A CBP strategy without a BlackBox: aggregation never scores."""
    s = CBPStrategy(None, np.zeros(R, np.float32), domain="general", **options)
    s.partition_of = {0: 0, 1: 1, 2: 2}
    return s


def test_train_metrics_are_weighted_by_examples_and_costs_are_per_user():
    s = strategy()
    arrays, metrics = s.aggregate_train(1, [finish(0, 1.0, examples=2), finish(1, 3.0, examples=6)])
    assert metrics["train-loss"] == pytest.approx((2 * 1.0 + 6 * 3.0) / 8)
    assert metrics["best-loss"] == pytest.approx((2 * 0.0 + 6 * 2.0) / 8)
    assert metrics["calls"] == 8.5  # a cost per user: not weighted
    assert "examples" not in metrics and "dev-accuracy" not in metrics
    np.testing.assert_allclose(arrays["z-start"].numpy(), np.full(R, 2.0))  # the next start: the prior (a mean)


def test_dev_selection_metrics_are_weighted_and_kept_share_counts_users():
    s = strategy()
    replies = [
        finish(0, 1.0, examples=1, **{"kept": 0, "dev-accuracy": 0.5, "dev-accuracy-before": 0.5}),
        finish(1, 1.0, examples=3, **{"kept": 2, "dev-accuracy": 0.9, "dev-accuracy-before": 0.7}),
    ]
    _, metrics = s.aggregate_train(1, replies)
    assert metrics["dev-accuracy"] == pytest.approx((0.5 + 3 * 0.9) / 4)
    assert metrics["dev-accuracy-before"] == pytest.approx((0.5 + 3 * 0.7) / 4)
    assert metrics["kept-earlier-share"] == 0.5


def test_no_finished_user_leaves_the_start_and_reports_no_metrics():
    s = strategy()
    arrays, metrics = s.aggregate_train(1, [])
    assert dict(metrics) == {} and s.user_z == {}
    np.testing.assert_array_equal(arrays["z-start"].numpy(), np.zeros(R))


def test_test_accuracy_pools_the_users_texts():
    evaluation = strategy().aggregate_evaluate(1, [score(0.5, 10), score(1.0, 30)])
    assert evaluation["accuracy"] == pytest.approx(0.875)  # 35 of 40 texts right
    assert evaluation["accuracy-std"] == pytest.approx(0.25)  # the spread over users
    assert evaluation["users"] == 2 and evaluation["examples"] == 40
    equal = strategy().aggregate_evaluate(1, [score(0.5, 12), score(1.0, 12)])
    assert equal["accuracy"] == pytest.approx(0.75)  # equal test sets: the plain mean over users
    assert dict(strategy().aggregate_evaluate(1, [])) == {"users": 0}


@pytest.mark.parametrize("examples", [None, 0, 2.5, float("nan")])
def test_an_evaluation_needs_a_whole_positive_number_of_texts(examples):
    metrics = {"accuracy": 0.5} if examples is None else {"accuracy": 0.5, "examples": examples}
    with pytest.raises(wire.ProtocolError):
        read_evaluation(RecordDict({"metrics": MetricRecord(metrics)}))


def sort_trimmed_mean(vectors: np.ndarray, trim: float) -> np.ndarray:
    """The definition: per coordinate, sort, cut floor(trim * u) from each end, average the rest."""
    cut = int(trim * len(vectors))
    return np.sort(vectors, axis=0)[cut : len(vectors) - cut].mean(axis=0)


def test_the_median_and_trimmed_prior_match_their_definitions():
    vectors = np.array([[0.0, 5.0], [1.0, -4.0], [2.0, 3.0], [3.0, 2.0], [100.0, 1.0]])
    np.testing.assert_array_equal(domain_prior(vectors, "median"), [2.0, 2.0])
    np.testing.assert_array_equal(domain_prior(vectors, "trimmed-mean", trim=0.2), [2.0, 2.0])  # cut 1 per end
    np.testing.assert_array_equal(domain_prior(vectors, "trimmed-mean", trim=0.0), vectors.mean(0).astype(np.float32))
    rng = np.random.default_rng(0)
    for users in (1, 2, 5, 7, 20):
        vectors = rng.normal(size=(users, 16)).astype(np.float32)
        for trim in (0.0, 0.1, 0.25, 0.49):
            expected = sort_trimmed_mean(vectors.astype(np.float64), trim).astype(np.float32)
            np.testing.assert_allclose(domain_prior(vectors, "trimmed-mean", trim), expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(
            domain_prior(vectors, "median"), np.median(vectors.astype(np.float64), 0).astype(np.float32)
        )


def test_the_prior_is_the_trimmed_mean_of_the_finished_users():
    s = strategy(prior="trimmed-mean", prior_trim=0.34)
    s.partition_of = {n: n for n in range(3)}
    arrays, _ = s.aggregate_train(1, [finish(0, 1.0, 4), finish(1, 2.0, 4), finish(2, 50.0, 4)])
    np.testing.assert_array_equal(arrays["z-start"].numpy(), np.full(R, 2.0))  # 1 cut from each end


class Nodes:
    """The part of a Grid that ``configure_*`` reads."""

    def __init__(self, ids):
        self.ids = ids

    def get_node_ids(self):
        return list(self.ids)


def test_configure_train_samples_with_the_seed_and_sends_the_given_start():
    z = np.arange(R, dtype=np.float32)
    chosen = []
    for _ in range(2):
        s = strategy(users_per_round=2, seed=3)
        messages = list(s.configure_train(4, wire.arrays(z_start=z), ConfigRecord(), Nodes([9, 5, 7, 3])))
        chosen.append([m.metadata.dst_node_id for m in messages])
        assert all(m.metadata.message_type == wire.BEGIN and m.metadata.group_id == "4" for m in messages)
        np.testing.assert_array_equal(messages[0].content["start"]["z-start"].numpy(), z)
    assert chosen[0] == chosen[1] == sorted(chosen[0]) and len(chosen[0]) == 2
    everyone = strategy().configure_evaluate(1, wire.arrays(z_start=z), ConfigRecord(), Nodes([9, 5]))
    assert [m.metadata.dst_node_id for m in everyone] == [5, 9]


def test_a_run_config_becomes_explicit_constructor_arguments():
    config = RunConfig(r=R, prior="median", users_per_round=2, steps_per_round=4, eval_every=2, decoy_candidates=0.5)
    s = CBPStrategy.from_config(config, None, np.zeros(R, np.float32), domain="general", run_key="k")
    assert (s.how, s.users_per_round, s.evaluate_every, s.run_key) == ("median", 2, 2, "k")
    assert s.population_size == config.wire_popsize > config.popsize
    assert s.hops() == [wire.STEP] * 3 + [wire.SELECT, wire.FINISH]
    fedbpt = FedBPTStrategy.from_config(config, None, np.zeros(R, np.float32))
    assert fedbpt.hops() == [wire.STEP] * 3 + [wire.FINISH] and fedbpt.sigma0 == config.sigma0


@pytest.mark.parametrize(
    "given", [{"initial_arrays": ArrayRecord()}, {"train_config": ConfigRecord()}, {"evaluate_fn": print}]
)
def test_start_refuses_flowers_options_it_has_no_use_for(given):
    with pytest.raises(ValueError, match=next(iter(given))):
        strategy().start(Nodes([]), num_rounds=1, **given)
