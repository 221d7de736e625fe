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


def _prior_quotas(counts: list[int], size: int, rng: random.Random) -> list[int]:
    """Split `size` (at most sum(counts)) over classes in proportion to their row `counts`.

    Largest remainders round the shares (ties broken by `rng`), so each quota is within one row of
    its exact share; then every class that has rows gets at least one when `size` allows, taken from
    the largest quota. Quotas never exceed counts: a share of at most the whole rounds up to at most it.
    """
    total = sum(counts)
    shares = [size * count / total for count in counts] if total else [0.0] * len(counts)
    quotas = [int(share) for share in shares]
    by_remainder = sorted(range(len(counts)), key=lambda c: (shares[c] - quotas[c], rng.random()), reverse=True)
    for label in by_remainder[: size - sum(quotas)]:
        quotas[label] += 1
    present = [label for label, count in enumerate(counts) if count]
    if size >= len(present):
        for label in present:
            if not quotas[label]:
                quotas[max(range(len(quotas)), key=quotas.__getitem__)] -= 1
                quotas[label] = 1
    return quotas


def stratified_draw(by_class: list[list[Example]], quotas: list[list[int]], rng: random.Random) -> list[list[Example]]:
    """Disjoint seeded samples, one per quota list: `quotas[k][c]` rows of class c in sample k.

    Each class's rows are shuffled once (a copy; `by_class` is left unchanged) and cut into
    consecutive pieces, then each sample is shuffled. The caller checks that a class's quotas fit.
    """
    draws: list[list[Example]] = [[] for _ in quotas]
    for label, rows in enumerate(by_class):
        rows = list(rows)
        rng.shuffle(rows)
        start = 0
        for draw, quota in zip(draws, quotas, strict=True):
            draw += rows[start : start + quota[label]]
            start += quota[label]
    for draw in draws:
        rng.shuffle(draw)
    return draws


def _even_quotas(n_classes: int, size: int, rng: random.Random) -> list[int]:
    """`size` split evenly over classes; the `size % n_classes` extra rows go to seeded random classes."""
    extra = set(rng.sample(range(n_classes), size % n_classes))
    return [size // n_classes + (label in extra) for label in range(n_classes)]


def split_quotas(
    counts: list[int], n_train: int, n_dev: int, rng: random.Random, class_balanced: bool
) -> tuple[list[int], list[int]]:
    """Rows per class for train and for dev, given each class's row `counts`.

    Natural prior (default): train follows the counts' proportions, then dev those of the rows
    train leaves. `class_balanced`: both as even across classes as divisibility allows. A quota may
    exceed its class's rows only where the rows do not suffice; the caller checks.
    """
    if class_balanced:
        n_classes = len(counts)
        return _even_quotas(n_classes, n_train, rng), _even_quotas(n_classes, n_dev, rng)
    train = _prior_quotas(counts, n_train, rng)
    return train, _prior_quotas([max(0, count - quota) for count, quota in zip(counts, train, strict=True)], n_dev, rng)


def user_split(
    task: Task,
    seed: int,
    shots_per_class: int = 16,
    n_dev: int | None = None,
    n_test: int = 300,
    class_balanced: bool = False,
) -> UserSplit:
    """A seeded few-shot split of `task`'s user-side rows.

    train: `shots_per_class` x C rows. By default a stratified sample with the user-side rows' own
    class proportions (a user's few shots look like its data; every class present appears at least
    once when the size allows); `class_balanced=True` takes exactly `shots_per_class` rows per class
    instead. dev: `n_dev` rows (default: as many as train) from the rest, drawn the same way (as
    balanced as divisibility allows when `class_balanced`). test: up to `n_test` of the remaining rows,
    a plain random sample that keeps the natural label distribution (so the majority-class rate means
    something). The same seed gives the same split; raises ValueError naming the task when there are
    too few user-side rows (in a class, when class-balanced).
    """
    n_classes = len(task.label_words)
    n_train = shots_per_class * n_classes
    n_dev = n_train if n_dev is None else n_dev
    if shots_per_class < 0 or n_dev < 0 or n_test < 0:
        raise ValueError(f"shots_per_class, n_dev and n_test must be >= 0, got {shots_per_class}, {n_dev}, {n_test}")
    rng = random.Random(f"user_split/{task.name}/{seed}")
    _, user_rows = server_user_partition(task)
    by_class = [[example for example in user_rows if example.label == label] for label in range(n_classes)]
    if not class_balanced and len(user_rows) < n_train + n_dev:
        raise ValueError(
            f"task {task.name!r} has {len(user_rows)} user-side rows, fewer than the {n_train} train + {n_dev} dev "
            "rows asked for"
        )
    train_quotas, dev_quotas = split_quotas([len(rows) for rows in by_class], n_train, n_dev, rng, class_balanced)
    for label, rows in enumerate(by_class):
        if len(rows) < train_quotas[label] + dev_quotas[label]:
            raise ValueError(
                f"task {task.name!r}: class {label} ({task.label_words[label]!r}) has {len(rows)} user-side rows, "
                f"fewer than the {train_quotas[label]} train + {dev_quotas[label]} dev rows asked for"
            )
    train, dev = stratified_draw(by_class, [train_quotas, dev_quotas], rng)
    taken = {example.uid for example in train + dev}
    remaining = [example for example in user_rows if example.uid not in taken]
    test = rng.sample(remaining, min(n_test, len(remaining)))
    return UserSplit(tuple(train), tuple(dev), tuple(test))
