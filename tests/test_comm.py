"""MeteredGrid: sizes and bookkeeping of real Flower messages passed through a fake in-process Grid."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from cbp_fed.comm import MessageRecord, MeteredGrid, deflated_size

pytestmark = pytest.mark.usefixtures("task_identity")

NODES = (1001, 2002, 3003)


class EchoGrid(Grid):
    """An in-process Grid whose nodes reply with the content they were sent, or an error for `failing` nodes."""

    def __init__(self, failing: Iterable[int] = ()) -> None:
        self.failing = set(failing)
        self.pending: dict[str, Message] = {}
        self.ids = itertools.count()
        self._run: Run | None = None

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(NODES)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = f"m{next(self.ids)}"  # as Flower's grids give ids
            ids.append(message.metadata.message_id)
            self.pending[ids[-1]] = message
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._reply(self.pending.pop(m)) for m in list(message_ids) if m in self.pending]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))

    def _reply(self, message: Message) -> Message:
        if message.metadata.dst_node_id in self.failing:
            return Message(Error(code=1, reason="client crashed"), reply_to=message)
        return Message(message.content, reply_to=message)


def _floats(n: int, seed: int = 0) -> np.ndarray:
    """Random float32s: distinct values, so no array chunk is shared with another."""
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def _message(node: int, n: int, group_id: str = "2", message_type: str = "train.begin") -> Message:
    content = RecordDict({"z": ArrayRecord({"z": Array(_floats(n, node))}), "cfg": ConfigRecord({"sigma": 0.5})})
    return Message(content, dst_node_id=node, message_type=message_type, group_id=group_id)


def test_payload_grows_by_four_bytes_per_float32_and_wire_adds_metadata():
    small, large = _message(NODES[0], 100), _message(NODES[0], 1100)
    small_payload, large_payload = deflated_size(small.content), deflated_size(large.content)
    assert abs(large_payload - small_payload - 4 * 1000) <= 16
    for message in (small, large):
        record = MessageRecord.of(message, "down")
        assert record.payload_bytes == deflated_size(message.content)
        assert record.wire_bytes > record.payload_bytes
    # The wire overhead is the metadata object alone: independent of the array size.
    overhead = [
        MessageRecord.of(m, "down").wire_bytes - MessageRecord.of(m, "down").payload_bytes for m in (small, large)
    ]
    assert overhead[0] == overhead[1]


def test_send_and_receive_records_both_directions_per_round_and_type():
    grid = MeteredGrid(EchoGrid())
    replies = grid.send_and_receive([_message(node, 500) for node in NODES])
    grid.send_and_receive([_message(NODES[0], 10, group_id="3", message_type="train.step")])
    assert len(replies) == 3
    assert [(r.round, r.direction) for r in grid.records[:6]] == [(2, "down")] * 3 + [(2, "up")] * 3
    assert {r.node_id for r in grid.records if r.direction == "up" and r.round == 2} == set(NODES)
    last = grid.records[-1]
    assert (last.round, last.node_id, last.message_type, last.direction) == (3, NODES[0], "train.step", "up")
    summary = grid.round_summary(2)
    assert set(summary["users"]) == set(NODES)
    down = summary["users"][NODES[1]]["down"]["train.begin"]
    assert down["messages"] == 1 and down["errors"] == 0 and down["wire_bytes"] > down["payload_bytes"] > 2000
    assert summary["users"][NODES[1]]["up"]["train.begin"]["payload_bytes"] == down["payload_bytes"]  # echoed
    assert summary["totals"]["down"]["messages"] == 3 and summary["totals"]["up"]["messages"] == 3
    assert summary["totals"]["down"]["payload_bytes"] == sum(r.payload_bytes for r in grid.records[:3])
    assert set(grid.round_summary(3)["users"]) == {NODES[0]}
    assert grid.round_summary(99) == {
        "users": {},
        "totals": {d: {"messages": 0, "payload_bytes": 0, "wire_bytes": 0, "errors": 0} for d in ("down", "up")},
    }


def test_push_and_pull_are_recorded_and_node_key_maps_users():
    partition_of = {node: f"user-{index}" for index, node in enumerate(NODES)}
    grid = MeteredGrid(EchoGrid(), node_key=partition_of.__getitem__)
    ids = grid.push_messages(_message(node, 50) for node in NODES)  # a generator is accepted
    assert [r.direction for r in grid.records] == ["down"] * 3
    grid.pull_messages(ids)
    assert [r.direction for r in grid.records] == ["down"] * 3 + ["up"] * 3
    assert set(grid.round_summary(2)["users"]) == {"user-0", "user-1", "user-2"}


def test_error_replies_are_counted_as_errors_with_zero_payload():
    grid = MeteredGrid(EchoGrid(failing=[NODES[2]]))
    replies = grid.send_and_receive([_message(node, 200) for node in NODES])
    assert sum(reply.has_error() for reply in replies) == 1
    (failed,) = [r for r in grid.records if r.error]
    assert (failed.direction, failed.node_id, failed.payload_bytes, failed.message_type) == (
        "up",
        NODES[2],
        0,
        "train.begin",
    )
    assert failed.wire_bytes > 0
    summary = grid.round_summary(2)
    assert summary["totals"]["up"]["errors"] == 1 and summary["totals"]["down"]["errors"] == 0
    assert summary["users"][NODES[2]]["up"]["train.begin"]["errors"] == 1


def test_per_user_mean_averages_over_users_with_messages():
    grid = MeteredGrid(EchoGrid(), node_key=lambda node: 0 if node == NODES[0] else 1)
    grid.send_and_receive([_message(NODES[0], 1000), _message(NODES[1], 1000), _message(NODES[2], 1000)])
    down = [r for r in grid.records if r.direction == "down"]
    mean = grid.per_user_mean(2, "down")
    assert mean["messages"] == 1.5  # user 1 holds two nodes
    assert mean["payload_bytes"] == sum(r.payload_bytes for r in down) / 2
    assert mean["wire_bytes"] == sum(r.wire_bytes for r in down) / 2
    assert grid.per_user_mean(5, "up") == {"messages": 0.0, "payload_bytes": 0.0, "wire_bytes": 0.0}
    with pytest.raises(ValueError, match="direction must be one of"):
        grid.per_user_mean(2, "sideways")


def test_non_numeric_group_id_is_kept_as_string():
    grid = MeteredGrid(EchoGrid())
    grid.send_and_receive([_message(NODES[0], 10, group_id="warmup")])
    assert {r.round for r in grid.records} == {"warmup"}
    assert grid.round_summary("warmup")["totals"]["up"]["messages"] == 1


def test_grid_interface_is_delegated():
    inner = EchoGrid()
    grid = MeteredGrid(inner)
    run = Run.create_empty(run_id=7)
    grid.set_run(run)
    assert grid.run is run and inner.run is run
    assert list(grid.get_node_ids()) == list(NODES)
    assert [node.node_id for node in grid.get_nodes()] == list(NODES)
    message = grid.create_message(RecordDict(), "query", NODES[0], "1")
    assert message.metadata.dst_node_id == NODES[0] and grid.records == []


class LateGrid(EchoGrid):
    """Nodes in ``late`` answer on the second pull only; nodes in ``silent`` never answer."""

    pull_interval = 0.01

    def __init__(self, late: Iterable[int] = (), silent: Iterable[int] = ()) -> None:
        super().__init__()
        self.late, self.silent, self.pulls = set(late), set(silent), 0

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self.pulls += 1
        held = self.silent | (self.late if self.pulls < 2 else set())
        ready = [m for m in message_ids if m in self.pending and self.pending[m].metadata.dst_node_id not in held]
        return super().pull_messages(ready)


def test_send_and_receive_reports_progress_while_replies_are_outstanding_and_stops_at_the_timeout():
    grid = MeteredGrid(LateGrid(late=[2002], silent=[3003]))
    seen = []
    grid.on_wait = seen.append
    replies = grid.send_and_receive([_message(node, 4, group_id="3") for node in NODES], timeout=0.2)
    assert sorted(r.metadata.src_node_id for r in replies) == [1001, 2002]  # 3003 never answered
    first = seen[0]
    assert (first.round, first.message_type, first.answered, first.sent) == ("3", "train.begin", 1, 3)
    assert seen[-1].answered == 2 and seen[-1].seconds < 0.2 + 0.1
    assert sum(r.direction == "down" for r in grid.records) == 3 and sum(r.direction == "up" for r in grid.records) == 2
