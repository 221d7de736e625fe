"""User-side gradient-free search over the task vector z, behind ask/tell (pycma underneath).

One CMA-ES iteration is ``ask() -> score through the black box -> tell(fitness)``; because the
optimiser only asks and is told, an iteration can span a Flower round trip, and its whole state
travels as bytes (``to_bytes`` / ``from_bytes``) into ``context.state``.

The budget is counted in model calls: one call = one candidate z scored on the user's training
batch (the BBT convention), so a popsize-10 generation spends 10 calls. pycma counts them
(``countevals``, one per told candidate); the budget check is ours (see ``CMASearch.done``).
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass

import cma
import numpy as np
from cma.utilities.utils import SolutionDict

# pycma's numerical notes (a coordinate far outside the bounds, TPA's step-size adaptation) arrive as
# UserWarnings from every user's search: thousands of lines per round from the ClientApp actors at scale,
# each shipped through Ray's and Flower's log streams, and none a user can act on. Kept out.
warnings.filterwarnings("ignore", category=UserWarning, module=r"cma(\.|$)")

TRANSIENT = ("ary", "pop_sorted", "_tell2_args")
"""pycma attributes read only by the ask or tell that wrote them (the last population, sorted, and tell's
arguments kept for debugging): 70 KB of a diagonal state at r = 500, left out of ``to_bytes``."""

LOSSES = ("ce", "hinge")
FINAL = ("mean", "best")


@dataclass(frozen=True)
class SearchConfig:
    """CMA-ES settings.

    popsize: candidates per generation. sigma0: initial step size (z is unit-scale by construction
    of the projections). budget: model calls in total. diagonal: separable CMA-ES (O(r) state
    instead of O(r^2); for large r or many users). bound: clip z to [-bound, bound] (0 = none).
    loss: "ce" (cross-entropy over the label words) or "hinge" (multi-class margin).
    final: which z the user keeps: the distribution "mean" or the "best" candidate seen.
    """

    popsize: int = 10
    sigma0: float = 1.0
    budget: int = 200
    diagonal: bool = False
    bound: float = 5.0
    loss: str = "ce"
    final: str = "mean"

    def __post_init__(self):
        if self.popsize < 2:
            raise ValueError(f"popsize must be >= 2, got {self.popsize}")
        if not self.sigma0 > 0:
            raise ValueError(f"sigma0 must be > 0, got {self.sigma0}")
        if self.budget < self.popsize:
            raise ValueError(f"budget ({self.budget} calls) is below one generation (popsize {self.popsize})")
        if self.bound < 0:
            raise ValueError(f"bound must be >= 0, got {self.bound}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.final not in FINAL:
            raise ValueError(f"final must be one of {FINAL}, got {self.final!r}")


class SeededNormal:
    """``randn(*shape)`` from the search's own generator. pycma's default draws from numpy's global
    RNG, which it re-seeds on construction (clobbering it for everything else in the process) and
    which anything else in the process can move between construction and the first ask. Pickled with
    the search, so a restored search continues its exact random sequence."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def __call__(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape)


class CMASearch:
    """CMA-ES over z in R^r with a call budget.

    Args:
        x0: ``(r,)`` start (z0 of the domain, or zeros).
        config: ``SearchConfig``. seed: makes the whole search reproducible.
    """

    def __init__(self, x0: np.ndarray, config: SearchConfig, seed: int):
        self.config = config
        options = {
            "popsize": config.popsize,
            "randn": SeededNormal(seed),
            "seed": float("nan"),  # pycma seeds the global RNG only; ours is `randn`
            "verbose": -9,
            "CMA_diagonal": config.diagonal,
            "tolfun": 0,
            "tolflatfitness": 10**9,
            "tolx": 0,
            "tolstagnation": 10**9,
            # No selective mirrors (pycma's default below popsize 6): pycma finds its injected mirrors
            # again by hash(x.tobytes()), which Python salts per process, so a state told in another
            # process than the one that asked (Ray actors, a deployment's per-message processes)
            # loses track of them ("orphanated injected solution" warnings) and treats them as samples.
            "CMA_mirrors": 0,
        }
        if config.bound:
            options["bounds"] = [-config.bound, config.bound]
        self.es = cma.CMAEvolutionStrategy(np.asarray(x0, dtype=float), config.sigma0, options)
        self._asked: list[np.ndarray] | None = None  # the population out for scoring, as pycma returned it

    @property
    def calls(self) -> int:
        """Model calls spent: candidates told so far (pycma's evaluation count)."""
        return int(self.es.countevals)

    @property
    def done(self) -> bool:
        """True when another generation would exceed the budget.

        Not pycma's ``maxfevals``: its stop fires only once the count is past it (``countevals - 1 >=
        maxfevals``), after the generation that crosses the budget was asked and scored (budget 200,
        popsize 6: 204 calls), and ``es.stop()`` also reports criteria other than the budget (no
        effect of an axis, conditioning), which would end a search with calls left to spend."""
        return self.calls + self.config.popsize > self.config.budget

    def ask(self) -> np.ndarray:
        """Next population, ``(popsize, r)`` float32."""
        if self._asked is not None:
            raise RuntimeError("ask() called twice without tell(); discard_pending() first if it was never scored")
        self._asked = self.es.ask()  # pycma's own arrays, which its archive of sent solutions also holds
        return np.array(self._asked, dtype=np.float32)

    def tell(self, fitness: np.ndarray) -> None:
        """Fitness ``(popsize,)`` of the last population (lower is better)."""
        if self._asked is None:
            raise RuntimeError("tell() without ask()")
        fitness = np.asarray(fitness, dtype=float)
        if fitness.shape != (len(self._asked),) or not np.isfinite(fitness).all():
            raise ValueError(f"fitness must be {len(self._asked)} finite values, got {fitness}")
        self.es.tell(self._asked, list(fitness))
        self._asked = None

    def sample_like(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, r)`` float32 draws from the current search distribution N(mean, sigma^2 C), within the
        bounds, that are NOT part of the population (decoy candidates: their scores are never told)."""
        normal = rng.standard_normal((n, self.es.N))
        steps = np.stack([self.es.sm.transform(x) for x in normal]) * self.es.sigma_vec.scaling
        x = self.es.mean + self.es.sigma * steps
        if self.config.bound:
            x = np.clip(x, -self.config.bound, self.config.bound)
        return x.astype(np.float32)

    @property
    def pending(self) -> bool:
        """True between ask() and tell(): a population is out for scoring."""
        return self._asked is not None

    def discard_pending(self) -> None:
        """Forget a population that was asked but never told (its round was cut short by a failure)."""
        self._asked = None

    @property
    def result(self) -> np.ndarray:
        """The customised vector ``(r,)`` float32: the distribution mean or the best candidate."""
        return self.mean if self.config.final == "mean" else self.best

    @property
    def mean(self) -> np.ndarray:
        """The search distribution's mean ``(r,)`` float32 (never scored itself), mapped into the bounds
        as the candidates are (pycma's ``xfavorite``; ``es.mean`` itself may lie outside them)."""
        return np.asarray(self.es.result.xfavorite, dtype=np.float32)

    @property
    def best(self) -> np.ndarray:
        """The candidate with the lowest fitness told so far ``(r,)`` float32 (the mean before any tell)."""
        return self.mean if self.es.result.xbest is None else np.asarray(self.es.result.xbest, dtype=np.float32)

    @property
    def final_calls(self) -> int:
        """Calls spent when the search is done: the whole generations that fit in the budget."""
        return self.config.budget // self.config.popsize * self.config.popsize

    @property
    def best_fitness(self) -> float:
        return float(self.es.result.fbest) if self.es.result.xbest is not None else float("inf")

    def to_bytes(self) -> bytes:
        """Whole search state; full r=500 ~4 MB, diagonal ~0.1 MB. The pickled pycma optimiser (its random
        generator and call count included, ``TRANSIENT`` left out) beside what pycma does not hold: the
        settings (budget, final), a population out for scoring, whose scores may arrive after a Flower
        hop, and a subclass's own fields (``SubspaceSearch``'s origin and basis). One pickle, so the
        population's arrays are stored once although pycma's archive holds them too."""
        transient = {name: self.es.__dict__.pop(name) for name in TRANSIENT if name in self.es.__dict__}
        try:
            return pickle.dumps((type(self), vars(self)))
        finally:
            self.es.__dict__.update(transient)

    @classmethod
    def from_bytes(cls, blob: bytes) -> CMASearch:
        """Inverse of ``to_bytes`` (of this class or a subclass); only for state this user wrote itself (pickle)."""
        kind, state = pickle.loads(blob)
        if not (isinstance(kind, type) and issubclass(kind, cls)):
            raise TypeError(f"the saved state is a {kind!r}, not a {cls.__name__}")
        search = kind.__new__(kind)
        search.__dict__.update(state)
        for archive in search.es.__dict__.values():
            if isinstance(archive, SolutionDict):
                _rehash(archive)
        return search


class SubspaceSearch(CMASearch):
    """CMA-ES over ``u: (K,)`` in a subspace around ``origin``: every point it shows is ``z = origin + u @ basis``.

    A search in all r = 500 coordinates drifts far from where SDT trained the generator; one along the
    directions the SDT task vectors span stays where moving z moves the prompt in a trained way (the idea
    of BSL, "Black-box Prompt Tuning with Subspace Learning"). ``basis: (K, r)`` (``task_subspace``) is scaled
    so that u of unit size moves z as far as a typical task vector lies from z0; sigma0 and the bound apply
    to u. The same ask/tell and budget as ``CMASearch``; ``ask``, ``mean``, ``best`` and ``result`` are in z.
    """

    def __init__(self, origin: np.ndarray, basis: np.ndarray, config: SearchConfig, seed: int):
        super().__init__(np.zeros(len(basis)), config, seed)
        self.origin = np.asarray(origin, dtype=np.float32)
        self.basis = np.asarray(basis, dtype=np.float32)

    def lift(self, u: np.ndarray) -> np.ndarray:
        """``u: (..., K)`` -> ``z: (..., r)`` float32."""
        return (self.origin + np.asarray(u, dtype=np.float32) @ self.basis).astype(np.float32)

    def ask(self) -> np.ndarray:
        """Next population in z, ``(popsize, r)`` float32."""
        return self.lift(super().ask())

    def sample_like(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, r)`` decoys from the search distribution, lifted into z as the population is."""
        return self.lift(super().sample_like(n, rng))

    @property
    def mean(self) -> np.ndarray:
        return self.lift(super().mean)

    @property
    def best(self) -> np.ndarray:
        return self.lift(super().best)


def task_subspace(offsets: np.ndarray, k: int) -> np.ndarray:
    """``(K, r)`` basis of the first K principal directions of SDT task offsets ``(n_tasks, r)`` (each
    task's vector minus z0; not centred: z0 is the origin users start from), each scaled by the RMS
    length of the offsets along it. K is at most the offsets' rank; asking for more is an error."""
    offsets = np.asarray(offsets, dtype=np.float64)
    _, singular, directions = np.linalg.svd(offsets, full_matrices=False)
    rank = int((singular > 1e-6 * singular.max(initial=0.0)).sum())
    if not 1 <= k <= rank:
        raise ValueError(
            f"a subspace of {k} dimensions needs {k} independent SDT task vectors; this generator has {rank}"
        )
    return (directions[:k] * (singular[:k, None] / np.sqrt(len(offsets)))).astype(np.float32)


def _rehash(archive: SolutionDict) -> None:
    """Key a pycma archive by this process's hashes. pycma finds a told solution by ``hash(x.tobytes())``,
    which Python salts per process, so a state unpickled elsewhere (a Ray actor, a deployment's
    per-message process) misses every entry: each tell then maps every candidate back into genotype
    space coordinate by coordinate (about 8 ms at r = 500, 4x the rest of the tell), and a candidate
    repaired into the bounds gets a genotype other than the one it was drawn from."""
    new = {old: archive.key(x) for old, x in archive._unhashed_keys.items()}
    archive.data = {new.get(k, k): v for k, v in archive.data.items()}
    archive.data_with_same_key = {new.get(k, k): v for k, v in archive.data_with_same_key.items()}
    archive._unhashed_keys = {new[k]: x for k, x in archive._unhashed_keys.items()}


def fitness(
    scores: np.ndarray, labels: np.ndarray, loss: str = "ce", margin: float = 1.0, clip: float = 0.0
) -> np.ndarray:
    """Loss of each candidate on the batch (lower is better).

    Args:
        scores: ``(k, n, C)`` label-word logits. labels: ``(n,)`` private labels in [0, C).
        loss: "ce" = mean cross-entropy of softmax over the C words; "hinge" = mean multi-class
        margin loss max(0, margin - (s_y - max_{c != y} s_c)).
        clip: with "ce" and > 0, each text's cross-entropy is capped at ``clip`` nats before the mean,
        so one label moves a candidate's fitness by at most clip / n (the label mechanism's sensitivity).
    Returns:
        ``(k,)`` float64.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    true = np.take_along_axis(scores, labels[None, :, None], axis=2)[..., 0]  # (k, n)
    if loss == "ce":
        top = scores.max(axis=2, keepdims=True)
        per_text = top[..., 0] + np.log(np.exp(scores - top).sum(axis=2)) - true
        return (np.minimum(per_text, clip) if clip else per_text).mean(axis=1)
    if loss == "hinge":
        others = scores.copy()
        np.put_along_axis(others, labels[None, :, None].repeat(len(scores), 0), -np.inf, axis=2)
        return np.maximum(0.0, margin - (true - others.max(axis=2))).mean(axis=1)
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


def dev_accuracy_and_loss(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and cross-entropy ``(k,)`` of k points from their dev scores ``(k, n, C)`` and labels ``(n,)``."""
    return (np.asarray(scores).argmax(2) == np.asarray(labels)).mean(1), fitness(scores, labels, "ce")


def best_on_dev(accuracy: np.ndarray, loss: np.ndarray) -> int:
    """Index of the point a user keeps: the highest dev accuracy, then the lowest dev loss; among equals
    the first, so a point listed earlier (the z kept so far) is only replaced by a strictly better one."""
    return max(range(len(accuracy)), key=lambda i: (accuracy[i], -loss[i], -i))
