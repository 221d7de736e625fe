"""What a user can do with its answer scores alone: calibrate them, fit offsets, or answer the majority.

These are the options a user has *without* the provider's generator, so CBP is measured against them
and a user falls back to them when its prompt does not beat them (``protect``). Everything here works
on score arrays ``(n, C)`` (label-word logits or option log-likelihoods) and labels ``(n,)``: numpy
only, so the ClientApp can use it.

- content-free calibration (Zhao et al. 2021, "Calibrate Before Use"): the answer distribution of a
  few content-free inputs in the task's own template ("N/A", "", "[MASK]" in place of the content),
  averaged in probability space and divided out. It assumes the answers are equally likely a priori,
  so on a skewed task it pushes predictions toward balance and can end below zero-shot.
- fitted offsets (as Batch Calibration, Zhou et al. 2023, but supervised): one additive offset per
  answer, fitted by cross-entropy on the user's own train rows. It learns the task's prior too.
- majority: the most frequent train label, for every row (as scores: the train label frequencies).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from .search import best_on_dev

CONTENT_FREE = ("N/A", "", "[MASK]")
FIELD = re.compile(r"^([A-Z][A-Za-z0-9 ]{0,30}):")
OFFSET_L2 = 1e-2
"""Ridge on the fitted offsets: keeps an answer absent from the train rows at a finite offset."""


def content_free(passage: str, query: str, filler: str) -> tuple[str, str]:
    """``(passage, query)`` with its content replaced by ``filler`` and its template kept.

    The query's last line (the answer cue, "Sentiment:" or "Answer:") stays as it is. Every other line
    that starts with a field name ("Review:", "Question:") keeps the name and gets ``filler``; any other
    run of content lines becomes one ``filler`` line. "Review: great drug\\n" + "Sentiment:" becomes
    "Review: N/A\\n" + "Sentiment:", which is the template a content-free input must keep: the answer cue
    alone primes the answers differently from a review with nothing in it.
    """

    def blank(text: str) -> str:
        lines, out = text.rstrip("\n").split("\n") if text else [], []
        for line in lines:
            field = FIELD.match(line)
            kept = f"{field.group(1)}: {filler}".rstrip() if field else filler
            if field or not out or out[-1] != filler:
                out.append(kept)
        joined = "\n".join(out)
        return joined + "\n" if joined.strip() and text.endswith("\n") else joined if joined.strip() else ""

    head, _, cue = query.rpartition("\n")
    return blank(passage), (blank(head) + "\n" + cue) if head else cue


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last axis (the C answers)."""
    scores = np.asarray(scores, dtype=np.float64)
    top = scores.max(axis=-1, keepdims=True)
    return scores - top - np.log(np.exp(scores - top).sum(axis=-1, keepdims=True))


def content_free_prior(scores: np.ndarray) -> np.ndarray:
    """Log of the mean answer distribution ``(C,)`` over content-free inputs' scores ``(m, C)`` (the mean of
    probabilities, not of logits: Zhao et al.'s estimate of the template's prior)."""
    return np.log(np.exp(log_softmax(scores)).mean(axis=0))


def calibrated(scores: np.ndarray, log_prior: np.ndarray) -> np.ndarray:
    """Scores ``(..., C)`` with the prior ``(C,)`` divided out in probability space (log-probabilities minus
    log prior; the argmax is Zhao et al.'s diagonal W = diag(p_cf)^-1)."""
    return log_softmax(scores) - log_prior


def fit_offsets(scores: np.ndarray, labels: np.ndarray, l2: float = OFFSET_L2) -> np.ndarray:
    """Offsets ``(C,)`` that minimise the mean cross-entropy of ``softmax(scores + b)`` on ``labels (n,)``
    plus ``l2 * |b|^2`` (convex; L-BFGS). A user fits them on its train rows' scores and may put them on top
    of any prompt's scores: they change the answer prior, never the prompt."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    n, c = scores.shape
    if n == 0:
        raise ValueError("fit_offsets needs at least one scored row")
    onehot = np.eye(c)[labels]

    def loss_and_grad(b: np.ndarray) -> tuple[float, np.ndarray]:
        logp = log_softmax(scores + b)
        loss = -(logp * onehot).sum() / n + l2 * b @ b
        return loss, (np.exp(logp) - onehot).sum(0) / n + 2 * l2 * b

    return minimize(loss_and_grad, np.zeros(c), jac=True, method="L-BFGS-B").x


def label_prior(train_labels: np.ndarray, c: int) -> np.ndarray:
    """Log of the train labels' frequencies ``(C,)``, add-one smoothed: the ``majority`` option as a
    distribution (its argmax is the most frequent label, ties the lower index), so it has a loss too."""
    counts = np.bincount(np.asarray(train_labels, dtype=int), minlength=c)
    return np.log((counts + 1) / (counts.sum() + c))


def own_options(
    zero_shot: np.ndarray, offsets: np.ndarray, log_prior: np.ndarray | None, label_log_prior: np.ndarray
) -> dict[str, np.ndarray]:
    """Scores ``(n, C)`` of each option a user has without the provider's generator, from its zero-shot
    scores ``(n, C)``: ``majority`` (the train labels' ``label_log_prior (C,)`` for every row),
    ``zero-shot``, ``calibrated`` (the content-free ``log_prior``, ``(C,)`` or ``(n, C)``; left out when
    None) and ``calibrated-fit`` (its fitted ``offsets (C,)``), in the order a tie prefers."""
    n, c = zero_shot.shape
    options = {"majority": np.broadcast_to(label_log_prior, (n, c)), "zero-shot": zero_shot}
    if log_prior is not None:
        options["calibrated"] = calibrated(zero_shot, log_prior)
    options["calibrated-fit"] = zero_shot + offsets
    return options


def held_out_options(zero_shot: np.ndarray, labels: np.ndarray, log_prior: np.ndarray | None) -> dict[str, np.ndarray]:
    """Each own option's scores ``(n, C)`` on the user's train rows (zero-shot scores ``(n, C)``, labels
    ``(n,)``, content-free ``log_prior`` ``(C,)`` or ``(n, C)``), every row scored by the option fitted
    without it (leave-one-out: the majority and the offsets are refitted; zero-shot and calibration fit
    nothing). With them the train rows judge the own options as fairly as dev rows do, so a user picks
    among them on train + dev rows, not on dev alone. ``{}`` with fewer than 2 rows."""
    n, c = zero_shot.shape
    if n < 2:
        return {}
    per_row = log_prior is not None and np.ndim(log_prior) == 2 and len(log_prior) == n
    rows = []
    for i in range(n):
        rest = np.arange(n) != i
        prior = log_prior[i] if per_row else log_prior
        offsets = fit_offsets(zero_shot[rest], labels[rest])
        rows.append(own_options(zero_shot[i : i + 1], offsets, prior, label_prior(labels[rest], c)))
    return {name: np.concatenate([row[name] for row in rows]) for name in rows[0]}


# ------------------------------------------------------------------ the user's protected choice
PROTECT_ALPHA = 0.05
"""Default level of the one-sided test that moves a user from its best no-provider option to a prompt."""


def sign_test(wins: int, losses: int) -> float:
    """One-sided exact p-value that ``wins`` out of ``wins + losses`` discordant rows arise by chance
    (McNemar's exact test: each discordant row a fair coin under the null)."""
    n = wins + losses
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n if n else 1.0


def rank(labels: np.ndarray, scores: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, float], str]:
    """Accuracy and mean cross-entropy of each option's scores ``(n, C)`` on ``labels (n,)``, and the best
    option: the highest accuracy, then the lowest loss, then the first listed (as ``best_on_dev``)."""
    labels = np.asarray(labels, dtype=int)
    accuracy = {name: float((s.argmax(1) == labels).mean()) if len(labels) else 0.0 for name, s in scores.items()}
    loss = {
        name: float(-log_softmax(s)[np.arange(len(labels)), labels].mean()) if len(labels) else 0.0
        for name, s in scores.items()
    }
    names = list(scores)
    best = best_on_dev(np.array([accuracy[n] for n in names]), np.array([loss[n] for n in names]))
    return accuracy, loss, names[best]


@dataclass(frozen=True)
class Choice:
    """A user's protected choice among its options.

    kept: the option the user ends with. baseline: the best option without the provider, judged on all
    the user's labelled rows it did not fit on (``own_rows``: its train rows left out one at a time and its
    dev rows; ``own_accuracy`` / ``own_loss`` per option). contender: the best option that needs the
    provider, judged on dev rows (``dev_accuracy`` of every option). wins / losses: dev rows the contender
    gets right and the baseline wrong, and the reverse. p_value: the one-sided sign test of wins against
    losses; the user moves to the contender only if ``p_value <= alpha``.
    """

    kept: str
    baseline: str
    contender: str | None
    wins: int
    losses: int
    p_value: float
    alpha: float
    own_rows: int
    own_accuracy: dict[str, float]
    own_loss: dict[str, float]
    dev_accuracy: dict[str, float]

    def as_record(self) -> dict:
        return {
            "rule": "baseline: the best no-provider option on train (leave-one-out) and dev rows, by accuracy "
            "then cross-entropy; keep it unless the best provider option on dev beats it by a one-sided exact "
            "sign test on the discordant dev rows at level alpha",
            **self.__dict__,
        }


def protect(
    labels: np.ndarray,
    dev_scores: dict[str, np.ndarray],
    provider: set[str],
    alpha: float = PROTECT_ALPHA,
    held_out: tuple[np.ndarray, dict[str, np.ndarray]] | None = None,
) -> Choice:
    """The option a user keeps, from each option's dev scores ``(n_dev, C)`` and the dev ``labels (n_dev,)``.

    ``dev_scores`` lists the options in order of preference among equals (no-provider ones: simplest
    first; provider ones: as the search ranks them); ``provider`` names those that need the provider.
    ``held_out``: train labels ``(n_train,)`` and the own options' ``held_out_options`` scores on those
    rows, which join the dev rows in choosing the baseline (a prompt's train scores are what its search
    fitted, so only dev rows judge it). A one-row dev difference never moves the user (p = 0.5); with 32
    dev rows a move needs about 5 more wins than losses.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    own = [name for name in dev_scores if name not in provider]
    if not own:
        raise ValueError("protect needs at least one option without the provider")
    train_labels, train_scores = held_out if held_out and held_out[1] else (np.zeros(0, int), {})
    if train_scores and set(train_scores) != set(own):
        raise ValueError(f"held_out scores name {sorted(train_scores)}, the own options are {own}")
    own_labels = np.r_[train_labels, labels].astype(int)
    own_scores = {
        name: np.concatenate([train_scores[name], dev_scores[name]]) if train_scores else dev_scores[name]
        for name in own
    }
    own_accuracy, own_loss, baseline = rank(own_labels, own_scores)
    dev_accuracy, _, _ = rank(labels, dev_scores)
    others = {name: s for name, s in dev_scores.items() if name in provider}
    record = dict(alpha=alpha, own_rows=len(own_labels), own_accuracy=own_accuracy, own_loss=own_loss)
    if not others:
        return Choice(baseline, baseline, None, 0, 0, 1.0, dev_accuracy=dev_accuracy, **record)
    contender = rank(labels, others)[2]
    a = dev_scores[contender].argmax(1) == labels
    b = dev_scores[baseline].argmax(1) == labels
    wins, losses = int((a & ~b).sum()), int((~a & b).sum())
    p = sign_test(wins, losses)
    kept = contender if p <= alpha else baseline
    return Choice(kept, baseline, contender, wins, losses, p, dev_accuracy=dev_accuracy, **record)
