"""Row shapes a registered task is read into, and the prompt templates that format them.

Every template ends with an answer cue ("\nAnswer:", "\nSentiment:") so that the label word
(" yes", " A", ...) is the natural next token. A multiple-choice row keeps its question and options
apart so that `verify.verification_view` can pose it again as a yes/no question.
"""

from __future__ import annotations

from dataclasses import dataclass

LETTERS = "ABCDEFGHIJ"
YES_NO = (" yes", " no")


def letter_words(n_options: int) -> tuple[str, ...]:
    """Label words " A", " B", ... for `n_options` options."""
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
    """A multiple-choice row: optional passage, a question, its options and the gold index."""

    passage: str
    question: str
    options: tuple[str, ...]
    gold: int

    def native_query(self) -> str:
        """The question, the options as "A. ..." lines, and the cue; answered with a letter."""
        lines = [f"Question: {self.question}"]
        lines += [f"{LETTERS[index]}. {option}" for index, option in enumerate(self.options)]
        return "\n".join([*lines, "Answer:"])

    def verify_query(self, option: int) -> str:
        """The question with one proposed option (no option list); answered with yes/no."""
        return (
            f"Question: {self.question}\nProposed answer: {self.options[option]}\n"
            "Is the proposed answer correct?\nAnswer:"
        )
