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

_LOCAL_BUILDERS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


@dataclass(frozen=True, kw_only=True)
class CustomTaskConfig:
    """Where a custom task's rows come from and how to format and label them.

    `template` (the never-truncated query) and `passage_template` (the truncatable context) are
    Python format strings over the row's columns; `template` must end with the answer cue, e.g.
    "Sentence: {sentence}\\nSentiment:". `label_values[i]` is the row value (compared as text, so
    1 and "1" match) that means `label_words[i]`. For local files `split` only names the split.
    """

    source: str
    split: str = "train"
    hub_config: str | None = None
    template: str
    passage_template: str = ""
    label_column: str
    label_values: tuple
    label_words: tuple[str, ...]
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


def load_custom_task(cfg: CustomTaskConfig) -> Task:
    """Load and format a custom task, checking the file, the columns and every label value."""
    if len(cfg.label_words) != len(cfg.label_values) or len(cfg.label_words) < 2:
        raise ValueError(
            f"custom task {cfg.name!r}: needs as many label_words as label_values (at least 2), "
            f"got {len(cfg.label_words)} words and {len(cfg.label_values)} values"
        )
    label_index = {str(value): index for index, value in enumerate(cfg.label_values)}
    if len(label_index) != len(cfg.label_values):
        raise ValueError(f"custom task {cfg.name!r}: label_values {cfg.label_values} are not distinct")
    rows = _read(cfg)
    needed = _template_columns(cfg.template) | _template_columns(cfg.passage_template) | {cfg.label_column}
    for column in sorted(needed):
        if column not in rows.column_names:
            raise KeyError(f"column {column!r} missing in {cfg.source}; it has {rows.column_names}")
    examples = []
    for index, row in enumerate(rows):
        value = str(row[cfg.label_column])
        if value not in label_index:
            raise ValueError(
                f"{cfg.source} row {index}: label {row[cfg.label_column]!r} in column {cfg.label_column!r} "
                f"is not one of label_values {cfg.label_values}"
            )
        examples.append(
            Example(
                cfg.passage_template.format(**row),
                cfg.template.format(**row),
                label_index[value],
                f"{cfg.name}/{index}",
            )
        )
    return Task(
        cfg.name,
        cfg.domain,
        tuple(cfg.label_words),
        tuple(examples),
        f"Custom task from {cfg.source} (split {cfg.split!r}, labels from column {cfg.label_column!r}).",
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
    for key in ("label_values", "label_words"):
        fields[key] = tuple(fields.get(key, ()))
    try:
        return load_custom_task(CustomTaskConfig(**fields))
    except TypeError as err:
        raise ValueError(f"custom task spec {spec}: {err}") from err
