"""User-supplied tasks: a user's own local CSV/JSON(L)/Parquet files or a Hugging Face hub dataset, plus templates.

This is the way in for data outside the registry (e.g. financial sentiment sets, which no offline
package ships). Hub datasets need network access; local files do not. Every row of a custom task is
the user's: none is set aside for the provider (`CustomTask`). Every bad input is refused while the
task loads, before any model is involved, with one line naming the spec key, file, row or value.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path

import datasets

from .core import Example, Task
from .formats import letter_words

_LOCAL_BUILDERS = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
SPLIT_FILES = ("train", "dev", "test")
"""Spec keys naming a user's own split files: `train` (required in that form), `dev` and `test`."""
_TEXT_FIELDS = ("source", *SPLIT_FILES, "split", "template", "passage_template", "label_column", "name", "domain")
_LIST_FIELDS = ("label_values", "label_words", "option_columns")


@dataclass(frozen=True, kw_only=True)
class CustomTaskConfig:
    """Where a custom task's rows come from and how to format and label them.

    Rows come either from `source` (one local file, or a hub dataset with `hub_config` and `split`;
    the user's train, dev and test rows are all drawn from it) or from the user's own split files:
    `train`, and optionally `dev` and `test` (local files), used as given (see `splits.user_split`).

    `template` is the query: it is never truncated and must end with the answer cue, e.g.
    "Sentence: {sentence}\\nSentiment:". `passage_template` is the context before it, cut to fit the
    model's window: put long texts there ("Review: {text}\\n") and keep `template` short. Both are
    Python format strings over the row's columns.

    A label-word task: `label_values[i]` is the row value (compared as text, so 1 and "1" match)
    that means `label_words[i]`. An option-scored task names its C option columns in
    `option_columns` (each row's options are " " + the column's text, scored as continuations of
    the query, per character when `length_norm`); its `label_words` default to " A", " B", ...
    and only name the options. Its `label_column` holds the gold option's text, or, with
    `label_values`, the value that means option i (e.g. 0..C-1, or "A".."D").
    """

    source: str = ""
    train: str = ""
    dev: str = ""
    test: str = ""
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

    def __post_init__(self) -> None:
        for key in _TEXT_FIELDS:
            if not isinstance(getattr(self, key), str):
                raise ValueError(f"custom task: {key} must be a string, got {getattr(self, key)!r}")
        if not isinstance(self.length_norm, bool):
            raise ValueError(f"custom task: length_norm must be true or false, got {self.length_norm!r}")
        if bool(self.source) == bool(self.train):
            raise ValueError(
                f"custom task {self.name!r}: give either `source` (one file or hub dataset; train, dev and test are "
                "drawn from it) or `train` (a file, with optional `dev` and `test` files), not both nor neither"
            )
        if self.source and (self.dev or self.test):
            raise ValueError(
                f"custom task {self.name!r}: `dev` and `test` files go with a `train` file, not with `source` "
                "(whose rows train, dev and test are drawn from)"
            )
        for key in SPLIT_FILES:
            suffix = Path(getattr(self, key)).suffix.lower()
            if getattr(self, key) and suffix not in _LOCAL_BUILDERS:
                raise ValueError(
                    f"custom task {self.name!r}: `{key}` file {getattr(self, key)} must be one of "
                    f"{', '.join(_LOCAL_BUILDERS)}"
                )
        if not self.template.strip() or not self.label_column:
            raise ValueError(f"custom task {self.name!r}: `template` and `label_column` must not be empty")
        for key in ("template", "passage_template"):
            _template_columns(key, getattr(self, key))  # validates the format string
        if len({str(value) for value in self.label_values}) != len(self.label_values):
            raise ValueError(f"custom task {self.name!r}: label_values {self.label_values} are not distinct")
        self.words()  # validates label words against label values and option columns

    def words(self) -> tuple[str, ...]:
        """The task's label words, after checking them against the label values and the option columns."""
        if self.length_norm and not self.option_columns:
            raise ValueError(
                f"custom task {self.name!r}: length_norm applies to option scoring only (set option_columns)"
            )
        if not self.option_columns:
            if len(self.label_words) != len(self.label_values) or len(self.label_words) < 2:
                raise ValueError(
                    f"custom task {self.name!r}: needs as many label_words as label_values (at least 2), "
                    f"got {len(self.label_words)} words and {len(self.label_values)} values"
                )
            return self._checked(tuple(self.label_words))
        n_options = len(self.option_columns)
        if n_options < 2 or len(set(self.option_columns)) != n_options:
            raise ValueError(
                f"custom task {self.name!r}: needs 2 or more distinct option_columns, got {self.option_columns}"
            )
        words = self._checked(tuple(self.label_words) or letter_words(n_options))
        if len(words) != n_options or len(self.label_values) not in (0, n_options):
            raise ValueError(
                f"custom task {self.name!r}: {n_options} option_columns need as many label_words (default letters) "
                f"and label_values (if any), got {len(words)} words and {len(self.label_values)} values"
            )
        return words

    def _checked(self, words: tuple) -> tuple[str, ...]:
        """`words` if each is a non-empty string (the answer, with its leading space: " yes")."""
        if not all(isinstance(word, str) and word.strip() for word in words):
            raise ValueError(f"custom task {self.name!r}: label_words must be non-empty strings, got {words}")
        return words

    def split_files(self) -> tuple[tuple[str, str], ...]:
        """(split, path) of each of the user's own split files named (none with `source`)."""
        return tuple((key, getattr(self, key)) for key in SPLIT_FILES if getattr(self, key))


@dataclass(frozen=True)
class CustomTask(Task):
    """A user's own task. Every row is user-side: a user's data is never the provider's, so
    `splits.server_user_partition` reserves none of it. `dev_uids` and `test_uids` are the rows of the
    user's own dev and test files (empty when none was given), which `splits.user_split` uses as such."""

    dev_uids: frozenset[str] = frozenset()
    test_uids: frozenset[str] = frozenset()


def _template_columns(key: str, template: str) -> set[str]:
    """Column names a format string reads ("{a}", "{a[0]}", "{a!r:>5}" all read column a)."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as error:
        raise ValueError(f"custom task `{key}` {template!r} is not a format string: {error}") from error
    columns = {re.split(r"[.\[]", field)[0] for field in fields}
    if any(not column or column.isdigit() for column in columns):
        raise ValueError(f"custom task `{key}` {template!r}: every {{}} must name a column, e.g. {{text}}")
    return columns


def _reason(error: BaseException) -> str:
    """What a file reader's error means, from its innermost cause (datasets wraps the parser's error)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {error}"


def _check_utf8(path: str, what: str) -> None:
    """A text file must be UTF-8; the error names the first bad byte's line (datasets' names a chunk offset)."""
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(
            f"custom task {what} {path} is not UTF-8 text (byte {data[error.start]:#x} on line {line}); "
            "save it as UTF-8"
        ) from error


@contextlib.contextmanager
def _quiet_datasets():
    """Silence datasets' progress bars and its own log of a reader failure while a user's file is read:
    the error raised names the file and the reason on one line."""
    verbosity, bars_off = datasets.logging.get_verbosity(), datasets.utils.are_progress_bars_disabled()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if not bars_off:
            datasets.enable_progress_bars()


def _read_file(path: str, what: str) -> datasets.Dataset:
    """Every row of a local file. CSV cells are read as written: "NA" stays text and an empty cell is
    "", not NaN (which would also turn a column of integer labels into floats)."""
    suffix = Path(path).suffix.lower()
    if not Path(path).is_file():
        raise FileNotFoundError(f"custom task {what} {path} does not exist")
    if Path(path).stat().st_size == 0:
        raise ValueError(f"custom task {what} {path} is empty")
    if suffix != ".parquet":
        _check_utf8(path, what)
    options = {"keep_default_na": False} if suffix == ".csv" else {}
    try:
        with _quiet_datasets():
            builder = datasets.load_dataset_builder(_LOCAL_BUILDERS[suffix], data_files={"rows": path}, **options)
            builder.download_and_prepare()
    except Exception as error:  # any reader failure (DatasetGenerationError, Arrow errors, ...): name the file
        raise ValueError(f"cannot read custom task {what} {path} as {suffix[1:]}: {_reason(error)}") from error
    if not builder.info.splits["rows"].num_examples:  # datasets cannot make a Dataset of no rows
        raise ValueError(f"custom task {what} {path} has no rows")
    return builder.as_dataset("rows")


def _read(cfg: CustomTaskConfig) -> list[tuple[str, str, datasets.Dataset]]:
    """(split, where, rows) of each file the config names; split is "" for a single `source`."""
    if cfg.train:
        return [(split, path, _read_file(path, f"{split} file")) for split, path in cfg.split_files()]
    if Path(cfg.source).suffix.lower() in _LOCAL_BUILDERS:
        return [("", cfg.source, _read_file(cfg.source, "file"))]
    if Path(cfg.source).exists():
        raise ValueError(f"custom task file {cfg.source}: use one of {', '.join(_LOCAL_BUILDERS)}")
    try:
        rows = datasets.load_dataset(cfg.source, cfg.hub_config, split=cfg.split)
    except Exception as error:
        raise RuntimeError(
            f"could not load hub dataset {cfg.source!r} (config {cfg.hub_config!r}, split {cfg.split!r}): {error}. "
            f"A hub dataset needs network access or a local file ({', '.join(_LOCAL_BUILDERS)})"
        ) from error
    if len(rows) == 0:
        raise ValueError(f"hub dataset {cfg.source!r} (config {cfg.hub_config!r}) has no rows in split {cfg.split!r}")
    return [("", cfg.source, rows)]


def _columns_read(cfg: CustomTaskConfig) -> dict[str, str]:
    """Each column the task reads -> the spec key that names it (the query's keys win over the passage's)."""
    named = {column: "passage_template" for column in _template_columns("passage_template", cfg.passage_template)}
    named |= {column: "template" for column in _template_columns("template", cfg.template)}
    named |= {column: "option_columns" for column in cfg.option_columns}
    return named | {cfg.label_column: "label_column"}


def _check_columns(cfg: CustomTaskConfig, where: str, columns: list[str]) -> None:
    """Every column the templates, the label and the options read is in the file."""
    for column, key in sorted(_columns_read(cfg).items()):
        if column not in columns:
            raise ValueError(
                f"{where} has no column {column!r} (named by `{key}`); its columns: {', '.join(map(repr, columns))}"
            )


def _check_cells(cfg: CustomTaskConfig, row: dict, at: str) -> None:
    """No cell the task reads is missing (None or NaN), nor blank unless only the passage reads it:
    formatting would silently put "None" or "nan" into the prompt."""
    for column, key in _columns_read(cfg).items():
        value = row[column]
        blank = isinstance(value, str) and not value.strip() and key != "passage_template"
        if value is None or (isinstance(value, float) and math.isnan(value)) or blank:
            raise ValueError(f"{at}: column {column!r} (named by `{key}`) is empty ({value!r}); fill or drop the row")


def _format(cfg: CustomTaskConfig, key: str, row: dict, at: str) -> str:
    """`cfg.<key>` filled with the row, or ValueError naming the row (e.g. a numeric format on text)."""
    try:
        return getattr(cfg, key).format(**row)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
        raise ValueError(f"{at}: `{key}` {getattr(cfg, key)!r} does not format this row: {error}") from error


def _options(cfg: CustomTaskConfig, row: dict) -> tuple[str, ...]:
    """The row's options as continuations (" text"); `_check_cells` has refused empty ones."""
    return tuple(f" {str(row[column]).strip()}" for column in cfg.option_columns)


def _label(cfg: CustomTaskConfig, row: dict, at: str, options: tuple[str, ...]) -> int:
    """The row's label: the index of its label value, or of the option whose text is its label."""
    value = row[cfg.label_column]
    if cfg.option_columns and not cfg.label_values:
        matches = [i for i, option in enumerate(options) if option.strip() == str(value).strip()]
        if len(matches) != 1:
            raise ValueError(
                f"{at}: label {value!r} in column {cfg.label_column!r} matches {len(matches)} of the options in "
                f"columns {cfg.option_columns}, not exactly one"
            )
        return matches[0]
    label_index = {str(label): index for index, label in enumerate(cfg.label_values)}
    if str(value) not in label_index:
        raise ValueError(
            f"{at}: label {value!r} in column {cfg.label_column!r} is not one of label_values {cfg.label_values}"
        )
    return label_index[str(value)]


def load_custom_task(cfg: CustomTaskConfig) -> CustomTask:
    """Load and format a custom task, checking each file, its columns and every row's cells and label.

    Row uids are "<name>/<row>" for a single `source`, "<name>/<split>/<row>" for split files, rows
    counted from 0 in each file (a CSV's header row not counted), as every error message counts them.
    """
    examples, given = [], {"dev": set(), "test": set()}
    for split, where, rows in _read(cfg):
        _check_columns(cfg, where, rows.column_names)
        for index, row in enumerate(rows):
            at = f"{where} row {index}"
            _check_cells(cfg, row, at)
            options = _options(cfg, row)
            uid = f"{cfg.name}/{split}/{index}" if split else f"{cfg.name}/{index}"
            passage, query = _format(cfg, "passage_template", row, at), _format(cfg, "template", row, at)
            examples.append(Example(passage, query, _label(cfg, row, at, options), uid, options))
            if split in given:
                given[split].add(uid)
    origin = ", ".join(f"{split} file {path}" for split, path in cfg.split_files()) if cfg.train else cfg.source
    scored_by = f", options from columns {', '.join(cfg.option_columns)}" if cfg.option_columns else ""
    return CustomTask(
        cfg.name,
        cfg.domain,
        cfg.words(),
        tuple(examples),
        f"Custom task from {origin} (labels from column {cfg.label_column!r}{scored_by}).",
        "options" if cfg.option_columns else "label-words",
        cfg.length_norm,
        dev_uids=frozenset(given["dev"]),
        test_uids=frozenset(given["test"]),
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


def _read_spec(path: Path) -> dict:
    """The spec file's keys, or ValueError naming the file when it is not one JSON/TOML table."""
    kind = "TOML" if path.suffix == ".toml" else "JSON"
    try:
        text = path.read_text(encoding="utf-8")
        fields = tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"custom task spec {path} is not valid UTF-8 {kind}: {error}") from error
    if not isinstance(fields, dict):
        raise ValueError(f"custom task spec {path} must hold one {kind} table of keys, got {type(fields).__name__}")
    return fields


def _spec_config(path: Path, fields: dict) -> CustomTaskConfig:
    """A `CustomTaskConfig` from a spec's keys. Lists become tuples, and relative local file paths are
    taken relative to the spec's folder (the same wherever the command runs)."""
    known = [field.name for field in dataclasses.fields(CustomTaskConfig)]
    required = [field.name for field in dataclasses.fields(CustomTaskConfig) if field.default is dataclasses.MISSING]
    unknown = sorted(set(fields) - set(known))
    missing = [key for key in required if key not in fields]
    if unknown or missing:
        problem = f"unknown key(s) {', '.join(unknown)}" if unknown else f"missing key(s) {', '.join(missing)}"
        raise ValueError(
            f"custom task spec {path}: {problem}; keys: {', '.join(known)} (required: {', '.join(required)})"
        )
    for key in _LIST_FIELDS:
        if not isinstance(fields.get(key, []), list):
            raise ValueError(f"custom task spec {path}: {key} must be a list, got {fields[key]!r}")
        fields[key] = tuple(fields.get(key, ()))
    for key in ("source", *SPLIT_FILES):
        value = fields.get(key)
        local = key != "source" or (isinstance(value, str) and Path(value).suffix.lower() in _LOCAL_BUILDERS)
        if isinstance(value, str) and value and local and not Path(value).is_absolute():
            fields[key] = str(path.parent / value)
    try:
        return CustomTaskConfig(**fields)
    except ValueError as error:
        raise ValueError(f"custom task spec {path}: {error}") from error


@functools.cache  # a ClientApp process asks for its task on every message; read the data once
def load_task_spec(spec: str) -> Task:
    """A registry name, or a JSON or TOML file holding a ``CustomTaskConfig`` (how the CLI and the
    apps name a user's own data), e.g. ``{"train": "train.csv", "test": "test.csv", "passage_template":
    "Review: {text}\\n", "template": "Sentiment:", "label_column": "stars", "label_values": ["5", "1"],
    "label_words": [" positive", " negative"]}``; relative paths are relative to the spec's folder.
    Use TOML for a spec that a Flower app must carry: its package (FAB) takes .toml files, not .json."""
    from .infer import is_data_file
    from .registry import load_task

    if is_data_file(spec):
        raise ValueError(
            f"task {spec} is a data file: a run names a task spec file (.toml) that describes it; "
            f'`cbp-fed customize --task {spec}` prints one inferred from its columns (README, "Your own data")'
        )
    if not is_spec_file(spec):
        return load_task(spec)
    path = _spec_path(spec)
    return load_custom_task(_spec_config(path, _read_spec(path)))
