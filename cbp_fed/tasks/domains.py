"""Domains and the provider's domain-training (SDT) pools.

A domain names the tasks whose server-side rows the provider may train on (`sdt_tasks`) and the
tasks kept out of its pool entirely (`held_out_tasks`, a task-level hold-out for users only).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from .core import Example, Task
from .registry import load_task
from .splits import server_user_partition
from .verify import verification_view


@dataclass(frozen=True)
class Domain:
    """A domain: tasks the provider trains on (server-side rows only) and tasks it never sees."""

    name: str
    sdt_tasks: tuple[str, ...]
    held_out_tasks: tuple[str, ...]


DOMAINS: dict[str, Domain] = {
    "commonsense": Domain(
        "commonsense",
        ("piqa", "siqa", "hellaswag", "winogrande", "arc-easy", "arc-challenge", "openbookqa", "commonsenseqa", "copa"),
        ("boolq",),
    ),
    "medical": Domain("medical", ("medmcqa", "medqa", "mmlu-medical"), ("pubmedqa",)),
    # A finance-knowledge proxy (MMLU economics for SDT, MMLU business for users), not sentiment data.
    "finance": Domain("finance", ("mmlu-economics",), ("mmlu-business",)),
}


def _balanced_quotas(size: int, capacities: list[int], rng: random.Random) -> list[int]:
    """Split `size` (at most the total capacity) as evenly as possible, never above a capacity.

    Every source gets min(capacity, level) for the highest level that fits, so what a small source
    cannot take is spread over the others; the few units left go to a seeded random choice of the
    sources still below capacity. Unsaturated quotas therefore differ by at most one.
    """
    level = 0
    while level < max(capacities) and sum(min(capacity, level + 1) for capacity in capacities) <= size:
        level += 1
    quotas = [min(capacity, level) for capacity in capacities]
    below = [source for source, capacity in enumerate(capacities) if capacity > level]
    for source in rng.sample(below, size - sum(quotas)):
        quotas[source] += 1
    return quotas


def domain_pool(domain: str, seed: int, size: int) -> list[tuple[Task, Example]]:
    """A seeded SDT sample of `size` items from the server-side rows of the domain's sdt_tasks.

    Items are balanced across tasks (a task with too few server-side rows gives all it has and the
    others make up the difference), and each task's share is half native format, half through
    `verification_view`. Each item is paired with its Task, restricted to server-side rows, so the
    trainer can group items by task and share label words. Held-out tasks never enter.
    """
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; known domains: {', '.join(DOMAINS)}")
    rng = random.Random(f"domain_pool/{domain}/{seed}")
    views: list[tuple[Task, Task]] = []
    for name in DOMAINS[domain].sdt_tasks:
        task = load_task(name)
        native = replace(task, examples=server_user_partition(task)[0])
        views.append((native, verification_view(native, seed)))
    capacities = [len(native.examples) + len(verify.examples) for native, verify in views]
    if not 0 <= size <= sum(capacities):
        raise ValueError(f"domain {domain!r} has {sum(capacities)} server-side items; cannot draw {size}")
    pool: list[tuple[Task, Example]] = []
    odd_shares = 0
    for (native, verify), quota in zip(views, _balanced_quotas(size, capacities, rng), strict=True):
        n_native = quota // 2
        if quota % 2:  # alternate a task's odd item between the two formats
            n_native += odd_shares % 2 == 0
            odd_shares += 1
        pool += [(native, example) for example in rng.sample(native.examples, n_native)]
        pool += [(verify, example) for example in rng.sample(verify.examples, quota - n_native)]
    rng.shuffle(pool)
    return pool
