"""Who may see which rows: the provider's server-side rows versus the users' rows, and per-user splits.

The server/user partition hashes each row's uid, so it is the same in every process and run and
disjoint by construction. Users draw their train/dev/test only from user-side rows. A custom task is a
user's own data: all its rows are user-side, and its own dev and test files are used as given.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from .core import Example, Task, row_key
from .custom import CustomTask

SERVER_FRACTION = 0.3


def is_server_side(uid: str, server_fraction: float = SERVER_FRACTION) -> bool:
    """Whether a row belongs to the provider: sha256 of its `row_key` (the uid without a view suffix) below
    the fraction."""
    digest = hashlib.sha256(row_key(uid).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < server_fraction


def server_user_partition(
    task: Task, server_fraction: float = SERVER_FRACTION
) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    """(server-side rows, user-side rows) of `task`, each in the task's order.

    Server-side rows are used only for the provider's domain training, user-side rows only by users.
    A verification-view row falls on the same side as the row it was made from. Every row of a
    `CustomTask` is user-side: a user's own data is never the provider's.
    """
    if not 0.0 <= server_fraction <= 1.0:
        raise ValueError(f"server_fraction must be in [0, 1], got {server_fraction}")
    if isinstance(task, CustomTask):
        return (), task.examples
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


def _own_rows(task: Task, rows: tuple[Example, ...]) -> tuple[list[Example], list | None, list | None]:
    """(rows train is drawn from, the user's own dev rows, own test rows) of ``rows``; None where the
    task has no dev or test file of its own (registered tasks, a custom task with one `source`)."""
    dev_uids, test_uids = (task.dev_uids, task.test_uids) if isinstance(task, CustomTask) else (set(), set())
    pool = [example for example in rows if example.uid not in dev_uids and example.uid not in test_uids]
    dev = [example for example in rows if example.uid in dev_uids] if dev_uids else None
    test = [example for example in rows if example.uid in test_uids] if test_uids else None
    return pool, dev, test


def _draw_train_dev(
    task: Task, pool: list[Example], n_train: int, n_dev: int, rng: random.Random, class_balanced: bool, kind: str
) -> tuple[list[Example], list[Example]]:
    """Disjoint stratified train and dev samples of ``pool`` (see `user_split`); ValueError naming the
    task (and class) when the ``kind`` rows of ``pool`` do not suffice."""
    n_classes = len(task.label_words)
    by_class = [[example for example in pool if example.label == label] for label in range(n_classes)]
    asked = f"{n_train} train + {n_dev} dev rows asked for"
    if not class_balanced and len(pool) < n_train + n_dev:
        raise ValueError(f"task {task.name!r} has {len(pool)} {kind} rows, fewer than the {asked}: ask for fewer shots")
    train_quotas, dev_quotas = split_quotas([len(rows) for rows in by_class], n_train, n_dev, rng, class_balanced)
    for label, rows in enumerate(by_class):
        if len(rows) < train_quotas[label] + dev_quotas[label]:
            raise ValueError(
                f"task {task.name!r}: class {label} ({task.label_words[label]!r}) has {len(rows)} {kind} rows, "
                f"fewer than the {train_quotas[label]} train + {dev_quotas[label]} dev rows asked for"
            )
    train, dev = stratified_draw(by_class, [train_quotas, dev_quotas], rng)
    return train, dev


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

    A custom task with its own split files: train (and dev, without a dev file) come from its train
    file; dev is its dev file (all of it, or a random `n_dev` of its rows when `n_dev` is set), test
    its test file (a random `n_test` of its rows when it has more).
    """
    n_classes = len(task.label_words)
    n_train = shots_per_class * n_classes
    if shots_per_class < 0 or (n_dev is not None and n_dev < 0) or n_test < 0:
        raise ValueError(f"shots_per_class, n_dev and n_test must be >= 0, got {shots_per_class}, {n_dev}, {n_test}")
    rng = random.Random(f"user_split/{task.name}/{seed}")
    _, user_rows = server_user_partition(task)
    pool, own_dev, own_test = _own_rows(task, user_rows)
    kind = "train-file" if own_dev is not None or own_test is not None else "user-side"
    n_drawn_dev = 0 if own_dev is not None else n_train if n_dev is None else n_dev
    train, dev = _draw_train_dev(task, pool, n_train, n_drawn_dev, rng, class_balanced, kind)
    if own_dev is not None:
        dev = rng.sample(own_dev, len(own_dev) if n_dev is None else min(n_dev, len(own_dev)))
    if own_test is None:
        taken = {example.uid for example in train + dev}
        test_rows = [example for example in pool if example.uid not in taken]
    else:
        test_rows = own_test
    test = rng.sample(test_rows, min(n_test, len(test_rows)))
    return UserSplit(tuple(train), tuple(dev), tuple(test))
