"""Verification views: a multiple-choice task re-posed as balanced yes/no questions.

The provider trains its prompt generator on these beside the option-scored rows, so that its SDT
data also teaches yes/no answering with label words; a view is a label-word task (no options).
"""

from __future__ import annotations

import random

from .core import VERIFY_SUFFIX, Example, Task
from .formats import YES_NO
from .registry import multiple_choice_rows, task_names


def verification_view(task: Task, seed: int) -> Task:
    """Pair each row's question with its gold option (label 0, " yes") or a wrong one (label 1, " no").

    Exactly half the rows (rounded up) get the gold option, chosen by a seeded shuffle; a "no" row
    gets a seeded random wrong option. The option list is left out of the query. `task` may be any
    subset of a registered multiple-choice task's rows (rows are matched by uid). Raises ValueError
    for classification and yes/no tasks, and for tasks outside the registry.
    """
    if task.name not in task_names():
        raise ValueError(f"verification_view needs a registered multiple-choice task, not {task.name!r}")
    rows = multiple_choice_rows(task.name)
    if rows is None:
        raise ValueError(
            f"{task.name!r} is a classification task with label words {task.label_words}, not multiple choice; "
            "it has no options to verify"
        )
    rng = random.Random(f"verification_view/{task.name}/{seed}")
    order = list(range(len(task.examples)))
    rng.shuffle(order)
    gold_rows = set(order[: (len(order) + 1) // 2])
    examples = []
    for index, example in enumerate(task.examples):
        row = rows[example.uid]
        if index in gold_rows:
            option, label = row.gold, 0
        else:
            option, label = rng.choice([i for i in range(len(row.options)) if i != row.gold]), 1
        examples.append(Example(row.passage, row.verify_query(option), label, example.uid + VERIFY_SUFFIX))
    return Task(
        f"{task.name}{VERIFY_SUFFIX}",
        task.domain,
        YES_NO,
        tuple(examples),
        f"{task.description} Posed as yes/no: is a proposed option the correct one? (balanced, seed {seed})",
    )
