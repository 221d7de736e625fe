"""The two value types every other module of `cbp_fed.tasks` passes around.

An `Example` is one formatted, labelled input; a `Task` is a named set of them that shares one
tuple of label words, which is what the provider scores at the answer position.
"""

from __future__ import annotations

from dataclasses import dataclass

VERIFY_SUFFIX = ":verify"
"""Appended to a row's uid in its verification view; the partition hashes the uid without it."""


@dataclass(frozen=True)
class Example:
    """One labelled input, split so that the model side can truncate it safely.

    `passage` is the truncatable context (may be ""); a model that must shorten the input drops
    characters from the LEFT of the passage. `query` is the question, options and answer cue and
    is never truncated. `label` indexes the task's `label_words`. `uid` is stable across runs:
    f"{task_name}/{row_index}", with `VERIFY_SUFFIX` appended in a verification view.
    """

    passage: str
    query: str
    label: int
    uid: str

    @property
    def text(self) -> str:
        """The full input: passage followed by query."""
        return self.passage + self.query


@dataclass(frozen=True)
class Task:
    """A named labelled task: every row of its shipped split, in file order.

    `label_words` carry a leading space (" yes", " A") so that each is the natural next token
    after the query's answer cue; label i of every example means `label_words[i]`.
    """

    name: str
    domain: str
    label_words: tuple[str, ...]
    examples: tuple[Example, ...]
    description: str
