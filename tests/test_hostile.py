"""Property tests: malformed and hostile messages, on both sides, never crash a round or touch state.

The provider reads each user reply through the strategy's validation; the user reads each provider
message through its handlers. Hypothesis mutates valid messages (missing records, wrong types,
shapes and dtypes, NaN and infinities, corrupt buffers, out-of-range or repeated indices, empty, huge
or too many strings, another user's partition id) and checks that every outcome is either a valid
message or a per-user, named error. ``pytest tests/test_hostile.py --hypothesis-show-statistics``
prints how many inputs were tried.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cbp_fed import protocol as wire
from cbp_fed.config import RunConfig
from cbp_fed.prompts import PromptGenerator
from cbp_fed.service import BlackBox
from strategies import CBPStrategy
from strategies.multistep import RoundLog

from .loopback import LoopbackGrid

pytestmark = pytest.mark.usefixtures("task_identity")

R, POP, N = 16, 4, 6
RUN = RunConfig(
    backbone="tiny-random", tasks="sst2", r=R, m=8, t=2, popsize=POP, steps_per_round=2, n_test=12, shots_per_class=3
)
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ----------------------------------------------------------------------------- hostile values
floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
any_array = hnp.arrays(
    dtype=st.sampled_from([np.float16, np.float32, np.float64, np.int32, np.uint8, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, max_side=7),
    elements=None,
)
corrupt_array = st.builds(
    lambda data, n: Array(dtype="<f4", shape=(n,), stype="numpy.ndarray", data=data),
    st.binary(max_size=64),
    st.integers(0, 20),
)
config_value = st.one_of(
    st.integers(-(2**40), 2**40),
    floats,
    st.booleans(),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.lists(st.integers(-50, 50), max_size=12),
    st.lists(st.text(max_size=200), max_size=12),
    st.lists(st.integers(1, 40_000).map(lambda n: "x" * n), min_size=1, max_size=3),  # up to over a text's limit
    st.lists(st.just(" w"), min_size=11, max_size=600),  # too many label words or texts
)


def valid_reply_content() -> RecordDict:
    """What an honest user sends in reply to train.begin."""
    rng = np.random.default_rng(0)
    content = wire.population(rng.normal(size=(POP, R)).astype(np.float32), [0, 2, 5])
    content["texts"] = wire.texts(
        ["a fine film"] * N, [f"review {i}" for i in range(N)], [" positive", " negative"], "sst2", "general", 0
    )
    return content


@st.composite
def hostile_reply(draw) -> RecordDict:
    """A valid begin reply with 1-3 hostile mutations."""
    content = valid_reply_content()
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(["query", "batch", "texts", "drop-record"]))
        if target == "query":
            value = draw(st.one_of(any_array.map(Array), corrupt_array))
            content["query"] = ArrayRecord({draw(st.sampled_from(["z", "x"])): value})
        elif target == "drop-record":
            name = draw(st.sampled_from(["query", "batch", "texts"]))
            if name in content:
                del content[name]
        else:
            keys = ["indices"] if target == "batch" else ["passages", "queries", "label-words", "partition-id", "task"]
            record = content.config_records.get(target) or ConfigRecord()
            record[draw(st.sampled_from(keys))] = draw(config_value)
            content[target] = record
    return content


def reply_from(node: int, content: RecordDict, kind: str = wire.BEGIN) -> Message:
    request = Message(RecordDict(), dst_node_id=node, message_type=kind, group_id="1")
    return Message(content, reply_to=request)


@pytest.fixture(scope="module")
def strategy(request):
    tiny = request.getfixturevalue("tiny")
    gen = PromptGenerator(tiny.d, r=R, m=8, t=2, a_seed=0)
    return CBPStrategy.from_config(RUN, BlackBox(tiny, gen, max_tokens=64), np.zeros(R, np.float32), domain="general")


# ----------------------------------------------------------------------------- provider side
@EXAMPLES
@given(content=hostile_reply())
def test_provider_accepts_only_valid_replies_and_names_the_problem(strategy, content):
    strategy.partition_of.clear()
    round_log = RoundLog(1)
    waiting = strategy._read_all([reply_from(7, content)], round_log, wire.BEGIN, strategy._first_query)
    event("accepted" if waiting else "refused")
    if waiting:  # accepted: it must score without error, to the shape the user asked for
        (scores,) = strategy._score(waiting).values()
        assert scores.shape == (POP, len(waiting[7].query.queries), 2) and np.isfinite(scores).all()
        assert round_log.failures == []
    else:
        (failure,) = round_log.failures
        assert failure["node_id"] == 7 and failure["reason"]


def test_provider_refuses_a_partition_another_node_holds_and_a_forged_result(strategy):
    strategy.partition_of.clear()
    round_log = RoundLog(1)
    replies = [reply_from(7, valid_reply_content()), reply_from(8, valid_reply_content())]
    waiting = strategy._read_all(replies, round_log, wire.BEGIN, strategy._first_query)
    assert list(waiting) == [7]
    assert "partition 0 is already held by node 7" in round_log.failures[0]["reason"]
    metrics = {"train-loss": 0.5, "best-loss": 0.4, "calls": 8, "examples": 6, "partition-id": 3}
    forged = reply_from(7, wire.result(np.zeros(R), metrics), wire.FINISH)
    assert strategy._valid([forged], round_log, wire.FINISH, strategy._check_result) == []
    assert "result for partition 3; this node is 0" in round_log.failures[-1]["reason"]


@EXAMPLES
@given(accuracy=st.one_of(floats, st.integers(-5, 5)))
def test_provider_takes_only_accuracies_in_the_unit_interval(strategy, accuracy):
    from flwr.app import MetricRecord

    reply = reply_from(7, RecordDict({"metrics": MetricRecord({"accuracy": accuracy})}), wire.EVAL_SCORE)
    round_log = RoundLog(1)
    kept = strategy._valid([reply], round_log, wire.EVAL_SCORE, lambda r: wire.read_accuracy(r.content))
    assert bool(kept) == (np.isfinite(accuracy) and 0 <= accuracy <= 1)


# ----------------------------------------------------------------------------- user side
@pytest.fixture()
def user(task_identity):
    """One user that has begun round 1 (its optimiser waits for scores of (POP, N, 2)); shared by
    the examples of a test (hypothesis runs them all inside one call of the test function)."""
    grid = LoopbackGrid(1, RUN.to_run_config())
    begin = Message(wire.start(1, np.zeros(R), "run"), dst_node_id=1000, message_type=wire.BEGIN, group_id="1")
    assert not grid.send_and_receive([begin])[0].has_error()
    return grid


@st.composite
def hostile_down(draw) -> tuple[str, RecordDict, str]:
    """(message type, content, group id) of a hostile provider message."""
    kind = draw(st.sampled_from([wire.BEGIN, wire.STEP, wire.SELECT, wire.FINISH, wire.EVAL_QUERY, wire.EVAL_SCORE]))
    content = RecordDict()
    if draw(st.booleans()):
        content["scores"] = ArrayRecord({"scores": draw(st.one_of(any_array.map(Array), corrupt_array))})
    if draw(st.booleans()):
        content["start"] = ArrayRecord({"z-start": draw(st.one_of(any_array.map(Array), corrupt_array))})
    if draw(st.booleans()):
        content["round"] = ConfigRecord({draw(st.sampled_from(["round", "run-key"])): draw(config_value)})
    group = draw(st.one_of(st.just("1"), st.text(max_size=5), st.integers(-3, 9).map(str)))
    return kind, content, group


@EXAMPLES
@given(message=hostile_down())
def test_user_answers_hostile_messages_with_a_named_error_and_keeps_its_state(user, message):
    kind, content, group = message
    before = user.contexts[1000].state.config_records["search"]["blob"]
    (reply,) = user.send_and_receive([Message(content, dst_node_id=1000, message_type=kind, group_id=group)])
    if reply.has_error():
        event("refused")
        assert reply.error.reason.startswith("ProtocolError"), reply.error.reason
        assert user.contexts[1000].state.config_records["search"]["blob"] == before
    else:  # it was in fact valid: put the user back in the state the next example expects
        event("accepted")
        begin = Message(wire.start(1, np.zeros(R), "run"), dst_node_id=1000, message_type=wire.BEGIN, group_id="1")
        user.contexts[1000].state = RecordDict()
        assert not user.send_and_receive([begin])[0].has_error()
