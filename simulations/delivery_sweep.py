"""The simulation's delivery sweep, Flower's LinkState lookup against the per-node index, side by side.

    python -m simulations.delivery_sweep [--users 1000] [--reps 2]

Flower's simulation engine asks its in-memory LinkState, for every node in turn, every 0.1 s, for that
node's next message (``vce_api.add_messages_to_queue``). This builds that LinkState as the simulation
does (``LinkStateFactory``, the run, ``--users`` registered nodes, an ``InMemoryGrid``), pushes one
message per node (a hop) and times, in this process's CPU time, the sweep that delivers them and one
sweep after it, while the delivered messages wait for their replies (the sweep that repeats every
0.1 s for as long as a hop lasts): with Flower's ``get_message_ins`` and with ``cbp_fed.linkstate_index``,
interleaved, the fastest repetition of each. Both must deliver exactly one message per node.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.proto.task_pb2 import Task  # pylint: disable=no-name-in-module
from flwr.server.superlink.fleet.vce.vce_api import _register_nodes
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState, RunRecord
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid import InMemoryGrid

from cbp_fed import linkstate_index


def hop(users: int) -> tuple[float, float, float]:
    """CPU seconds of pushing one message per node, the sweep delivering them, and the next sweep."""
    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
    state = factory.state()
    run = Run.create_empty(7)
    run.primary_task_id, run.federation_id = 1, NOOP_FEDERATION_ID
    state.run_ids[7] = RunRecord(run=run)
    state.task_store[1] = Task(task_id=1, run_id=7)
    nodes = list(_register_nodes(users, factory))
    grid = InMemoryGrid(state_factory=factory)
    grid.set_run(run)
    messages = [
        Message(RecordDict({"c": ConfigRecord({"x": 1})}), dst_node_id=n, message_type="train", group_id="1")
        for n in nodes
    ]
    started = time.process_time()
    grid.push_messages(messages)
    pushed = time.process_time()
    delivered = [state.get_message_ins(node_id=n, limit=1) for n in nodes]
    swept = time.process_time()
    again = [state.get_message_ins(node_id=n, limit=1) for n in nodes]
    idle = time.process_time()
    if not (all(len(d) == 1 for d in delivered) and not any(again)):
        raise AssertionError("a sweep did not deliver exactly one message per node")
    return pushed - started, swept - pushed, idle - swept


def compare(users: int, reps: int) -> dict:
    """Fastest of ``reps`` interleaved hops with Flower's lookup and with the index, CPU seconds."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 1  # the SuperLink's node id
    flower = (InMemoryLinkState.store_message_ins, InMemoryLinkState.get_message_ins)
    linkstate_index.install()
    indexed = (InMemoryLinkState.store_message_ins, InMemoryLinkState.get_message_ins)
    times: dict[str, list] = {"flower": [], "indexed": []}
    try:
        for _ in range(reps):
            for name, methods in (("flower", flower), ("indexed", indexed)):
                InMemoryLinkState.store_message_ins, InMemoryLinkState.get_message_ins = methods
                times[name].append(hop(users))
    finally:
        InMemoryLinkState.store_message_ins, InMemoryLinkState.get_message_ins = indexed
    best = {name: [min(t[i] for t in rows) for i in range(3)] for name, rows in times.items()}
    return {
        "users": users,
        "reps": reps,
        **{f"{name}_{part}_s": best[name][i] for name in best for i, part in enumerate(("push", "delivery", "idle"))},
        "idle_sweep_speedup": best["flower"][2] / best["indexed"][2],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(compare(args.users, args.reps), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
