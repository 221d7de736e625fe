"""The two value types every other module of `cbp_fed.tasks` passes around.

An `Example` is one formatted, labelled input; a `Task` is a named set of them that shares one
tuple of label words and one way of scoring: "label-words" (the provider scores each label word at
the answer position) or "options" (it scores each example's option continuations).
"""

from __future__ import annotations

from dataclasses import dataclass

VERIFY_SUFFIX = ":verify"
"""Appended to a row's uid in its verification view; the partition hashes the uid without it."""


def row_key(uid: str) -> str:
    """The source row a uid names: the uid up to its first ":". A view (``:verify``, or another registered
    question about the same rows, ``:finance-persons``) asks something else of that row, so it falls on the
    row's side of the provider/user partition."""
    return uid.split(":", 1)[0]


SCORINGS = ("label-words", "options")


@dataclass(frozen=True)
class Example:
    """One labelled input, split so that the model side can truncate it safely.

    `passage` is the truncatable context (may be ""); a model that must shorten the input drops
    characters from the LEFT of the passage. `query` is the question and answer cue (or, in an
    option-scored task, the unfinished sentence the options continue) and is never truncated.
    `options` are an option-scored row's continuations, each with a leading space (" Paris"), and
    empty otherwise. `label` indexes the task's `label_words`, and the row's `options` if it has
    any. `uid` is stable across runs: f"{task_name}/{row_index}", with `VERIFY_SUFFIX` appended in
    a verification view, or f"{source_task}/{row_index}:{task_name}" for a task that asks another
    question of a registered task's rows (`row_key`).
    """

    passage: str
    query: str
    label: int
    uid: str
    options: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The full input: passage followed by query."""
        return self.passage + self.query


@dataclass(frozen=True)
class Task:
    """A named labelled task: every row of its shipped split, in file order.

    `label_words` carry a leading space (" yes", " A") so that each is the natural next token
    after the query's answer cue; label i of every example means `label_words[i]`. With
    `scoring="options"` the label words only name the C options (" A", " B", ...; C is
    `len(label_words)` everywhere) and every example carries exactly C options; an option's score
    is its continuation log-likelihood, divided by its length in characters when `length_norm`
    (lm-evaluation-harness's acc_norm), summed otherwise (its acc).
    """

    name: str
    domain: str
    label_words: tuple[str, ...]
    examples: tuple[Example, ...]
    description: str
    scoring: str = "label-words"
    length_norm: bool = False

    def __post_init__(self) -> None:
        if self.scoring not in SCORINGS:
            raise ValueError(f"task {self.name!r}: scoring must be one of {', '.join(SCORINGS)}, got {self.scoring!r}")
        if self.length_norm and self.scoring != "options":
            raise ValueError(f"task {self.name!r}: length_norm applies to option scoring only")
        n_options = len(self.label_words) if self.scoring == "options" else 0
        for example in self.examples:
            if len(example.options) != n_options:
                raise ValueError(
                    f"task {self.name!r} ({self.scoring}): row {example.uid} has {len(example.options)} options, "
                    f"needs {n_options}"
                )
            if not all(option.startswith(" ") and option.strip() for option in example.options):
                raise ValueError(f"task {self.name!r}: row {example.uid} has an option without a leading space or text")
