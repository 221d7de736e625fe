"""Exposure accounting: which of each user's texts the provider saw, and how often.

From the transcript alone: every distinct text (by hash) a user sent, in which role (training texts
of train.begin, test texts of evaluate.query), how many generations scored it and how many
(candidate, text) scores were returned for it. With the ground truth (``common.ground_truth``), the
share of each user's training, held-out and test rows the provider saw, and the share of the texts
scored in training that really were training rows (below 1 with decoy texts).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..transcript import Transcript
from .common import ground_truth, run_config_of


def counts(transcript: Transcript, partition: int) -> dict[str, Counter]:
    """{"train": {sha: generations that scored it}, "pairs": {sha: (candidate, text) scores},
    "evaluate": {sha: evaluations that scored it}} for one user."""
    train, pairs, evaluate = Counter(), Counter(), Counter()
    for view in transcript.rounds(partition):
        for z, batch, _ in view.steps():
            for i in batch:
                train[view.train_hashes[i]] += 1
                pairs[view.train_hashes[i]] += len(z)
        if view.eval_scores is not None:
            evaluate.update(view.eval_hashes)
    return {"train": train, "pairs": pairs, "evaluate": evaluate}


def run(run_dir: Path) -> dict:
    """Per user and over users: texts seen, how often, and (with the truth) which of the user's rows."""
    transcript = Transcript(run_dir)
    config = run_config_of(transcript)
    users = transcript.users()
    truth = ground_truth(config, users)
    per_user = {}
    for p in users:
        seen = counts(transcript, p)
        t = truth[p]
        scored = set(seen["train"])
        train_seen = [seen["train"][sha] for sha in t.train]
        per_user[p] = {
            "texts_seen": len(scored | set(seen["evaluate"])),
            "training_rows_seen": float(np.mean([c > 0 for c in train_seen])) if train_seen else 0.0,
            "dev_rows_seen": float(np.mean([sha in scored for sha in t.dev])) if t.dev else 0.0,
            "test_rows_seen": float(np.mean([sha in seen["evaluate"] for sha in t.test])) if t.test else 0.0,
            "scored_texts_that_are_training_rows": len(scored & set(t.train)) / len(scored) if scored else 0.0,
            "generations_per_training_row": float(np.mean(train_seen)) if train_seen else 0.0,
            "scores_per_training_row": float(np.mean([seen["pairs"][sha] for sha in t.train])) if t.train else 0.0,
            "max_generations_of_a_text": max(seen["train"].values(), default=0),
        }
    keys = next(iter(per_user.values())).keys() if per_user else []
    mean = {k: float(np.mean([u[k] for u in per_user.values()])) for k in keys}
    return {"users": len(users), "mean": mean, "per_user": {str(p): v for p, v in per_user.items()}}
