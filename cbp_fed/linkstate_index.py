"""A per-node index for the simulation's message delivery (Flower 1.42's in-memory LinkState).

Flower's simulation engine hands messages to the ClientApp actors by asking the in-memory LinkState,
for every node in turn, every 0.1 s, for that node's next undelivered message
(``vce_api.add_messages_to_queue``). ``InMemoryLinkState.get_message_ins`` answers by walking every
stored message, so one sweep over the nodes costs nodes x stored messages: about 10^6 checks per sweep
at 1,000 users and 10^8 at 10,000, on the cores the provider and the users need (the 1,000-user profile
in docs/performance.md).

``install()`` keeps, beside the store, each node's message ids in the order they were stored, and
answers ``get_message_ins`` from that node's ids only; a node with none is answered at once (a sweep
still calls it for every node, every 0.1 s: at 10,000 users that call is most of the sweep's cost).
The answer is Flower's: the same messages in the same order (a node's messages in storage order),
each run through Flower's own expiry check (``_check_stored_messages``) first, matched on node and run,
marked delivered. Ids whose message was delivered, expired or deleted are dropped from the index when
met. One difference in timing: Flower's walk also expiry-checks messages already delivered (and not yet
answered) to other nodes; here those are left to the reply path, whose ``get_message_res`` checks the
ids it pulls (the ServerApp keeps pulling while it waits), so an expired message is still never
answered nor delivered. Only ``store_message_ins`` adds to the store in flwr 1.42 (checked by the
tests); the index is built from the store the first time it is needed, so a LinkState holding messages
before ``install()`` is answered alike.

The ServerApp installs it in its own process, which in simulation is the process whose LinkState
delivers the messages; in a deployment that LinkState lives in the SuperLink and this changes nothing.
Only for the Flower version it was written against (``SUPPORTED``): another version is left alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from importlib.metadata import version

from flwr.app import Message

SUPPORTED = "1.42."
"""Flower versions (prefix) whose ``InMemoryLinkState`` this index was checked against."""


def _index(state) -> dict[int, dict[str, None]]:
    """Node id -> its message ids in storage order (dict keys: ordered, O(1) removal); built from the
    store on first use. Call with ``state.lock`` held."""
    index = state.__dict__.get("_cbp_index")
    if index is None:
        index = {}
        for message_id, message in state.message_ins_store.items():
            index.setdefault(message.metadata.dst_node_id, {})[message_id] = None
        state.__dict__["_cbp_index"] = index
    return index


def remember(state, message: Message, message_id: str | None) -> None:
    """After Flower's ``store_message_ins`` returned ``message_id``: index it if it was stored."""
    with state.lock:
        if message_id is not None and message_id in state.message_ins_store:
            _index(state).setdefault(message.metadata.dst_node_id, {})[message_id] = None


def next_messages(state, node_id: int, limit: int | None, run_id: int | None, now: Callable[[], datetime]) -> list:
    """Flower's ``get_message_ins`` from ``node_id``'s own ids: its undelivered messages (of ``run_id``
    when given), at most ``limit``, in storage order, each expiry-checked first, marked delivered."""
    if limit is not None and limit < 1:
        raise AssertionError("`limit` must be >= 1")
    found: list[Message] = []
    with state.lock:
        ids = _index(state).get(node_id, {})
        for message_id in list(ids):
            state._check_stored_messages({message_id})
            message = state.message_ins_store.get(message_id)
            if message is None or message.metadata.delivered_at != "":
                del ids[message_id]
                continue
            if run_id is None or message.metadata.run_id == run_id:
                found.append(message)
            if limit and len(found) == limit:
                break
    delivered_at = now().isoformat()
    for message in found:
        message.metadata.delivered_at = delivered_at
    return found


def install() -> bool:
    """Index ``InMemoryLinkState``'s undelivered messages per node; True if installed (or already)."""
    if not version("flwr").startswith(SUPPORTED):
        return False
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    from flwr.supercore.date import now

    if getattr(InMemoryLinkState, "_cbp_indexed", False):
        return True
    store_message_ins, get_message_ins = InMemoryLinkState.store_message_ins, InMemoryLinkState.get_message_ins

    @functools.wraps(store_message_ins)
    def indexed_store(self, message: Message) -> str | None:
        with self.lock:
            message_id = store_message_ins(self, message)
            remember(self, message, message_id)
        return message_id

    @functools.wraps(get_message_ins)
    def indexed_get(self, node_id: int, limit: int | None, *, run_id: int | None = None) -> list[Message]:
        index = self.__dict__.get("_cbp_index")
        if index is not None and not index.get(node_id) and (limit is None or limit >= 1):
            return []  # nothing stored for this node: the sweep's usual answer, without the lock or a timestamp
        return next_messages(self, node_id, limit, run_id, now)

    InMemoryLinkState.store_message_ins = indexed_store
    InMemoryLinkState.get_message_ins = indexed_get
    InMemoryLinkState._cbp_indexed = True
    return True
