"""A custom task spec inferred from a data file alone: `cbp-fed customize --task reviews.csv`.

A user's first try is their CSV as it is. A task needs more than rows (which column is the text,
which the answer, the prompt, the label words), so this guesses them the way a person would, for a
label-word classification task: the label column by its name (label, sentiment, stars, ...) or as the
only column with a few distinct values, the text column by its name (text, review, sentence, ...) or
as the longest text, each distinct label value as its own answer word. `--text-column` and
`--label-column` settle either guess; labels that are not words (0/1, star counts) need `--label-words`,
one answer word per value: " 1" and " 5" would even share their first token (a space) in most
tokenizers, so the model could not tell them apart. The result is an ordinary spec (`CustomTaskConfig` keys), which
the CLI prints and keeps with the run so that it can be copied into a spec file and changed; where no
sensible guess exists the error says what to name and where the spec format is described.
"""

from __future__ import annotations

import json
from pathlib import Path

from .custom import _read_file

DATA_SUFFIXES = (".csv", ".jsonl", ".parquet")
"""Data files a task can be inferred from (`.json` names a spec file)."""
LABEL_NAMES = ("label", "labels", "answer", "sentiment", "class", "category", "target", "stars", "rating", "y")
TEXT_NAMES = ("text", "sentence", "review", "content", "document", "body", "passage", "question", "input")
GENERIC_LABELS = ("label", "labels", "class", "category", "target", "y")
"""Label columns whose name says nothing about the answer: the query then ends in "Answer:"."""
MAX_LABELS = 10
"""More distinct values than this is not a classification label (free text, ids, scores)."""
TEMPLATE_UNSAFE = set("{}[].!:")
HELP = (
    "name the columns with --text-column and --label-column, or describe the task in a spec file "
    '(README, "Your own data")'
)


def is_data_file(name: str) -> bool:
    """True when ``name`` is a data file a task can be inferred from (not a spec, not a registered task)."""
    return Path(name).suffix.lower() in DATA_SUFFIXES


def infer_spec(
    path: str, text_column: str | None = None, label_column: str | None = None, label_words: str | None = None
) -> dict:
    """The spec keys of a label-word task over the rows of ``path`` (all rows: train, dev and test are
    drawn from them), or ValueError saying why none can be inferred and what to do instead.
    ``label_words``: comma-separated answer words, one per label value in sorted order (default: the
    values themselves, when they are words)."""
    rows = _read_file(path, "file")
    columns = rows.column_names
    for given in (text_column, label_column):
        if given is not None and given not in columns:
            raise _refusal(path, f"it has no column {given!r} (its columns: {', '.join(map(repr, columns))})")
    label = label_column or _label_column(path, rows)
    text = text_column or _text_column(path, rows, label)
    if text == label:
        raise _refusal(path, f"the text and the label cannot both be column {text!r}")
    if TEMPLATE_UNSAFE & set(text):
        raise _refusal(path, f"text column {text!r} has a character a template cannot name ({{}}[].!:)")
    values = _label_values(path, rows, label)
    cue = "Answer" if label.lower() in GENERIC_LABELS else _title(label)
    return {
        "name": Path(path).stem,
        "source": str(Path(path).resolve()),
        "passage_template": f"{_title(text)}: {{{text}}}\n",
        "template": f"{cue}:",
        "label_column": label,
        "label_values": values,
        "label_words": _words(path, label, values, label_words),
    }


def spec_toml(spec: dict) -> str:
    """``spec`` as the lines of a TOML spec file (strings and lists of strings only)."""
    return "".join(f"{key} = {json.dumps(value, ensure_ascii=False)}\n" for key, value in spec.items())


def _refusal(path: str, reason: str) -> ValueError:
    return ValueError(f"cannot infer a task from {path}: {reason}; {HELP}")


def _distinct(rows, column: str) -> set[str]:
    """The column's distinct non-blank values, as text (how the spec compares labels)."""
    return {str(value) for value in rows[column] if value is not None and str(value).strip()}


def _label_column(path: str, rows) -> str:
    """The column named like a label, else the only column with 2..MAX_LABELS distinct values."""
    by_name = {column.lower(): column for column in rows.column_names}
    for name in LABEL_NAMES:
        if name in by_name:
            return by_name[name]
    few = [column for column in rows.column_names if 2 <= len(_distinct(rows, column)) <= MAX_LABELS]
    if len(few) != 1:
        found = f"{len(few)} columns ({', '.join(map(repr, few))}) could be it" if few else "none could be it"
        raise _refusal(path, f"no column is named like a label ({', '.join(LABEL_NAMES)}) and {found}")
    return few[0]


def _text_column(path: str, rows, label: str) -> str:
    """The column named like a text, else the text column (strings) with the longest mean length."""
    others = [column for column in rows.column_names if column != label]
    by_name = {column.lower(): column for column in others}
    for name in TEXT_NAMES:
        if name in by_name:
            return by_name[name]
    texts = [column for column in others if all(isinstance(value, str) for value in rows[column])]
    if not texts:
        raise _refusal(path, f"besides the label column {label!r} it has no column of text")
    return max(texts, key=lambda column: sum(len(value) for value in rows[column]))


def _label_values(path: str, rows, label: str) -> list[str]:
    """The label column's distinct values in order (numerically when all are numbers): one answer each."""
    values = _distinct(rows, label)
    if not 2 <= len(values) <= MAX_LABELS:
        raise _refusal(
            path,
            f"label column {label!r} has {len(values)} distinct values; a classification task needs 2 to {MAX_LABELS}",
        )
    words = [" " + value.strip() for value in values]
    if len(set(words)) != len(words):
        raise _refusal(path, f"label column {label!r} has values that differ only in spaces: {sorted(values)}")
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


def _words(path: str, label: str, values: list[str], given: str | None) -> list[str]:
    """One answer word per label value, each with its leading space: ``given`` (comma-separated, in the
    values' order), else the values themselves when each is a word."""
    if given is not None:
        words = [" " + word.strip() for word in given.split(",")]
        if len(words) != len(values) or not all(word.strip() for word in words):
            raise _refusal(path, f"--label-words {given!r} must name {len(values)} words, one per value {values}")
        return words
    if not all(any(char.isalpha() for char in value) for value in values):
        example = ", ".join(f"word{i + 1}" for i in range(len(values)))
        raise _refusal(
            path,
            f"label column {label!r} holds {', '.join(values)}, not words the model could answer with; "
            f'give one word per value with --label-words "{example}" (in that order)',
        )
    return [" " + value.strip() for value in values]


def _title(column: str) -> str:
    """A column's name as a prompt's field name: "review_text" -> "Review text"."""
    return column.replace("_", " ").strip().capitalize()
