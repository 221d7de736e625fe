"""A user with a prompt ends on its protected choice: the prompt only when its dev rows say it beats the
options it has without the provider (``cbp-fed customize``)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import Message

import cbp_fed.customize as customize_module
from cbp_fed.customize import OWN, CustomizeConfig, customize
from cbp_fed.prompts import NoPrompt
from cbp_fed.service import BlackBox
from cbp_fed.tasks import load_task


class PlantedPrompt(BlackBox):
    """A BlackBox whose prompted scores are planted: every z answers each known text right (``right``) or
    wrong, by 3 nats; texts it does not know (content-free inputs) get equal scores. Without a prompt it is
    the real tiny backbone."""

    right = True
    truth = {ex.passage + ex.query: ex.label for ex in load_task("sst2").examples}

    def score(self, queries):
        if isinstance(self.source, NoPrompt):
            return super().score(queries)
        self.meter.calls += sum(len(q.z) for q in queries)
        out = []
        for q in queries:
            scores = np.zeros((len(q.z), len(q.queries), len(q.label_words)), np.float32)
            for i, text in enumerate(p + t for p, t in zip(q.passages, q.queries)):
                if text in self.truth:
                    label = self.truth[text]
                    scores[:, i, label if self.right else 1 - label] = 3.0
            out.append(scores)
        return out


@pytest.mark.parametrize("right", [True, False])
def test_the_user_keeps_a_prompt_only_when_dev_says_it_beats_its_own_options(tiny, monkeypatch, right):
    monkeypatch.setattr(customize_module, "BlackBox", PlantedPrompt)
    monkeypatch.setattr(PlantedPrompt, "right", right)
    config = CustomizeConfig(
        task="sst2",
        method="bbt",
        budget=8,
        popsize=4,
        bbt_r=8,
        bbt_t=2,
        shots_per_class=4,
        dev_shots_per_class=16,
        n_test=40,
        max_tokens=96,
    )
    summary = customize(config, tiny, progress=False)
    assert summary["dev_size"] == 32
    final = summary["protected"]
    protection = final["protection"]
    assert set(OWN) <= set(protection["test_accuracy"]) and protection["alpha"] == 0.05
    for option, bits in protection["test_correct"].items():  # every option's rows, for paired comparisons
        assert len(bits) == summary["test_size"]
        assert bits.count("1") / len(bits) == pytest.approx(protection["test_accuracy"][option])
    assert summary["test_accuracy"] == (1.0 if right else 0.0)  # the search's own result is reported as it is
    if right:  # all 32 dev rows right against an own option that is at best ~70% right: a clear move
        assert final["option"] in ("prompt", "prompt+fit") and final["test_accuracy"] == 1.0
        assert protection["wins"] >= 8 and protection["losses"] == 0 and protection["p_value"] <= 0.05
    else:  # the prompt is worse on dev and test: the user ends on its best own option
        assert final["option"] == protection["baseline"] and final["option"] in OWN
        assert final["test_accuracy"] == summary["baselines"][final["option"]] > 0.0
    assert summary["curve"][-1]["protected"] == final


def test_an_own_method_reports_every_own_option_on_the_same_rows(tiny):
    """majority, zero-shot, calibrated and calibrated-fit share one scoring of the test rows."""
    summaries = {
        method: customize(CustomizeConfig(task="sst2", method=method, shots_per_class=4, n_test=30), tiny, False)
        for method in OWN
    }
    for method, summary in summaries.items():
        assert summary["test_accuracy"] == summary["baselines"][method]
        assert summary["baselines"] == summaries["zero-shot"]["baselines"]
        assert "protected" not in summary
    labels = [ex.label for ex in customize_module.user_split(load_task("sst2"), 0, 4, n_test=30).test]
    assert summaries["majority"]["test_accuracy"] in (labels.count(0) / 30, labels.count(1) / 30)


def test_in_context_learning_puts_as_many_train_rows_in_front_as_fit(tiny):
    task = load_task("sst2")
    demos, rows = task.examples[:6], task.examples[10:14]
    shown, counts = customize_module.with_demonstrations(rows, demos, task, tiny, max_tokens=120)
    for row, ex, k in zip(shown, rows, counts):
        assert row.passage.endswith(ex.passage) and row.query == ex.query and row.label == ex.label
        assert row.passage.count("Sentiment:") == k and 0 < k < 6  # some fit, not all
        assert len(tiny.tokenize(row.passage)) + len(tiny.tokenize(row.query)) <= 120
        first = demos[0]
        assert row.passage.startswith(first.passage + first.query + task.label_words[first.label] + "\n\n")
    _, none_fit = customize_module.with_demonstrations(rows, demos, task, tiny, max_tokens=20)
    assert none_fit == [0] * len(rows)


# ----------------------------------------------------------------------------- the federated user
def _federated_user(right: bool):
    """One user through train.begin -> select -> finish -> evaluate, with planted scores: the prompt answers
    every dev and test text right or wrong, no prompt answers every one wrong or right."""
    from cbp_fed import protocol as wire
    from cbp_fed.client_app import User
    from cbp_fed.config import RunConfig

    from .loopback import LoopbackGrid

    run = RunConfig(backbone="tiny-random", tasks="sst2", r=8, popsize=4, steps_per_round=1, n_test=10)
    run = {**run.to_run_config(), "shots-per-class": 3, "dev-shots-per-class": 8}
    grid = LoopbackGrid(1, run)

    def send(kind, content):
        msg = Message(content, dst_node_id=1000, message_type=kind, group_id="1")
        reply = grid.send_and_receive([msg])[0]
        assert not reply.has_error(), reply.error
        return reply

    def planted(labels, good):
        scores = np.zeros((len(labels), 2), np.float32)
        scores[np.arange(len(labels)), labels if good else 1 - labels] = 1.0
        return scores

    reply = send(wire.BEGIN, wire.start(1, np.zeros(8), "run"))
    n_texts = len(wire.read_texts(reply.content)["queries"])
    reply = send(wire.SELECT, wire.scores(np.zeros((4, 6, 2))))
    user = User(grid.contexts[1000])
    dev, test = (np.array([ex.label for ex in rows]) for rows in (user.split.dev, user.split.test))
    asked = wire.read_plain(reply.content, n_texts)
    assert len(asked) == 6 + 16 + 3  # train, dev, content-free: once
    plain = np.zeros((1, len(asked), 2), np.float32)
    plain[0, 6 : 6 + 16] = planted(dev, not right)
    points = np.stack([planted(dev, right)] * wire.SELECT_POINTS)
    send(wire.FINISH, wire.scores(points, plain=plain))
    reply = send(wire.EVAL_QUERY, wire.start(1, np.zeros(8), "run"))
    assert wire.read_plain(reply.content, len(test)) == list(range(len(test)))
    reply = send(wire.EVAL_SCORE, wire.scores(planted(test, right)[None], plain=planted(test, not right)[None]))
    return reply.content.metric_records["metrics"], grid


@pytest.mark.parametrize("right", [True, False])
def test_a_federated_user_reports_the_option_it_ends_on_beside_its_z(task_identity, right):
    from cbp_fed import protocol as wire

    metrics, grid = _federated_user(right)
    assert metrics["accuracy"] == (1.0 if right else 0.0)  # its z, as the search left it
    assert metrics["protected-own"] == (0.0 if right else 1.0)  # 16 dev rows: a clean sweep moves it
    assert metrics["protected-accuracy"] == 1.0  # either way it ends on the option that is right
    assert (metrics["own-best-accuracy"] == 1.0) == (not right)  # its best own option on test, in hindsight
    assert metrics["own-accuracy-zero-shot"] == (0.0 if right else 1.0)  # each own option's own line
    reply = grid.send_and_receive(
        [Message(wire.start(2, np.zeros(8), "run"), dst_node_id=1000, message_type=wire.EVAL_QUERY, group_id="2")]
    )[0]
    assert "plain" not in reply.content.config_records  # the no-prompt test scores are asked once


def test_the_provider_pools_final_accuracies_of_the_users_that_report_one(task_identity):
    from flwr.app import MetricRecord, RecordDict

    from cbp_fed import protocol as wire
    from strategies import CBPStrategy
    from strategies.multistep import read_evaluation

    def score(accuracy: float, examples: int, **final) -> Message:
        metrics = MetricRecord({"accuracy": accuracy, "examples": examples, **final})
        request = Message(RecordDict(), dst_node_id=1, message_type=wire.EVAL_SCORE, group_id="1")
        return Message(RecordDict({"metrics": metrics}), reply_to=request)

    strategy = CBPStrategy(None, np.zeros(4, np.float32), domain="general")
    replies = [
        score(0.5, 10, **{"protected-accuracy": 0.9, "protected-own": 1.0, "own-best-accuracy": 0.9}),
        score(0.8, 30, **{"protected-accuracy": 0.8, "protected-own": 0.0, "own-best-accuracy": 0.9}),
        score(0.7, 10, **{"protected-accuracy": 0.7, "protected-own": 1.0, "own-best-accuracy": 0.7}),
        score(0.6, 20),  # a user with no choice yet (FedBPT, or before its first round)
    ]
    replies[0].content["metrics"]["own-accuracy-zero-shot"] = 0.5
    replies[1].content["metrics"]["own-accuracy-zero-shot"] = 0.9
    evaluation = strategy.aggregate_evaluate(1, replies)
    assert evaluation["accuracy"] == pytest.approx((5 + 24 + 7 + 12) / 70)  # every user's z, as before
    assert evaluation["protected-accuracy"] == pytest.approx((9 + 24 + 7) / 50)  # the reporting users' texts pooled
    assert evaluation["protected-own-share"] == pytest.approx(2 / 3) and evaluation["protected-users"] == 3
    assert evaluation["own-best-accuracy"] == pytest.approx((9 + 27 + 7) / 50)
    assert evaluation["protected-vs-own-best"] == pytest.approx(-0.1 / 3)  # per user: 0, -0.1 and 0
    assert evaluation["protected-below-own-best"] == 1
    assert evaluation["own-accuracy-zero-shot"] == pytest.approx((5 + 27) / 40)  # over the users that report it
    bad = {"protected-accuracy": 0.5, "protected-own": 0.5, "own-best-accuracy": 0.5}
    with pytest.raises(wire.ProtocolError, match="protected-own"):  # the check that drops such a reply
        read_evaluation(score(0.5, 10, **bad).content)
    bad = {"protected-accuracy": 0.5, "protected-own": 1.0, "own-best-accuracy": 0.5, "own-accuracy-majority": 1.5}
    with pytest.raises(wire.ProtocolError, match="own-accuracy-"):
        read_evaluation(score(0.5, 10, **bad).content)


def test_each_user_s_end_is_compared_with_its_own_start_not_with_the_pooled_one(task_identity):
    from flwr.app import MetricRecord, RecordDict

    from cbp_fed import protocol as wire
    from strategies import CBPStrategy

    def score(node: int, accuracy: float, **final) -> Message:
        metrics = MetricRecord({"accuracy": accuracy, "examples": 10, **final})
        request = Message(RecordDict(), dst_node_id=node, message_type=wire.EVAL_SCORE, group_id="1")
        return Message(RecordDict({"metrics": metrics}), reply_to=request)

    def protected(accuracy: float) -> dict:
        return {"protected-accuracy": accuracy, "protected-own": 1.0, "own-best-accuracy": accuracy}

    strategy = CBPStrategy(None, np.zeros(4, np.float32), domain="general")
    strategy.partition_of = {10: 0, 11: 1, 12: 2, 13: 3}
    assert strategy.against_start() == {}  # no start evaluated yet: nothing to compare
    strategy.aggregate_evaluate(1, [score(10, 0.5), score(11, 0.9), score(12, 0.6), score(13, 0.4)])
    strategy.remember_start()
    ends = [
        score(10, 0.8, **protected(0.6)),  # the prompt is better, but the user ends on its own option: +0.1
        score(11, 0.7, **protected(0.8)),  # ends 0.1 below its own start, though above the pooled start
        score(12, 0.6),  # no protected choice (FedBPT): its prompt is what it ends on, +0
    ]  # user 3 was not evaluated at the end: left out
    strategy.aggregate_evaluate(2, ends)
    record = strategy.against_start()
    assert record["end_below_start"] == [1]
    assert record["end_vs_start"] == pytest.approx(0.0)  # (0.1 - 0.1 + 0) / 3
    assert record["end_vs_start_ci95"] > 0
    meter = SimpleNamespace(calls=0, pairs=0, tokens=0, forwards=0, seconds=0.0)
    strategy.blackbox = SimpleNamespace(meter=meter)
    restored = CBPStrategy(SimpleNamespace(meter=meter), np.zeros(4, np.float32), domain="general")
    restored.restore(*strategy.checkpoint())  # a resumed run still knows each user's start
    assert restored.user_start == strategy.user_start


def test_zero_shot_without_train_rows_has_nothing_to_fit(tiny):
    summary = customize(CustomizeConfig(task="sst2", method="zero-shot", shots_per_class=0, n_test=10), tiny, False)
    assert summary["train_size"] == 0  # offsets of 0: calibrated-fit is zero-shot
    assert summary["baselines_correct"]["calibrated-fit"] == summary["baselines_correct"]["zero-shot"]
