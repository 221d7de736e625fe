"""Domains and the provider's domain-training (SDT) pools.

A domain names exactly two user tasks (`user_tasks`), which the provider never trains on, and the
tasks whose server-side rows it may train on (`sdt_tasks`): disjoint from the user tasks at task
level (no row of a user task is in an SDT task, under any name), and disjoint from every user's
rows at row level by the uid partition (`server_user_partition`). An SDT task is of the domain or
`general` (SST-2, RTE, MRPC): a general task teaches the answer words the users answer with.

The choices follow the headroom map (`simulations.headroom`, docs/headroom.md):

- medical (SmolLM2-135M's map): the users rate drug reviews positive/negative (the two condition
  groups). SDT trains on the medical yes/no questions (BioASQ, PubMedQA: zero-shot says "no" too
  often, offsets fitted on 32 rows reach 58-74%) and on SST-2 for the sentiment words; the lettered
  medical knowledge tasks (MedMCQA 16%, MMLU medical 28%, MedQA) are left out: the backbone answers
  them at chance.
- finance: the users answer yes/no about real financial text (does a loan-agreement sentence name an
  entity; does a forum answer address a question). On both backbones a BBT-space prompt beats the
  best a user can do alone on the first by 9-10 points. SDT trains on three other questions about the
  provider's own loan-agreement sentences: does it name a person, an organisation, a place. The users'
  question (any entity) is not among them, and the partition keeps every sentence on one side. The
  MMLU economics and business questions stay registered but out of the pool: SmolLM2-135M answers
  them at chance (economics 20%).
- commonsense keeps its earlier cut (ARC-Easy and PIQA) until the map's ceilings decide it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from .core import Example, Task
from .registry import load_task, multiple_choice_rows
from .splits import server_user_partition
from .verify import verification_view

USER_TASKS_PER_DOMAIN = 2
GENERAL = "general"
"""Tasks of no domain (SST-2, RTE, MRPC): any domain's SDT pool may use them to teach an answer format."""


@dataclass(frozen=True)
class Domain:
    """A domain: tasks the provider trains on (server-side rows only) and its users' tasks, which it never sees."""

    name: str
    sdt_tasks: tuple[str, ...]
    user_tasks: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.user_tasks) != USER_TASKS_PER_DOMAIN:
            raise ValueError(f"domain {self.name!r} needs {USER_TASKS_PER_DOMAIN} user tasks, got {self.user_tasks}")
        shared = set(self.sdt_tasks) & set(self.user_tasks)
        if shared:
            raise ValueError(f"domain {self.name!r}: SDT tasks {sorted(shared)} are also user tasks")


DOMAINS: dict[str, Domain] = {
    "commonsense": Domain(
        "commonsense",
        ("siqa", "hellaswag", "winogrande", "arc-challenge", "openbookqa", "commonsenseqa", "copa", "boolq"),
        ("arc-easy", "piqa"),
    ),
    "medical": Domain("medical", ("bioasq", "pubmedqa", "sst2"), ("drug-reviews-birth-control", "drug-reviews-other")),
    # SDT: entity-type questions on the provider's loan-agreement sentences; no financial sentiment data
    # installs offline, and the MMLU economics and business questions are answered at chance.
    "finance": Domain(
        "finance",
        ("finance-persons", "finance-organisations", "finance-places"),
        ("finance-entities", "fiqa-answers"),
    ),
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


def _server_views(name: str, seed: int) -> tuple[Task, Task | None]:
    """A task restricted to its server-side rows, and its verification view (None for a label-word task)."""
    task = load_task(name)
    native = replace(task, examples=server_user_partition(task)[0])
    return native, verification_view(native, seed) if multiple_choice_rows(name) is not None else None


def _capacities(domain: str, seed: int) -> tuple[list[tuple[Task, Task | None]], list[int]]:
    """Each SDT task's server-side views and how many pool items it can give (native + verification rows)."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; known domains: {', '.join(DOMAINS)}")
    views = [_server_views(name, seed) for name in DOMAINS[domain].sdt_tasks]
    return views, [len(native.examples) + (len(verify.examples) if verify else 0) for native, verify in views]


def domain_capacity(domain: str) -> int:
    """How many items `domain_pool` can draw for ``domain`` at most (its SDT tasks' server-side rows,
    a multiple-choice row counted once natively and once as its yes/no view)."""
    return sum(_capacities(domain, 0)[1])


def domain_pool(domain: str, seed: int, size: int) -> list[tuple[Task, Example]]:
    """A seeded SDT sample of `size` items from the server-side rows of the domain's sdt_tasks.

    Items are balanced across tasks (a task with too few server-side rows gives all it has and the
    others make up the difference). A multiple-choice task's share is half native (option-scored),
    half through `verification_view` (yes/no); a label-word task's share is all native. Each item is
    paired with its Task, restricted to server-side rows, so the trainer can group items by task and
    share label words and scoring. User tasks never enter.
    """
    views, capacities = _capacities(domain, seed)
    rng = random.Random(f"domain_pool/{domain}/{seed}")
    if not 0 <= size <= sum(capacities):
        raise ValueError(f"domain {domain!r} has {sum(capacities)} server-side items; cannot draw {size}")
    pool: list[tuple[Task, Example]] = []
    odd_shares = 0
    for (native, verify), quota in zip(views, _balanced_quotas(size, capacities, rng), strict=True):
        if verify is None:
            pool += [(native, example) for example in rng.sample(native.examples, quota)]
            continue
        n_native = quota // 2
        if quota % 2:  # alternate a task's odd item between the two formats
            n_native += odd_shares % 2 == 0
            odd_shares += 1
        pool += [(native, example) for example in rng.sample(native.examples, n_native)]
        pool += [(verify, example) for example in rng.sample(verify.examples, quota - n_native)]
    rng.shuffle(pool)
    return pool
