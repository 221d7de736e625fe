"""Membership inference on the uploaded z: offline LiRA with a global variance (Carlini et al. 2022,
section "offline"), with reference z's shared by every user of a task, so that a thousand challenges
cost a thousand scored texts per user set, not a thousand shadow users.

The game, per target user: a challenge row of the user's task, either one of its training rows
(member) or a row it never trained on (non-member: drawn from the task's user-side rows outside its
training set; other users' rows and rows no user got come from the same distribution), and the user's
final z. The statistic is the z-customised model's logit-scaled confidence in the true answer,
``phi = log p_y - log(1 - p_y)`` with p the softmax of the answer scores (one BlackBox call per user).

References: the start vector (public) and ``references`` shadow users per task, trained by the provider
(``common.Shadows``: same CMA-ES and budget, no defence) on its own public rows, which no user has, so
every challenge row is OUT for every reference. Per row, the mean phi over the references estimates
how confident an untrained z is on it (its difficulty); the score is the target's phi above that mean
in units of one standard deviation pooled over all rows (the global variance). Reported: ROC AUC and
TPR at 0.1% and 1% FPR with 95% bootstrap intervals (users resampled with their challenges: the
challenges of one user share its z), the counts, and a log-scale ROC curve.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from ..transcript import Transcript, text_hash
from .common import Shadows, ground_truth, roc_curve, roc_metrics, run_config_of


def logit_confidence(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``phi (..., n)`` from scores ``(..., n, C)`` and labels ``(n,)``: log p_y - log(1 - p_y), stable."""
    s = np.asarray(scores, np.float64)
    top = s.max(axis=-1, keepdims=True)
    log_p = s - top - np.log(np.exp(s - top).sum(axis=-1, keepdims=True))
    log_py = np.take_along_axis(log_p, np.broadcast_to(labels[:, None], log_p.shape[:-1] + (1,)), axis=-1)[..., 0]
    return log_py - np.log(-np.expm1(np.minimum(log_py, -1e-12)))


def offline_lira_scores(target: np.ndarray, references: np.ndarray) -> np.ndarray:
    """``(target - mean over references) / pooled std`` per row: how much more confident the target is
    than z's that never saw the row.

    Args:
        target: ``(n,)`` phi under the target's z. references: ``(n, S)`` phi under S >= 1 OUT z's.
    """
    mean = references.mean(axis=1)
    spread = float((references - mean[:, None]).std()) if references.shape[1] > 1 else 0.0
    return (target - mean) / max(spread, 1e-6)


def bootstrap_intervals(scores: list[np.ndarray], members: list[np.ndarray], draws: int, seed: int) -> dict:
    """95% percentile intervals of ``roc_metrics``' AUC and TPRs over ``draws`` resamples of the users
    (each user's ``scores`` / ``members`` arrays go in or out together)."""
    rng = np.random.default_rng(seed)
    keys = ("auc", "tpr_at_0.1%_fpr", "tpr_at_1%_fpr")
    samples = {k: [] for k in keys}
    for _ in range(draws):
        pick = rng.integers(len(scores), size=len(scores))
        m = np.concatenate([members[i] for i in pick])
        if m.all() or not m.any():
            continue
        metrics = roc_metrics(np.concatenate([scores[i] for i in pick]), m)
        for k in keys:
            samples[k].append(metrics[k])
    return {f"{k}_ci95": [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in samples.items()}


def plot_roc(fpr: np.ndarray, tpr: np.ndarray, auc: float, path: Path, title: str) -> None:
    """Log-log ROC curve with the chance diagonal (the LiRA convention: low-FPR behaviour is what matters)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-4
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(np.maximum(fpr, floor), np.maximum(tpr, floor), label=f"LiRA (AUC {auc:.3f})")
    ax.plot([floor, 1], [floor, 1], "k--", lw=0.8, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(floor, 1), ylim=(floor, 1), xlabel="false positive rate")
    ax.set(ylabel="true positive rate", title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def challenges(sim: Shadows, truth, non_members: int, rng: random.Random) -> tuple[list, int]:
    """A user's challenge rows: its training rows, then ``non_members`` rows of its task's user side
    that are not among them (seeded draw), all that the BlackBox can score; returns (rows, members)."""
    members = [ex for sha, ex in truth.rows.items() if sha in truth.train and sim.fits(ex)]
    outside = [ex for ex in sim.partition(truth.task)[1] if text_hash(ex.passage, ex.query) not in truth.train]
    rng.shuffle(outside)
    chosen = []
    for ex in outside:
        if len(chosen) == non_members:
            break
        if sim.fits(ex):
            chosen.append(ex)
    return members + chosen, len(members)


def run(
    run_dir: Path,
    references: int = 2,
    non_members: int = 50,
    seed: int = 0,
    lm=None,
    max_users: int = 0,
    shadow_cache=None,
    bootstrap: int = 1000,
) -> dict:
    """The attack on every user with a final z (the first ``max_users`` when > 0), ``non_members``
    non-member challenges per user; writes ``run_dir/privacy/membership_roc.png`` and returns the
    metrics. ``shadow_cache``: see ``Shadows`` (the references are shared with every run of the same setup)."""
    transcript = Transcript(run_dir)
    config = run_config_of(transcript)
    users = [p for p in transcript.users() if transcript.final_z(p) is not None]
    users = users[:max_users] if max_users else users
    if not users:
        raise ValueError(f"{run_dir}: no user uploaded a final z")
    truth = ground_truth(config, transcript.users())
    z_start = transcript.rounds(users[0])[0].z_start
    sim = Shadows(run_dir, z_start, lm, shadow_cache, defended=False)
    rng = random.Random(seed)
    reference_z = {}  # task -> (S + 1, r): the start vector and the task's shadows
    all_scores, all_members = [], []
    for p in users:
        t = truth[p]
        if t.task not in reference_z:
            public = sim.public_rows(t.task)
            shadows = []
            for s in range(references):
                rows = random.Random(seed * 7919 + s).sample(public, min(len(t.train), len(public)))
                shadows.append(sim.train(rows, t.label_words, seed=seed * 100_003 + 50_000 + s))
            reference_z[t.task] = np.stack([z_start, *shadows])
        rows, n_members = challenges(sim, t, non_members, rng)
        labels = np.array([ex.label for ex in rows])
        target = logit_confidence(sim.scores(transcript.final_z(p)[None], rows, t.label_words)[0], labels)
        reference = logit_confidence(
            sim.cached_scores(reference_z[t.task], rows, t.label_words), labels
        ).T  # (n, S + 1)
        all_scores.append(offline_lira_scores(target, reference))
        all_members.append(np.arange(len(rows)) < n_members)
    scores, members = np.concatenate(all_scores), np.concatenate(all_members)
    metrics = roc_metrics(scores, members)
    out = Path(run_dir) / "privacy"
    out.mkdir(exist_ok=True)
    fpr, tpr = roc_curve(scores, members)
    plot_roc(fpr, tpr, metrics["auc"], out / "membership_roc.png", f"membership on z ({len(users)} users)")
    return {
        **metrics,
        **bootstrap_intervals(all_scores, all_members, bootstrap, seed),
        "users": len(users),
        "references": references + 1,
        "scheme": "offline LiRA, global variance, references: the start vector and shadows on public rows",
        "roc_plot": "membership_roc.png",
    }
