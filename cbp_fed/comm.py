"""Communication metering: a `Grid` wrapper that records the size of every message in both directions.

Flower reports no bytes per round or per client, so the ServerApp wraps its `Grid` in a `MeteredGrid`
and every strategy sends through it unchanged. Each message sent (down: server -> user) and each reply
received (up: user -> server) becomes one `MessageRecord` with two sizes:

- payload bytes: the deflated content records (the `RecordDict` and every record, array and chunk in
  it), which is what the method itself chose to send;
- wire bytes: the whole deflated `Message` object tree, i.e. the payload plus the message's own
  metadata object, which is what Flower actually moves for that message.

Both count each distinct object of a message once, as Flower's transport does, and neither counts the
transport's framing (gRPC/HTTP headers, TLS). Sizes are per message, i.e. what each user's node
receives or sends: content broadcast to many users counts once per user, although the ServerApp's
push uploads an object shared by several messages to the SuperLink only once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from flwr.app import Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run

DIRECTIONS = ("down", "up")
"""down: server -> user (instructions); up: user -> server (replies)."""

_COUNTERS = ("messages", "payload_bytes", "wire_bytes", "errors")

PULL_SHARE = 0.1
"""The most of a hop's waiting that `MeteredGrid.send_and_receive` spends asking for replies. A pull asks
Flower's in-memory LinkState about every reply still awaited (at 10,000 users ~0.1-0.2 s of CPU at the
start of a hop, on the provider's one interpreter), so after a pull it sleeps 9x the CPU time the
lookup took (metering the replies it brought is not counted), and at least the inner grid's interval."""


def nested_objects(obj: Message | RecordDict) -> dict:
    """`obj` and every object nested in it, by object id (the hash of its bytes: equal objects share one).

    Relies on an internal Flower API (`flwr.supercore.inflatable.inflatable_object.get_all_nested_objects`,
    checked against flwr 1.42): it is kept in this one function so that a Flower upgrade breaks one place.
    Flower keeps each object's id once computed, so a second call on the same objects deflates nothing.
    """
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    return get_all_nested_objects(obj)


def deflated_sizes(obj: Message | RecordDict) -> dict[str, int]:
    """Bytes of each distinct object of `obj`'s tree, by object id, as Flower ships them."""
    return {object_id: len(nested.deflate()) for object_id, nested in nested_objects(obj).items()}


def deflated_size(obj: Message | RecordDict) -> int:
    """Bytes of `obj` and all objects nested in it, each distinct object counted once."""
    return sum(deflated_sizes(obj).values())


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")


@dataclass(frozen=True)
class MessageRecord:
    """Size and routing of one message that crossed the `MeteredGrid`.

    `round` is the message's `group_id` (an int when it parses as one, else the raw string);
    `node_id` is the user's node: the destination of a down message, the source of an up message.
    An error reply has `error=True` and zero payload bytes; its wire bytes are still counted.
    """

    round: int | str
    node_id: int
    message_type: str
    direction: str
    payload_bytes: int
    wire_bytes: int
    error: bool

    def __post_init__(self) -> None:
        _check_direction(self.direction)
        if self.payload_bytes < 0 or self.wire_bytes < self.payload_bytes:
            raise ValueError(
                f"need 0 <= payload_bytes <= wire_bytes, got payload {self.payload_bytes}, wire {self.wire_bytes}"
            )

    @classmethod
    def of(cls, message: Message, direction: str) -> MessageRecord:
        """Measure `message` travelling in `direction` ("down" or "up")."""
        metadata = message.metadata
        wire = deflated_sizes(message)  # the payload's objects are among them: one pass sizes both
        return cls(
            round=_parse_round(metadata.group_id),
            node_id=metadata.dst_node_id if direction == "down" else metadata.src_node_id,
            message_type=metadata.message_type,
            direction=direction,
            payload_bytes=0 if message.has_error() else sum(wire[i] for i in nested_objects(message.content)),
            wire_bytes=sum(wire.values()),
            error=message.has_error(),
        )


def _parse_round(group_id: str) -> int | str:
    """The round a `group_id` names: an int when it is one, else the string itself."""
    try:
        return int(group_id)
    except ValueError:
        return group_id


def _zero_counters() -> dict[str, int]:
    return dict.fromkeys(_COUNTERS, 0)


@dataclass(frozen=True)
class WaitProgress:
    """Where a `send_and_receive` stands: round (group id), message type, replies in, messages out, seconds."""

    round: str
    message_type: str
    answered: int
    sent: int
    seconds: float


def _add(counters: dict[str, int], record: MessageRecord) -> None:
    counters["messages"] += 1
    counters["payload_bytes"] += record.payload_bytes
    counters["wire_bytes"] += record.wire_bytes
    counters["errors"] += record.error


class MeteredGrid(Grid):
    """A `Grid` that delegates every call to an inner `Grid` and records each message that passes.

    Down messages are measured before they are handed to the inner grid (which may take them over)
    and recorded once the inner call returns; replies are recorded as they are returned. A call that
    raises records nothing. `node_key` maps a node id to a stable user key (e.g. the partition id) for
    the summaries; it is called when a summary is made, so the mapping may be learnt during the run.
    Measuring deflates each message once more than Flower does (a few ms for a MB-sized message).
    """

    def __init__(self, grid: Grid, node_key: Callable[[int], int | str] | None = None) -> None:
        self._grid = grid
        self._node_key = node_key
        self.records: list[MessageRecord] = []
        self.on_wait: Callable[[WaitProgress], None] | None = None

    # --- the Grid interface, delegated ---

    def set_run(self, run: Run) -> None:
        """Set the run on the inner grid."""
        self._grid.set_run(run)

    @property
    def run(self) -> Run:
        """The inner grid's run."""
        return self._grid.run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        """Create a message through the inner grid (deprecated by Flower in favour of `Message(...)`)."""
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        """The inner grid's connected node ids."""
        return self._grid.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        """The inner grid's connected nodes."""
        return self._grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Push `messages` through the inner grid and record them as down messages."""
        messages = list(messages)
        measured = [MessageRecord.of(message, "down") for message in messages]
        message_ids = self._grid.push_messages(messages)
        self.records += measured
        return message_ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Pull replies through the inner grid and record them as up messages."""
        return self._pull(message_ids)[0]

    def _pull(self, message_ids: Iterable[str]) -> tuple[list[Message], float]:
        """`pull_messages`, and the CPU seconds the inner grid's lookup took (thread time, not wall: other
        threads' share of the GIL and the metering stay out), which paces `send_and_receive`."""
        lookup = time.thread_time()
        replies = list(self._grid.pull_messages(message_ids))
        lookup = time.thread_time() - lookup
        self.records += [MessageRecord.of(reply, "up") for reply in replies]
        return replies, lookup

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Send `messages` and collect the replies, recording both directions.

        Without `on_wait`, the inner grid's own `send_and_receive` does it. With it, this pushes and then
        pulls as Flower's grids do (until all answered or `timeout` passed, at the inner grid's pull
        interval or slower, see `PULL_SHARE`) and calls `on_wait(WaitProgress)` after each pull while
        replies are outstanding, so that the caller can show progress inside a hop."""
        messages = list(messages)
        if self.on_wait is None:
            measured = [MessageRecord.of(message, "down") for message in messages]
            replies = list(self._grid.send_and_receive(messages, timeout=timeout))
            self.records += measured + [MessageRecord.of(reply, "up") for reply in replies]
            return replies
        kind = messages[0].metadata.message_type if messages else ""
        group = messages[0].metadata.group_id if messages else ""
        pending = set(self.push_messages(messages))
        total, started = len(pending), time.monotonic()
        replies = []
        interval = getattr(self._grid, "pull_interval", 3.0)
        while pending:
            pulled, lookup = self._pull(pending)
            replies += pulled
            pending -= {reply.metadata.reply_to_message_id for reply in pulled}
            waited = time.monotonic() - started
            if not pending or (timeout is not None and waited >= timeout):
                break
            self.on_wait(WaitProgress(group, kind, total - len(pending), total, waited))
            time.sleep(max(interval, lookup * (1 / PULL_SHARE - 1)))
        return replies

    # --- summaries ---

    def user_key(self, node_id: int) -> int | str:
        """The user key of `node_id`: `node_key(node_id)` if a mapping was given, else the node id."""
        return node_id if self._node_key is None else self._node_key(node_id)

    def round_summary(self, round: int | str) -> dict:
        """Message counts and bytes of one round, per user, direction and message type, and in total.

        Returns {"users": {user_key: {"down": {message_type: counters}, "up": {...}}},
        "totals": {"down": counters, "up": counters}} where counters are
        {"messages", "payload_bytes", "wire_bytes", "errors"}. A round without messages gives no users
        and zero totals.
        """
        users: dict[int | str, dict[str, dict[str, dict[str, int]]]] = {}
        totals = {direction: _zero_counters() for direction in DIRECTIONS}
        for record in self.records:
            if record.round != round:
                continue
            by_direction = users.setdefault(self.user_key(record.node_id), {d: {} for d in DIRECTIONS})
            _add(by_direction[record.direction].setdefault(record.message_type, _zero_counters()), record)
            _add(totals[record.direction], record)
        return {"users": users, "totals": totals}

    def per_user_mean(self, round: int | str, direction: str) -> dict[str, float]:
        """Mean per user of messages, payload bytes and wire bytes sent in `direction` in `round`.

        The mean is over the users with at least one message in that direction and round; with none,
        every mean is 0.0. Returns {"messages", "payload_bytes", "wire_bytes"}.
        """
        _check_direction(direction)
        per_user: dict[int | str, dict[str, int]] = {}
        for record in self.records:
            if record.round == round and record.direction == direction:
                _add(per_user.setdefault(self.user_key(record.node_id), _zero_counters()), record)
        keys = ("messages", "payload_bytes", "wire_bytes")
        if not per_user:
            return dict.fromkeys(keys, 0.0)
        return {key: sum(counters[key] for counters in per_user.values()) / len(per_user) for key in keys}
