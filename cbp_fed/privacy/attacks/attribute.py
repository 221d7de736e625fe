"""Attribute inference from the uploaded z: a probe trained on shadow users' z predicts a user's task
(runs with several tasks) or its label skew (the majority label of its training set).

Shadows (``common.Shadows``) are trained on public rows with the attribute set by the provider: a
task drawn uniformly from the run's tasks, or a dominant label c with a share drawn in [0.5, 1] of the
training set (the rest from the other labels); same training-set size as the users'. The probe is a
multinomial logistic regression on the standardised shift ``z - z_start`` (numpy, L2-regularised,
full-batch gradient descent). Reported: accuracy on the real users vs chance (always predicting the
most frequent attribute value among them).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from ..transcript import Transcript
from .common import Shadows, binomial_p_value, ground_truth, run_config_of, sample_rows


def fit_probe(x: np.ndarray, y: np.ndarray, classes: int, l2: float = 1e-2, steps: int = 500, lr: float = 0.5):
    """Multinomial logistic regression on ``x (n, f)``, ``y (n,)`` in [0, classes); returns a predictor
    ``(m, f) -> (m,)``. Features are standardised with the training set's mean and std."""
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-8
    xs = (x - mean) / std
    w, b = np.zeros((x.shape[1], classes)), np.zeros(classes)
    onehot = np.eye(classes)[y]
    for _ in range(steps):
        logits = xs @ w + b
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grad = (p - onehot) / len(x)
        w -= lr * (xs.T @ grad + l2 * w)
        b -= lr * grad.sum(axis=0)
    return lambda new: np.argmax(((new - mean) / std) @ w + b, axis=1)


def probe_accuracy(
    shadow_z: np.ndarray, shadow_y: np.ndarray, target_z: np.ndarray, target_y: np.ndarray, classes: int
):
    """Train on shadows, predict targets: {accuracy, chance, advantage, p_value, predictions}."""
    predict = fit_probe(shadow_z, shadow_y, classes)
    predicted = predict(target_z)
    correct = int((predicted == target_y).sum())
    chance = float(np.bincount(target_y, minlength=classes).max() / len(target_y))
    return {
        "accuracy": correct / len(target_y),
        "chance": chance,
        "advantage": correct / len(target_y) - chance,
        "p_value": binomial_p_value(correct, len(target_y), chance),
        "users": len(target_y),
        "predictions": predicted.tolist(),
    }


def run(run_dir: Path, shadows: int = 24, seed: int = 0, lm=None, shadow_cache=None, defended: bool = True) -> dict:
    """The probe on every user with a final z; the attribute is the task with several tasks, else the
    label skew. ``shadow_cache``: see ``Shadows``; ``defended=False`` trains the shadows without the
    run's noise (one set of shadows for every defence of a setup: cheaper, and a weaker probe under noise)."""
    transcript = Transcript(run_dir)
    config = run_config_of(transcript)
    users = [p for p in transcript.users() if transcript.final_z(p) is not None]
    if not users:
        raise ValueError(f"{run_dir}: no user uploaded a final z")
    truth = ground_truth(config, transcript.users())
    z_start = transcript.rounds(users[0])[0].z_start
    sim = Shadows(run_dir, z_start, lm, shadow_cache, defended=defended)
    rng = random.Random(seed)
    tasks = list(config.task_list)
    attribute = "task" if len(tasks) > 1 else "label-skew"
    n_train = int(np.median([len(truth[p].train) for p in users]))
    shadow_z, shadow_y = [], []
    for s in range(shadows):
        task = tasks[s % len(tasks)] if attribute == "task" else tasks[0]
        words = sim.label_words(task)
        classes = len(words)
        if attribute == "task":
            wanted = [i % classes for i in range(n_train)]
            value = tasks.index(task)
        else:
            value = s % classes
            major = max(1, round(rng.uniform(0.5, 1.0) * n_train))
            others = [c for c in range(classes) if c != value]
            wanted = [value] * major + [others[i % len(others)] for i in range(n_train - major)]
        rows = sample_rows(sim.public_rows(task), wanted, rng)
        shadow_z.append(sim.train(rows, words, seed=seed * 100_003 + s) - z_start)
        shadow_y.append(value)
    target_z = np.stack([transcript.final_z(p) - z_start for p in users])
    if attribute == "task":
        target_y = np.array([tasks.index(truth[p].task) for p in users])
        classes = len(tasks)
    else:
        target_y = np.array([truth[p].majority_label for p in users])
        classes = len(truth[users[0]].label_words)
    result = probe_accuracy(np.stack(shadow_z), np.array(shadow_y), target_z, target_y, classes)
    return {"attribute": attribute, "shadows": shadows, "defended_shadows": defended, **result}
