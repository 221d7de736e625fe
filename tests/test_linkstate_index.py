"""The per-node delivery index gives Flower's own answers (``InMemoryLinkState.get_message_ins``)."""

from __future__ import annotations

import random
import threading

import pytest
from flwr.app import Message, RecordDict
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
from flwr.supercore.date import now

from cbp_fed import linkstate_index

pytestmark = pytest.mark.usefixtures("task_identity")


class Store:
    """What ``get_message_ins`` uses of an InMemoryLinkState: its lock, store and expiry check (here:
    messages named in ``expired`` are deleted when checked, as Flower deletes an expired message)."""

    def __init__(self):
        self.lock = threading.RLock()
        self.message_ins_store: dict[str, Message] = {}
        self.expired: set[str] = set()

    def _check_stored_messages(self, message_ids: set[str]) -> None:
        for message_id in message_ids & self.expired:
            self.message_ins_store.pop(message_id, None)

    def store(self, message_id: str, node: int) -> None:
        message = Message(RecordDict(), dst_node_id=node, message_type="train", group_id="1")
        message.metadata.__dict__["_message_id"] = message_id
        self.message_ins_store[message_id] = message
        if self.__dict__.get("_cbp_index") is not None:  # indexed: as the installed store_message_ins does
            linkstate_index.remember(self, message, message_id)


def delivered(store: Store, get) -> list[list[str]]:
    """Every node's answer, in sweep order, as ``add_messages_to_queue`` asks (limit 1)."""
    return [[m.metadata.message_id for m in get(store, node)] for node in range(5)]


def undelivered(store: Store) -> list[str]:
    return sorted(i for i, m in store.message_ins_store.items() if not m.metadata.delivered_at)


def test_index_answers_as_flower_does_through_stores_deliveries_expiry_and_deletions():
    original = lambda s, node: InMemoryLinkState.get_message_ins(s, node, 1)  # Flower's, unpatched here
    indexed = lambda s, node: linkstate_index.next_messages(s, node, 1, None, now)
    rng = random.Random(0)
    plain, fast = Store(), Store()
    for step in range(40):
        for _ in range(rng.randrange(4)):
            message_id, node = f"m{step}-{rng.random():.6f}", rng.randrange(5)
            plain.store(message_id, node)
            fast.store(message_id, node)
        if rng.random() < 0.3 and plain.message_ins_store:  # a reply pulled: Flower deletes the message
            gone = rng.choice(sorted(plain.message_ins_store))
            del plain.message_ins_store[gone], fast.message_ins_store[gone]
        if rng.random() < 0.2 and plain.message_ins_store:
            late = rng.choice(sorted(plain.message_ins_store))
            plain.expired.add(late)
            fast.expired.add(late)
        assert delivered(fast, indexed) == delivered(plain, original)
        assert undelivered(fast) == undelivered(plain)
    assert any(m.metadata.delivered_at for m in fast.message_ins_store.values())


def test_index_keeps_a_nodes_messages_in_storage_order_and_honours_limit_and_run():
    store = Store()
    for i in range(4):
        store.store(f"a{i}", node=7)
    store.store("b0", node=8)
    first = linkstate_index.next_messages(store, 7, 2, None, now)
    assert [m.metadata.message_id for m in first] == ["a0", "a1"]
    rest = linkstate_index.next_messages(store, 7, None, None, now)
    assert [m.metadata.message_id for m in rest] == ["a2", "a3"]  # delivered ones are not given twice
    assert linkstate_index.next_messages(store, 7, None, None, now) == []
    other_run = store.message_ins_store["b0"].metadata.run_id + 1
    assert linkstate_index.next_messages(store, 8, 1, other_run, now) == []
    with pytest.raises(AssertionError):
        linkstate_index.next_messages(store, 8, 0, None, now)


def test_install_patches_flowers_linkstate_once():
    assert linkstate_index.install() and linkstate_index.install()
    assert InMemoryLinkState.get_message_ins.__wrapped__ is not None
    assert InMemoryLinkState.get_message_ins.__doc__  # Flower's docstring kept
