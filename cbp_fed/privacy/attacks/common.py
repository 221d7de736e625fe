"""What the attacks share: the game's ground truth (for scoring only), ROC metrics, and shadow users.

Ground truth (``ground_truth``) is what the evaluator knows and the attacker does not: each user's
training rows and labels, its held-out rows, its task and label skew, recomputed from the run's
config exactly as the ClientApps computed them. Attacks never read it to predict; the harness scores
their predictions with it.

Shadow users (``Shadows``) are users the provider simulates itself from public knowledge only: the
provider-side rows of the run's tasks (public to it by construction), the run's config (public) and
its own BlackBox. Each shadow runs the same CMA-ES as a real user (same popsize, sigma0, budget,
start vector and, under Kerckhoffs' principle, the same defences on its z) offline in this process.
Shadows are the attacks' main cost; with a ``cache`` folder a shadow's z is kept under a hash of
everything it depends on, so runs that differ only in what shadows do not model (decoys) share them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...config import RunConfig
from ..transcript import Transcript, text_hash


# ----------------------------------------------------------------------------- ground truth
@dataclass
class UserTruth:
    """One user's private facts, keyed by text hash: ``train`` / ``dev`` / ``test`` -> {sha: label}."""

    task: str
    label_words: tuple[str, ...]
    train: dict[str, int]
    dev: dict[str, int]
    test: dict[str, int]
    rows: dict[str, object]  # sha -> Example (train and dev), for shadow challenges

    @property
    def majority_label(self) -> int:
        """The most frequent label of the training set (lowest on ties): the user's label skew."""
        counts = np.bincount(list(self.train.values()), minlength=len(self.label_words))
        return int(counts.argmax())


def ground_truth(config: RunConfig, users: list[int], num_partitions: int | None = None) -> dict[int, UserTruth]:
    """Each user's split as its ClientApp computed it (``user_data`` with the run's partitioning)."""
    from ...tasks import PartitionConfig, user_data

    n = num_partitions or max(config.min_users, max(users, default=0) + 1)
    partition = PartitionConfig(config.partition, config.task_list, n, config.dirichlet_alpha, config.seed)
    out = {}
    for p in users:
        task, split = user_data(
            partition,
            p,
            config.shots_per_class,
            config.n_test,
            config.seed,
            class_balanced=config.class_balanced,
            dev_shots_per_class=config.dev_shots_per_class,
        )

        def keyed(rows):
            return {text_hash(ex.passage, ex.query): ex.label for ex in rows}

        rows = {text_hash(ex.passage, ex.query): ex for ex in split.train + split.dev}
        out[p] = UserTruth(
            task.name, tuple(task.label_words), keyed(split.train), keyed(split.dev), keyed(split.test), rows
        )
    return out


def run_config_of(transcript: Transcript) -> RunConfig:
    return RunConfig.from_run_config(transcript.run_config)


# ----------------------------------------------------------------------------- metrics
def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) over every threshold, from (0, 0) to (1, 1)."""
    scores, positive = np.asarray(scores, float), np.asarray(positive, bool)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positive[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps, fps = np.cumsum(y)[distinct], np.cumsum(~y)[distinct]
    tpr = np.r_[0.0, tps / max(y.sum(), 1)]
    fpr = np.r_[0.0, fps / max((~y).sum(), 1)]
    return fpr, tpr


def roc_metrics(scores: np.ndarray, positive: np.ndarray) -> dict:
    """ROC AUC (trapezoid over the curve; 0.5 = chance) and TPR at 0.1% and 1% FPR (the largest TPR
    whose FPR does not exceed the level; with fewer than 1/level negatives only FPR 0 qualifies)."""
    fpr, tpr = roc_curve(scores, positive)
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))

    def at(level):
        return float(tpr[fpr <= level].max())

    positive = np.asarray(positive, bool)
    return {
        "auc": auc,
        "tpr_at_0.1%_fpr": at(0.001),
        "tpr_at_1%_fpr": at(0.01),
        "members": int(positive.sum()),
        "non_members": int((~positive).sum()),
    }


def binomial_p_value(correct: int, total: int, rate: float) -> float:
    """One-sided p-value of ``correct`` or more successes in ``total`` trials at ``rate`` (normal
    approximation with continuity correction; 1.0 when nothing was tried)."""
    import math

    if total == 0 or rate >= 1:
        return 1.0
    mean, std = total * rate, math.sqrt(total * rate * (1 - rate))
    return 0.5 * math.erfc((correct - 0.5 - mean) / (std * math.sqrt(2))) if std > 0 else float(correct <= mean)


# ----------------------------------------------------------------------------- shadow users
class Shadows:
    """The provider's offline simulation of users: its BlackBox, the run's CMA-ES settings and the
    public (provider-side) rows of the run's tasks.

    Args:
        run_dir: the run folder (config.json, transcript/, the generator when the run trained one).
        z_start: ``(r,)`` the start vector users got (the transcript's first round).
        lm: an already loaded backbone (tests pass the tiny one); default: the run's backbone.
        cache: a folder for trained shadows' z and scores, shared between runs (None: no cache).
        defended: whether shadows apply the run's label mechanism and z release (Kerckhoffs' principle);
        False trains them without, so that every defence of one setup shares them.
    """

    def __init__(
        self, run_dir: str | Path, z_start: np.ndarray, lm=None, cache: str | Path | None = None, defended: bool = True
    ):
        from ...backbone import FrozenLM

        self.run_dir = Path(run_dir)
        self.transcript = Transcript(self.run_dir)
        self.config = run_config_of(self.transcript)
        if not defended:  # shadows without the run's noise: the same for every defence of one setup
            self.config = dataclasses.replace(self.config, selection_noise=0.0, dp_clip=0.0, dp_noise=0.0)
        self.lm = lm or FrozenLM.load(self.config.backbone, self.config.dtype, self.config.device)
        self.blackbox = provider_blackbox(self.config, self.lm, self.run_dir)
        self.z_start = np.asarray(z_start, np.float32)
        self.cache = Path(cache) if cache else None
        self._partitions: dict[str, tuple[list, list]] = {}  # task -> (provider-side rows, user-side rows)

    def partition(self, task_name: str) -> tuple[list, list]:
        """(provider-side rows, user-side rows) of a task, loaded once per task."""
        from ...tasks import load_task_spec, server_user_partition

        if task_name not in self._partitions:
            public, users = server_user_partition(load_task_spec(task_name))
            self._partitions[task_name] = (list(public), list(users))
        return self._partitions[task_name]

    def public_rows(self, task_name: str) -> list:
        """The provider-side rows of a task (public to the provider; never in any user's data); a copy."""
        return list(self.partition(task_name)[0])

    def label_words(self, task_name: str) -> tuple[str, ...]:
        from ...tasks import load_task_spec

        return tuple(load_task_spec(task_name).label_words)

    def fits(self, row) -> bool:
        """Whether the BlackBox can score ``row`` (its query fits in the run's ``max-tokens``)."""
        try:
            self.lm.encode(row.passage, row.query, self.config.max_tokens)
            return True
        except ValueError:
            return False

    def scores(self, z: np.ndarray, rows, label_words) -> np.ndarray:
        """``(k, n, C)`` scores of candidates ``z (k, r)`` on ``rows``."""
        from ...service import Query

        query = Query(np.asarray(z, np.float32), [ex.passage for ex in rows], [ex.query for ex in rows], label_words)
        return self.blackbox.score([query])[0]

    def cached_scores(self, z: np.ndarray, rows, label_words) -> np.ndarray:
        """``scores``, kept in the cache under a hash of the BlackBox, ``z`` and the rows (references
        scored on the same challenges by every run of one setup are scored once)."""
        if self.cache is None:
            return self.scores(z, rows, label_words)
        c = self.config
        facts = {f: getattr(c, f) for f in ("backbone", "dtype", "method", "generator", "seed", "max_tokens")}
        facts["rows"] = [text_hash(ex.passage, ex.query) for ex in rows]
        facts["label_words"] = list(label_words)
        blob = json.dumps(facts, sort_keys=True).encode() + np.asarray(z, np.float32).tobytes()
        path = self.cache / "scores" / f"{hashlib.sha256(blob).hexdigest()}.npy"
        if path.exists():
            return np.load(path)
        scores = self.scores(z, rows, label_words)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path.with_suffix(".tmp.npy"), scores)
        path.with_suffix(".tmp.npy").replace(path)
        return scores

    def train(self, rows, label_words, seed: int) -> np.ndarray:
        """One shadow user's released z ``(r,)``: CMA-ES from ``z_start`` on ``rows`` with the run's
        settings and budget, its batch sampling, label mechanism (loss clip, selection noise) and Gaussian
        release. No dev selection: a shadow keeps its search's result."""
        if self.cache is None:
            return self._train(rows, label_words, seed)
        path = self.cache / f"{self._key(rows, label_words, seed)}.npy"
        if path.exists():
            return np.load(path)
        z = self._train(rows, label_words, seed)
        self.cache.mkdir(parents=True, exist_ok=True)
        np.save(path.with_suffix(".tmp.npy"), z)
        path.with_suffix(".tmp.npy").replace(path)  # atomic: a killed attack leaves no half-written shadow
        return z

    def _key(self, rows, label_words, seed: int) -> str:
        """sha256 of everything a shadow's z depends on: the BlackBox, the search, the defences on z,
        the start vector, the rows with their labels, the label words and the seed."""
        c = self.config
        fields = ("backbone", "dtype", "method", "generator", "seed", "max_tokens", "t", "r", "popsize", "sigma0")
        fields += ("num_rounds", "steps_per_round", "diagonal", "loss", "batch_size", "selection_noise")
        fields += ("loss_clip", "dp_clip", "dp_noise")
        facts = {f: getattr(c, f) for f in fields}
        facts["generator_dir"] = str((Path(c.generator) if c.generator else self.run_dir / "generator").resolve())
        facts["rows"] = [(text_hash(ex.passage, ex.query), ex.label) for ex in rows]
        facts["label_words"], facts["shadow_seed"] = list(label_words), seed
        blob = json.dumps(facts, sort_keys=True, default=str).encode() + self.z_start.tobytes()
        return hashlib.sha256(blob).hexdigest()

    def _train(self, rows, label_words, seed: int) -> np.ndarray:
        from ...search import CMASearch, SearchConfig
        from ..defences import gaussian_release, noisy_fitness

        c = self.config
        budget = c.num_rounds * c.calls_per_round
        search = CMASearch(self.z_start, SearchConfig(c.popsize, c.sigma0, budget, c.diagonal, loss=c.loss), seed)
        labels = np.array([ex.label for ex in rows])
        rng = np.random.default_rng(seed)
        while not search.done:
            batch = np.arange(len(rows))
            if c.batch_size and c.batch_size < len(rows):
                batch = np.sort(rng.choice(len(rows), c.batch_size, replace=False))
            z = search.ask()
            scores = self.scores(z, [rows[i] for i in batch], label_words)
            search.tell(noisy_fitness(scores, labels[batch], c.loss, c.loss_clip, c.selection_noise, rng))
        if c.dp_clip:  # one release per round; the last one is what the provider keeps
            return gaussian_release(search.result, self.z_start, c.dp_clip, c.dp_noise, [seed, 6])
        return search.result


def provider_blackbox(config: RunConfig, lm, run_dir: Path):
    """The run's BlackBox rebuilt from public facts: the backbone and the run's prompt source (the
    generator the run loaded or trained, or BBT's seeded projection)."""
    from ...domain_training import load_generator
    from ...prompts import ProjectedPrompt
    from ...service import BlackBox

    if config.method in ("bbt", "fedbpt"):
        source = ProjectedPrompt.for_backbone(lm, config.t, config.r, config.seed)
    else:
        source, _ = load_generator(config.generator or run_dir / "generator", lm)
    return BlackBox(lm, source, max_tokens=config.max_tokens)


def sample_rows(rows: list, labels_wanted: list[int], rng: random.Random) -> list:
    """Rows drawn without replacement with exactly the label of each entry of ``labels_wanted``
    (fewer when a class runs out)."""
    by_label: dict[int, list] = {}
    for ex in rows:
        by_label.setdefault(ex.label, []).append(ex)
    for pool in by_label.values():
        rng.shuffle(pool)
    out = []
    for label in labels_wanted:
        if by_label.get(label):
            out.append(by_label[label].pop())
    return out
