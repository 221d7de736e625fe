"""User-supplied tasks: a local CSV/JSON(L)/Parquet file or a Hugging Face hub dataset, plus templates.

This is the way in for data outside the registry (e.g. financial sentiment sets, which no offline
package ships). Hub datasets need network access; local files do not.
"""

from __future__ import annotations

import functools
import json
import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path

import datasets

from .core import Example, Task
from .formats import letter_words

_LOCAL_BUILDERS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


@dataclass(frozen=True, kw_only=True)
class CustomTaskConfig:
    """Where a custom task's rows come from and how to format and label them.

    `template` (the never-truncated query) and `passage_template` (the truncatable context) are
    Python format strings over the row's columns; `template` must end with the answer cue, e.g.
    "Sentence: {sentence}\\nSentiment:".

    A label-word task: `label_values[i]` is the row value (compared as text, so 1 and "1" match)
    that means `label_words[i]`. An option-scored task names its C option columns in
    `option_columns` (each row's options are " " + the column's text, scored as continuations of
    the query, per character when `length_norm`); its `label_words` default to " A", " B", ...
    and only name the options. Its `label_column` holds the gold option's text, or, with
    `label_values`, the value that means option i (e.g. 0..C-1, or "A".."D"). For local files
    `split` only names the split.
    """

    source: str
    split: str = "train"
    hub_config: str | None = None
    template: str
    passage_template: str = ""
    label_column: str
    label_values: tuple = ()
    label_words: tuple[str, ...] = ()
    option_columns: tuple[str, ...] = ()
    length_norm: bool = False
    name: str = "custom"
    domain: str = "custom"


def _read(cfg: CustomTaskConfig) -> datasets.Dataset:
    path = Path(cfg.source)
    if path.suffix.lower() in _LOCAL_BUILDERS:
        if not path.is_file():
            raise FileNotFoundError(f"custom task file {cfg.source} does not exist")
        builder = _LOCAL_BUILDERS[path.suffix.lower()]
        return datasets.load_dataset(builder, data_files={cfg.split: str(path)}, split=cfg.split)
    if path.exists():
        raise ValueError(f"custom task file {cfg.source}: use one of {', '.join(_LOCAL_BUILDERS)}")
    try:
        return datasets.load_dataset(cfg.source, cfg.hub_config, split=cfg.split)
    except Exception as error:
        raise RuntimeError(
            f"could not load hub dataset {cfg.source!r} (config {cfg.hub_config!r}, split {cfg.split!r}): {error}. "
            f"A hub dataset needs network access or a local file ({', '.join(_LOCAL_BUILDERS)})"
        ) from error


def _template_columns(template: str) -> set[str]:
    """Column names a format string reads ("{a}", "{a[0]}", "{a!r:>5}" all read column a)."""
    return {re.split(r"[.\[]", field)[0] for _, field, _, _ in string.Formatter().parse(template) if field}


def _label_words(cfg: CustomTaskConfig) -> tuple[str, ...]:
    """The task's label words, after checking them against the label values and the option columns."""
    if cfg.length_norm and not cfg.option_columns:
        raise ValueError(f"custom task {cfg.name!r}: length_norm applies to option scoring only (set option_columns)")
    if not cfg.option_columns:
        if len(cfg.label_words) != len(cfg.label_values) or len(cfg.label_words) < 2:
            raise ValueError(
                f"custom task {cfg.name!r}: needs as many label_words as label_values (at least 2), "
                f"got {len(cfg.label_words)} words and {len(cfg.label_values)} values"
            )
        return tuple(cfg.label_words)
    n_options = len(cfg.option_columns)
    if n_options < 2 or len(set(cfg.option_columns)) != n_options:
        raise ValueError(f"custom task {cfg.name!r}: needs 2 or more distinct option_columns, got {cfg.option_columns}")
    words = tuple(cfg.label_words) or letter_words(n_options)
    if len(words) != n_options or len(cfg.label_values) not in (0, n_options):
        raise ValueError(
            f"custom task {cfg.name!r}: {n_options} option_columns need as many label_words (default letters) and "
            f"label_values (if any), got {len(words)} words and {len(cfg.label_values)} values"
        )
    return words


def _options(cfg: CustomTaskConfig, row: dict, index: int) -> tuple[str, ...]:
    """Row `index`'s options as continuations (" text"); an empty option is an error naming its column."""
    options = []
    for column in cfg.option_columns:
        text = "" if row[column] is None else str(row[column]).strip()
        if not text:
            raise ValueError(f"{cfg.source} row {index}: option column {column!r} is empty")
        options.append(f" {text}")
    return tuple(options)


def _gold_by_text(cfg: CustomTaskConfig, row: dict, index: int, options: tuple[str, ...]) -> int:
    """The index of the option whose text is the label column's value."""
    value = str(row[cfg.label_column]).strip()
    matches = [i for i, option in enumerate(options) if option.strip() == value]
    if len(matches) != 1:
        raise ValueError(
            f"{cfg.source} row {index}: label {row[cfg.label_column]!r} in column {cfg.label_column!r} matches "
            f"{len(matches)} of the options in columns {cfg.option_columns}, not exactly one"
        )
    return matches[0]


def load_custom_task(cfg: CustomTaskConfig) -> Task:
    """Load and format a custom task, checking the file, the columns, every label value and every option."""
    label_words = _label_words(cfg)
    label_index = {str(value): index for index, value in enumerate(cfg.label_values)}
    if len(label_index) != len(cfg.label_values):
        raise ValueError(f"custom task {cfg.name!r}: label_values {cfg.label_values} are not distinct")
    rows = _read(cfg)
    needed = _template_columns(cfg.template) | _template_columns(cfg.passage_template) | {cfg.label_column}
    for column in sorted(needed | set(cfg.option_columns)):
        if column not in rows.column_names:
            raise KeyError(f"column {column!r} missing in {cfg.source}; it has {rows.column_names}")
    examples = []
    for index, row in enumerate(rows):
        options = _options(cfg, row, index)
        if cfg.option_columns and not cfg.label_values:
            label = _gold_by_text(cfg, row, index, options)
        elif str(row[cfg.label_column]) in label_index:
            label = label_index[str(row[cfg.label_column])]
        else:
            raise ValueError(
                f"{cfg.source} row {index}: label {row[cfg.label_column]!r} in column {cfg.label_column!r} "
                f"is not one of label_values {cfg.label_values}"
            )
        examples.append(
            Example(
                cfg.passage_template.format(**row), cfg.template.format(**row), label, f"{cfg.name}/{index}", options
            )
        )
    scoring = "options" if cfg.option_columns else "label-words"
    return Task(
        cfg.name,
        cfg.domain,
        label_words,
        tuple(examples),
        f"Custom task from {cfg.source} (split {cfg.split!r}, labels from column {cfg.label_column!r}"
        + (f", options from columns {', '.join(cfg.option_columns)}" if cfg.option_columns else "")
        + ").",
        scoring,
        cfg.length_norm,
    )


SPEC_SUFFIXES = (".json", ".toml")
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the app's folder (also inside an installed Flower app)


def is_spec_file(spec: str) -> bool:
    """True when ``spec`` names a custom task file rather than a registered task."""
    return spec.endswith(SPEC_SUFFIXES)


def _spec_path(spec: str) -> Path:
    """The spec file as given, else relative to the project (a simulated user's working folder differs)."""
    for path in (Path(spec), PROJECT_ROOT / spec):
        if path.is_file():
            return path
    raise FileNotFoundError(f"custom task spec {spec} does not exist (looked here and under {PROJECT_ROOT})")


@functools.cache  # a ClientApp process asks for its task on every message; read the data once
def load_task_spec(spec: str) -> Task:
    """A registry name, or a JSON or TOML file holding a ``CustomTaskConfig`` (how the CLI and the
    apps name a user's own data), e.g. ``{"source": "reviews.csv", "template": "Review: {text}\\nSentiment:",
    "label_column": "stars", "label_values": ["5", "1"], "label_words": [" positive", " negative"]}``.
    Use TOML for a spec that a Flower app must carry: its package (FAB) takes .toml files, not .json."""
    from .registry import load_task

    if not is_spec_file(spec):
        return load_task(spec)
    path = _spec_path(spec)
    fields = tomllib.loads(path.read_text()) if path.suffix == ".toml" else json.loads(path.read_text())
    for key in ("label_values", "label_words", "option_columns"):
        fields[key] = tuple(fields.get(key, ()))
    try:
        return load_custom_task(CustomTaskConfig(**fields))
    except TypeError as err:
        raise ValueError(f"custom task spec {spec}: {err}") from err
