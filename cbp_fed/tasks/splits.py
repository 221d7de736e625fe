"""Who may see which rows: the provider's server-side rows versus the users' rows, and per-user splits.

The server/user partition hashes each row's uid, so it is the same in every process and run and
disjoint by construction. Users draw their train/dev/test only from user-side rows.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from .core import VERIFY_SUFFIX, Example, Task

SERVER_FRACTION = 0.3


def is_server_side(uid: str, server_fraction: float = SERVER_FRACTION) -> bool:
    """Whether a row belongs to the provider: sha256 of its uid (without a view suffix) below the fraction."""
    digest = hashlib.sha256(uid.removesuffix(VERIFY_SUFFIX).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < server_fraction


def server_user_partition(
    task: Task, server_fraction: float = SERVER_FRACTION
) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    """(server-side rows, user-side rows) of `task`, each in the task's order.

    Server-side rows are used only for the provider's domain training, user-side rows only by users.
    A verification-view row falls on the same side as the row it was made from.
    """
    if not 0.0 <= server_fraction <= 1.0:
        raise ValueError(f"server_fraction must be in [0, 1], got {server_fraction}")
    server, user = [], []
    for example in task.examples:
        (server if is_server_side(example.uid, server_fraction) else user).append(example)
    return tuple(server), tuple(user)


@dataclass(frozen=True)
class UserSplit:
    """One user's disjoint few-shot train, dev and test rows of a task."""

    train: tuple[Example, ...]
    dev: tuple[Example, ...]
    test: tuple[Example, ...]


def user_split(
    task: Task, seed: int, shots_per_class: int = 16, n_dev: int | None = None, n_test: int = 300
) -> UserSplit:
    """A seeded few-shot split of `task`'s user-side rows.

    train: `shots_per_class` rows per class. dev: `n_dev` rows (default: as many as train), as
    class-balanced as divisibility allows. test: up to `n_test` of the remaining rows, a plain random
    sample that keeps the natural label distribution (so the majority-class rate means something).
    The same seed gives the same split; raises ValueError when a class has too few user-side rows.
    """
    n_classes = len(task.label_words)
    n_dev = shots_per_class * n_classes if n_dev is None else n_dev
    if shots_per_class < 0 or n_dev < 0 or n_test < 0:
        raise ValueError(f"shots_per_class, n_dev and n_test must be >= 0, got {shots_per_class}, {n_dev}, {n_test}")
    rng = random.Random(f"user_split/{task.name}/{seed}")
    _, user_rows = server_user_partition(task)
    by_class = [[example for example in user_rows if example.label == label] for label in range(n_classes)]
    dev_extra = set(rng.sample(range(n_classes), n_dev % n_classes))
    train: list[Example] = []
    dev: list[Example] = []
    for label, rows in enumerate(by_class):
        n_class_dev = n_dev // n_classes + (label in dev_extra)
        if len(rows) < shots_per_class + n_class_dev:
            raise ValueError(
                f"task {task.name!r}: class {label} ({task.label_words[label]!r}) has {len(rows)} user-side rows, "
                f"fewer than the {shots_per_class} train + {n_class_dev} dev rows asked for"
            )
        rng.shuffle(rows)
        train += rows[:shots_per_class]
        dev += rows[shots_per_class : shots_per_class + n_class_dev]
    rng.shuffle(train)
    rng.shuffle(dev)
    taken = {example.uid for example in train + dev}
    rest = [example for example in user_rows if example.uid not in taken]
    test = rng.sample(rest, min(n_test, len(rest)))
    return UserSplit(tuple(train), tuple(dev), tuple(test))
