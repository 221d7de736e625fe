"""What the customisation is worth to its users, read back from a recorded run.

Each user's last evaluation in the transcript (the scores ``(n, C)`` returned for its test texts under
the z it sent) against the true test labels (``attacks.common.ground_truth``): accuracy, the
cross-entropy of the label-word softmax, and the best a constant answer scores on the same texts. The
privacy sweep reads a defence's cost from these; with a few dozen test texts per user the loss shows
a change that the accuracy cannot. ``paired_gain`` compares two runs text by text (what a defended
search adds over the start vector alone, with its interval).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..search import fitness
from ..stats import paired
from .attacks.common import ground_truth, run_config_of
from .transcript import Transcript


def correct_by_text(run_dir: str | Path) -> dict[tuple[int, str], bool]:
    """{(user, test text hash): whether the user's last evaluation answered it right}: two runs of one
    setup (a defence and the start vector alone) compare on the same texts, pair by pair."""
    transcript = Transcript(run_dir)
    users = transcript.users()
    truth = ground_truth(run_config_of(transcript), users)
    out = {}
    for p in users:
        evaluated = [v for v in transcript.rounds(p) if v.eval_scores is not None]
        if evaluated:
            view = evaluated[-1]
            for sha, answer in zip(view.eval_hashes, view.eval_scores.argmax(axis=1)):
                out[p, sha] = bool(answer == truth[p].test[sha])
    return out


def paired_gain(run_dir: str | Path, start_dir: str | Path) -> dict:
    """Accuracy points gained over the start vector on the test texts both runs answered: the mean
    paired difference, its 95% normal interval (n texts) and n."""
    after, before = correct_by_text(run_dir), correct_by_text(start_dir)
    common = sorted(after.keys() & before.keys())
    if not common:
        raise ValueError(f"{run_dir} and {start_dir} share no evaluated test text")
    gain = paired([after[k] - before[k] for k in common])
    half = gain["ci95"] if len(common) > 1 else float("inf")
    return {"gain": gain["mean"], "ci95": [gain["mean"] - half, gain["mean"] + half], "texts": len(common)}


def utility_of(run_dir: str | Path) -> dict:
    """Means over the evaluated users of their test accuracy, test loss (nats) and constant-answer accuracy."""
    transcript = Transcript(run_dir)
    users = transcript.users()
    truth = ground_truth(run_config_of(transcript), users)
    per_user = []
    for p in users:
        evaluated = [v for v in transcript.rounds(p) if v.eval_scores is not None]
        if not evaluated:
            continue
        view = evaluated[-1]
        scores = view.eval_scores  # (n, C)
        labels = np.array([truth[p].test[h] for h in view.eval_hashes])
        per_user.append(
            (
                float((scores.argmax(axis=1) == labels).mean()),
                float(fitness(scores[None], labels)[0]),  # the users' own cross-entropy
                float(np.bincount(labels, minlength=scores.shape[1]).max() / len(labels)),
            )
        )
    if not per_user:
        raise ValueError(f"{run_dir}: the transcript holds no evaluation")
    accuracy, loss, constant = np.mean(per_user, axis=0)
    return {"users": len(per_user), "accuracy": accuracy, "loss": loss, "constant_accuracy": constant}
