"""Failure injection for reliability runs: users that crash, answer late, or go away for rounds.

The run-config key ``inject-faults`` holds comma-separated ``KIND:PARTITION@ROUNDS`` entries, with
ROUNDS one round ``R`` or a range ``R1-R2``:

    crash:1@2     user 1 crashes in round 2: its train.finish handler raises (the round is cut short
                  after train.begin and the steps, with a population asked but never told)
    late:2@2      user 2 answers train.finish of round 2 two seconds after the round timeout
    away:3@2-3    user 3 refuses every message of rounds 2 and 3 at once, as an unreachable node would

The faults fire inside the real ClientApp, so they travel through Flower like real ones (an error
reply, a missing reply). Imports nothing heavy: the ClientApp uses it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

KINDS = ("crash", "late", "away")
_ENTRY = re.compile(r"^(?P<kind>[a-z]+):(?P<partition>\d+)@(?P<first>\d+)(?:-(?P<last>\d+))?$")


class InjectedFault(RuntimeError):
    """Raised by a user on purpose; the message says which fault it is."""


@dataclass(frozen=True)
class Fault:
    kind: str
    partition: int
    first: int
    last: int

    def covers(self, partition: int, round: int) -> bool:
        return partition == self.partition and self.first <= round <= self.last


def parse_faults(spec: str) -> tuple[Fault, ...]:
    """``"crash:1@2,away:3@2-3"`` -> Faults; a malformed entry raises ValueError naming it."""
    faults = []
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        match = _ENTRY.match(entry)
        if not match or match["kind"] not in KINDS:
            raise ValueError(f"fault {entry!r}: expected KIND:PARTITION@ROUND or KIND:PARTITION@R1-R2, KIND in {KINDS}")
        first = int(match["first"])
        last = int(match["last"] or first)
        if not 1 <= first <= last:
            raise ValueError(f"fault {entry!r}: rounds start at 1 and R1 <= R2")
        faults.append(Fault(match["kind"], int(match["partition"]), first, last))
    return tuple(faults)


def inject(faults: tuple[Fault, ...], partition: int, round: int, message_type: str, round_timeout: float) -> None:
    """Act out the faults planned for this user, round and message (raise, sleep, or nothing)."""
    for fault in faults:
        if not fault.covers(partition, round):
            continue
        if fault.kind == "away":
            raise InjectedFault(f"user {partition} unreachable (injected: away in rounds {fault.first}-{fault.last})")
        if message_type == "train.finish" and fault.kind == "crash":
            raise InjectedFault(f"user {partition} crashed (injected) in round {round}")
        if message_type == "train.finish" and fault.kind == "late":
            time.sleep(round_timeout + 2.0)
