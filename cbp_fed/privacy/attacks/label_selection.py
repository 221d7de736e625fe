"""Label inference from CMA-ES selection: the provider reads the user's labels off its own scores and
the way the next population moved.

CMA-ES moves its mean to a weighted average of the best half of each population, ranked by the
user's loss on its private labels. The provider holds every population ``X_g (k, r)``, the scores
``S_g (k, b, C)`` it returned, and the next population, whose sample mean estimates the new search
mean (exactly the uploaded z after a round's last generation; exactly the start vector before the
user's first). Per generation:

    d = m_{g+1} - m_g                           the observed mean shift          (r,)
    e_i = (X_g[i] - m_g) . d                    how far candidate i was followed  (k,)
    l_i(j, c) = logsumexp(S_g[i, j]) - S_g[i, j, c]   the loss of candidate i on text j if its label were c

Candidates the user selected have large e_i; if text j has label c, they tend to have small
l_i(j, c). The evidence for "text j has label c" is the correlation over candidates of -l(j, c)
with e, summed over every generation that scored text j (a per-example marginal: first order in
the other texts' labels). From there, a coordinate ascent on the whole label vector maximises the
agreement of the implied fitness ranking (the mean loss over the batch, what the user told CMA-ES)
with e over all generations (``infer_labels``). Decoy candidates and decoy texts are taken at face
value (the provider cannot tell them apart).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..transcript import Transcript


def _corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of ``a (k, ...)`` with ``b (k,)`` along axis 0 (0 where either is flat)."""
    a = a - a.mean(axis=0)
    b = b - b.mean()
    norm = np.sqrt((a**2).sum(axis=0)) * np.sqrt((b**2).sum())
    return np.divide(
        (a * b.reshape(-1, *[1] * (a.ndim - 1))).sum(axis=0), norm, out=np.zeros(a.shape[1:]), where=norm > 0
    )


def generations(transcript: Transcript, partition: int, exact_final: bool = True, restarts: bool = False) -> list[dict]:
    """The user's generations in order across rounds: candidates ``(k, r)``, the texts' hashes ``(b,)``,
    scores ``(k, b, C)``, and the best estimates of the search mean before and after.

    ``exact_final``: the uploaded z is the search mean (false under ``dp-clip``: then the next
    population's sample mean is used). ``restarts``: every round starts a fresh search at the round's
    start vector (FedBPT), else the search continues from the user's own state."""
    out = []
    views = transcript.rounds(partition)
    for view in views:
        steps = view.steps()
        for g, (z, batch, scores) in enumerate(steps):
            out.append(
                {
                    "z": z.astype(np.float64),
                    "hashes": [view.train_hashes[i] for i in batch],
                    "scores": scores.astype(np.float64),
                    "first_of_round": g == 0,
                    "next_exact": view.final_z if g == len(steps) - 1 and exact_final else None,
                    "z_start": view.z_start,
                }
            )
    for g, gen in enumerate(out):
        if g == 0 or (restarts and gen["first_of_round"]):
            gen["mean"] = gen["z_start"].astype(np.float64)  # a new search starts at the start vector
        elif gen["first_of_round"] and out[g - 1]["next_exact"] is not None:
            gen["mean"] = out[g - 1]["next_exact"].astype(np.float64)  # the state continues from the uploaded z
        else:
            gen["mean"] = gen["z"].mean(axis=0)
    for g, gen in enumerate(out):
        if gen["next_exact"] is not None:
            gen["next"] = gen["next_exact"].astype(np.float64)
        elif g + 1 < len(out) and not (restarts and out[g + 1]["first_of_round"]):
            gen["next"] = out[g + 1]["z"].mean(axis=0)
        else:
            gen["next"] = None
    return out


def _pearson(f: np.ndarray, e: np.ndarray) -> float:
    """Correlation of two ``(k,)`` vectors (0 when either is flat)."""
    f, e = f - f.mean(), e - e.mean()
    norm = np.sqrt((f**2).sum() * (e**2).sum())
    return float((f * e).sum() / norm) if norm > 0 else 0.0


def infer_labels(
    transcript: Transcript, partition: int, exact_final: bool = True, restarts: bool = False, sweeps: int = 10
) -> dict:
    """{text hash: {"label": predicted, "evidence": [per label], "generations": n}} for every text the
    user had scored in a generation whose next mean the provider could estimate (``generations``).

    Two stages. Marginal: per text, the label whose loss correlates best with how far each candidate
    was followed (the evidence). Joint: starting there, coordinate ascent on the whole label vector y
    of the objective sum_g corr(-fitness_g(y), followed_g), with fitness_g(y) ``(k,)`` the mean loss
    over generation g's batch under y, exactly what the user told CMA-ES. The joint stage separates
    what a shift of z does to every text alike (which reveals only the label balance) from what it
    does to one text."""
    evidence: dict[str, np.ndarray] = {}
    seen = defaultdict(int)
    used = []  # (text indices (b,), losses (k, b, C), followed (k,)) per usable generation
    index: dict[str, int] = {}
    for gen in generations(transcript, partition, exact_final, restarts):
        if gen["next"] is None:
            continue
        shift = gen["next"] - gen["mean"]
        followed = (gen["z"] - gen["mean"]) @ shift  # (k,)
        s = gen["scores"]
        top = s.max(axis=2, keepdims=True)
        loss = top + np.log(np.exp(s - top).sum(axis=2, keepdims=True)) - s  # (k, b, C)
        corr = _corr(-loss, followed)  # (b, C)
        for j, sha in enumerate(gen["hashes"]):
            evidence[sha] = evidence.get(sha, 0) + corr[j]
            seen[sha] += 1
            index.setdefault(sha, len(index))
        used.append((np.array([index[sha] for sha in gen["hashes"]]), loss, followed))
    labels = np.zeros(len(index), dtype=int)
    for sha, i in index.items():
        labels[i] = int(np.argmax(evidence[sha]))
    if used:
        labels = _coordinate_ascent(labels, used, sweeps)
    return {
        sha: {"label": int(labels[i]), "evidence": [float(v) for v in evidence[sha]], "generations": seen[sha]}
        for sha, i in index.items()
    }


def _coordinate_ascent(labels: np.ndarray, used: list, sweeps: int) -> np.ndarray:
    """Improve ``labels (n,)`` one text at a time on sum_g corr(-fitness_g(labels), followed_g) until
    no single change helps (or ``sweeps`` passes)."""
    n_labels = used[0][1].shape[2]
    sums = [loss[:, np.arange(len(idx)), labels[idx]].sum(axis=1) for idx, loss, _ in used]  # (k,) per generation
    where = defaultdict(list)  # text -> [(generation, position in its batch)]
    for g, (idx, _, _) in enumerate(used):
        for j, i in enumerate(idx):
            where[int(i)].append((g, j))
    for _ in range(sweeps):
        changed = False
        for i, places in where.items():
            gains = np.zeros(n_labels)
            for c in range(n_labels):
                for g, j in places:
                    loss, followed = used[g][1], used[g][2]
                    trial = sums[g] + loss[:, j, c] - loss[:, j, labels[i]]
                    gains[c] += _pearson(-trial, followed) - _pearson(-sums[g], followed)
            best = int(np.argmax(gains))
            if best != labels[i] and gains[best] > 1e-12:
                for g, j in places:
                    sums[g] = sums[g] + used[g][1][:, j, best] - used[g][1][:, j, labels[i]]
                labels[i], changed = best, True
        if not changed:
            break
    return labels


def score_predictions(predictions: dict[int, dict[str, dict]], truth: dict[int, dict[str, int]]) -> dict:
    """Accuracy of the predicted labels on the users' training texts (decoys and texts never scored
    are left out) against the majority-class baseline (always the most frequent label of all the
    users' training texts) and the per-user majority (an oracle that knows each user's skew)."""
    from .common import binomial_p_value

    correct, labels, per_user_majority = 0, [], 0
    for p, labels_of in truth.items():
        scored = [(sha, y) for sha, y in labels_of.items() if sha in predictions.get(p, {})]
        correct += sum(predictions[p][sha]["label"] == y for sha, y in scored)
        ys = [y for _, y in scored]
        labels += ys
        if ys:
            per_user_majority += np.bincount(ys).max()
    total = len(labels)
    majority = float(np.bincount(labels).max() / total) if total else float("nan")
    accuracy = correct / total if total else float("nan")
    return {
        "accuracy": accuracy,
        "majority_baseline": majority,
        "per_user_majority": per_user_majority / total if total else float("nan"),
        "advantage": accuracy - majority,
        "p_value": binomial_p_value(correct, total, majority) if total else 1.0,
        "texts": total,
        "users": len(truth),
    }
