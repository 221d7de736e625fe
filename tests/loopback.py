"""An in-process Grid that delivers messages to the real ClientApp handlers, one Context per user.

It replaces only Flower's transport: messages, contexts, handlers and replies are the real objects,
so strategies and apps are tested on their protocol without Ray or a SuperLink. ``faults`` makes
a node raise (a crashing user) or not answer (a timeout) to test that a round survives them; a
reply that took longer than the timeout is dropped, as Flower's Grid would.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from cbp_fed.client_app import app as client_app


class LoopbackGrid(Grid):
    def __init__(self, num_users: int, run_config: dict, faults: dict[int, str] | None = None):
        self.contexts = {
            1000 + i: Context(
                run_id=1,
                node_id=1000 + i,
                node_config={"partition-id": i, "num-partitions": num_users},
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for i in range(num_users)
        }
        self.faults = faults or {}
        self.delivered: list[Message] = []
        self.ready: dict[str, Message] = {}  # pushed messages' replies, by message id, until pulled
        self.pull_interval = 0.0

    def set_run(self, run) -> None: ...

    @property
    def run(self): ...

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        """Deliver now (through ``send_and_receive``, so its patches apply) and keep the replies until pulled."""
        messages = list(messages)
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())  # as Flower's grids do on push
        replies = self.send_and_receive(messages)
        self.ready.update({reply.metadata.reply_to_message_id: reply for reply in replies})
        return [msg.metadata.message_id for msg in messages]

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self.ready.pop(i) for i in list(message_ids) if i in self.ready]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = []
        for msg in messages:
            self.delivered.append(msg)
            node = msg.metadata.dst_node_id
            fault = self.faults.get(node)
            if fault == "silent":
                continue
            saved = TaskIdentity._node_id
            try:
                TaskIdentity.node_id = node
                if fault == "crash":
                    raise RuntimeError("user process crashed")
                started = time.monotonic()
                reply = client_app(msg, self.contexts[node])
                if timeout is None or time.monotonic() - started <= timeout:
                    replies.append(reply)
            except Exception as err:  # what Flower does with a ClientApp exception: an error reply
                replies.append(Message(Error(code=0, reason=f"{type(err).__name__}: {err}"), reply_to=msg))
            finally:
                TaskIdentity._node_id = saved
        return replies


def delivered_test_accuracies(grid: LoopbackGrid, server_round: int) -> list[float]:
    """The mean over users of each evaluation in ``server_round``, in order, recomputed here: the scores the
    grid delivered at evaluate.score against each user's own test labels (users answered by every
    evaluation of the round only)."""
    import numpy as np

    from cbp_fed import protocol as wire
    from cbp_fed.client_app import User

    per_node: dict[int, list[float]] = {}
    for msg in grid.delivered:
        if msg.metadata.message_type != wire.EVAL_SCORE or msg.metadata.group_id != str(server_round):
            continue
        node = msg.metadata.dst_node_id
        labels = np.array([ex.label for ex in User(grid.contexts[node]).split.test])
        scores = wire.read_array(msg.content, "scores", "scores", 3)[0]
        per_node.setdefault(node, []).append(float((scores.argmax(1) == labels).mean()))
    evaluations = {len(accuracies) for accuracies in per_node.values()}
    assert len(evaluations) == 1, per_node
    return [float(np.mean(column)) for column in zip(*per_node.values())]
