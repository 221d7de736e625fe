"""Row shapes a registered task is read into, and the prompt templates that format them.

A classification row (`Labelled`) ends with an answer cue ("\nAnswer:", "\nSentiment:") so that its
label word (" yes", " positive") is the natural next token. A multiple-choice row is scored by its
options: the query is the context the options continue, "Question: ...\nAnswer:" without any option
list, or the unfinished sentence itself where the options complete a sentence (HellaSwag, COPA),
and each option is a continuation with a leading space (" Paris"). The row keeps its question and
options apart so that `verify.verification_view` can pose it again as a yes/no question.
"""

from __future__ import annotations

from dataclasses import dataclass

LETTERS = "ABCDEFGHIJ"
YES_NO = (" yes", " no")


def letter_words(n_options: int) -> tuple[str, ...]:
    """Names " A", " B", ... of `n_options` options: an option-scored task's `label_words`."""
    if not 2 <= n_options <= len(LETTERS):
        raise ValueError(f"a multiple-choice task needs 2..{len(LETTERS)} options, got {n_options}")
    return tuple(f" {letter}" for letter in LETTERS[:n_options])


@dataclass(frozen=True)
class Labelled:
    """A classification row already in its final text form."""

    passage: str
    query: str
    label: int


@dataclass(frozen=True)
class MultipleChoice:
    """A multiple-choice row: optional passage, a question, its options and the gold index.

    `lead` is set where the options complete a sentence rather than answer a question: it is then
    the whole scoring context (the passage is not used). `continuations` overrides the scored
    option texts where they must differ from `options` in form (COPA lower-cases the alternative
    that continues the premise's sentence); `options` stay as written for the verification view.
    """

    passage: str
    question: str
    options: tuple[str, ...]
    gold: int
    lead: str = ""
    continuations: tuple[str, ...] = ()

    def option_context(self) -> tuple[str, str]:
        """(passage, query) that the options continue; the query ends in the answer cue or the lead."""
        if self.lead:
            return "", self.lead
        return self.passage, f"Question: {self.question}\nAnswer:"

    def option_texts(self) -> tuple[str, ...]:
        """The scored continuations, each with a leading space."""
        return tuple(f" {text}" for text in self.continuations or self.options)

    def verify_query(self, option: int) -> str:
        """The question with one proposed option (no option list); answered with yes/no."""
        return (
            f"Question: {self.question}\nProposed answer: {self.options[option]}\n"
            "Is the proposed answer correct?\nAnswer:"
        )
