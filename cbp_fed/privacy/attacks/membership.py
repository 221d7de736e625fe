"""Membership inference on the uploaded z, LiRA-style (Carlini et al. 2022) with shadow users.

The game, per target user: a challenge example (x, y), drawn from the user's training rows
(members) or from its held-out dev rows of the same shard (non-members), and the user's final z.
The statistic is the z-customised model's logit-scaled confidence in y at x,
``phi = log p_y - log(1 - p_y)`` with p = softmax of the label-word scores (one BlackBox call).

Shadows: for each target user, ``shadows`` simulated users (``common.Shadows``: same CMA-ES, budget,
start vector and defences, the provider's own BlackBox) each train on a random half of that user's
challenge rows, so every challenge example has IN and OUT shadows. Per example, Gaussians are fitted
to phi under IN and OUT (LiRA online; with a pooled variance when an example has fewer than 2 of
either), and the score of the target is their log-likelihood ratio. Reported: ROC AUC, TPR at 0.1%
and 1% FPR over all users' challenges, and a log-scale ROC curve.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from ..transcript import Transcript
from .common import Shadows, ground_truth, roc_curve, roc_metrics, run_config_of


def logit_confidence(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``phi (..., n)`` from scores ``(..., n, C)`` and labels ``(n,)``: log p_y - log(1 - p_y), stable."""
    s = np.asarray(scores, np.float64)
    top = s.max(axis=-1, keepdims=True)
    log_p = s - top - np.log(np.exp(s - top).sum(axis=-1, keepdims=True))
    log_py = np.take_along_axis(log_p, np.broadcast_to(labels[:, None], log_p.shape[:-1] + (1,)), axis=-1)[..., 0]
    return log_py - np.log(-np.expm1(np.minimum(log_py, -1e-12)))


def lira_scores(target: np.ndarray, shadow: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Per example, log N(target; IN) - log N(target; OUT).

    Args:
        target: ``(n,)`` the statistic under the target's z. shadow: ``(n, S)`` under each shadow's z.
        inside: ``(n, S)`` bool, whether the example was in that shadow's training set.
    """
    pooled = {}  # the variance of phi about each example's own mean, pooled over examples
    for flag in (True, False):
        groups = [shadow[i, inside[i] == flag] for i in range(len(shadow))]
        resid = [g - g.mean() for g in groups if len(g) > 1]
        pooled[flag] = max(float(np.concatenate(resid).std()), 1e-6) if resid else 1.0
    out = np.zeros(len(target))
    for i in range(len(target)):
        ll = {}
        for flag in (True, False):
            values = shadow[i, inside[i] == flag]
            mean = values.mean() if len(values) else shadow[i].mean()
            std = max(values.std(), 1e-6) if len(values) > 1 else pooled[flag]
            ll[flag] = -0.5 * ((target[i] - mean) / std) ** 2 - np.log(std)
        out[i] = ll[True] - ll[False]
    return out


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


def run(run_dir: Path, shadows: int = 8, seed: int = 0, lm=None, max_users: int = 0, shadow_cache=None) -> dict:
    """The attack on every user with a final z (the first ``max_users`` when > 0); writes the ROC plot
    into ``run_dir/privacy/membership_roc.png`` and returns the metrics. ``shadow_cache``: see ``Shadows``."""
    transcript = Transcript(run_dir)
    config = run_config_of(transcript)
    users = [p for p in transcript.users() if transcript.final_z(p) is not None]
    users = users[:max_users] if max_users else users
    if not users:
        raise ValueError(f"{run_dir}: no user uploaded a final z")
    truth = ground_truth(config, transcript.users())
    sim = Shadows(run_dir, transcript.rounds(users[0])[0].z_start, lm, shadow_cache)
    rng = random.Random(seed)
    all_scores, all_members = [], []
    for p in users:
        t = truth[p]
        members = list(t.train)
        non_members = [sha for sha in t.dev if sha not in t.train][: len(members)]
        rows = [t.rows[sha] for sha in members + non_members]
        fits = [sim.fits(ex) for ex in rows]  # the user's texts the BlackBox can score (too long: refused)
        rows = [ex for ex, ok in zip(rows, fits) if ok]
        n_members = sum(fits[: len(members)])
        labels = np.array([ex.label for ex in rows])
        target = logit_confidence(sim.scores(transcript.final_z(p)[None], rows, t.label_words)[0], labels)
        phi, inside = np.zeros((len(rows), shadows)), np.zeros((len(rows), shadows), bool)
        for s in range(shadows):
            chosen = sorted(rng.sample(range(len(rows)), max(1, min(n_members, len(rows) // 2))))
            inside[chosen, s] = True
            z = sim.train([rows[i] for i in chosen], t.label_words, seed=seed * 100_003 + p * 1000 + s)
            phi[:, s] = logit_confidence(sim.scores(z[None], rows, t.label_words)[0], labels)
        all_scores.append(lira_scores(target, phi, inside))
        all_members.append(np.arange(len(rows)) < n_members)
    scores, members = np.concatenate(all_scores), np.concatenate(all_members)
    metrics = roc_metrics(scores, members)
    out = Path(run_dir) / "privacy"
    out.mkdir(exist_ok=True)
    fpr, tpr = roc_curve(scores, members)
    plot_roc(fpr, tpr, metrics["auc"], out / "membership_roc.png", f"membership on z ({len(users)} users)")
    return {**metrics, "users": len(users), "shadows_per_user": shadows, "roc_plot": "membership_roc.png"}
