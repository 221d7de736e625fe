"""CBP-Tuning on the federation: SDT (or a loaded generator) at start, per-user z, a per-domain prior.

The provider trains (or loads) the prompt generator for its domain once, serves it through the
BlackBox, and keeps every user's customised vector. Users that join without a state start from the
domain prior: the mean of the users' customised vectors so far (z0 from SDT before any user
finished), or their coordinate-wise median / trimmed mean so that a few poisoned vectors cannot drag
it (``prior`` run-config key). Whether the prior helps later users is a measurement, not an assumption.
With ``subspace = K`` the provider also sends the K leading directions of its SDT task vectors, and a
new user searches along them only (``search.SubspaceSearch``): the region the generator was trained in.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean

from cbp_fed import protocol as wire
from cbp_fed.backbone import FrozenLM
from cbp_fed.config import RunConfig
from cbp_fed.domain_training import SDTConfig, load_generator, save_generator, train_generator
from cbp_fed.prompts import PromptGenerator
from cbp_fed.search import task_subspace
from cbp_fed.service import BlackBox

from .multistep import MultiStepStrategy

log = logging.getLogger(__name__)


def domain_prior(vectors: np.ndarray, how: str = "mean", trim: float = 0.2) -> np.ndarray:
    """Aggregate users' vectors ``(u, r)`` into one ``(r,)``: "mean", coordinate-wise "median" (numpy's,
    as Flower's FedMedian), or "trimmed-mean" (per coordinate, drop the ``floor(trim * u)`` lowest and
    highest values and average the rest: Flower's FedTrimmedAvg ``trim_mean``, scipy's algorithm)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if how == "mean":
        return vectors.mean(axis=0).astype(np.float32)
    if how == "median":
        return np.median(vectors, axis=0).astype(np.float32)
    if how == "trimmed-mean":
        return trim_mean(vectors, trim).astype(np.float32)
    raise ValueError(f"prior must be mean, median or trimmed-mean, got {how!r}")


def provider_generator(config: RunConfig, lm: FrozenLM, run_path: Path) -> tuple[PromptGenerator, dict]:
    """The provider's generator: ``config.generator`` (or the run folder's own, when resuming), else
    SDT for ``config.domain``, saved in the run folder."""
    own = run_path / "generator"
    if config.generator or (config.resume_from and (own / "generator.json").exists()):
        return load_generator(config.generator or own, lm)
    sdt = SDTConfig(
        domain=config.domain,
        r=config.r,
        m=config.m,
        t=config.t,
        steps=config.sdt_steps,
        max_tokens=config.max_tokens,
        seed=config.seed,
        pool_size=max(200, 8 * config.sdt_steps),
        eval_size=min(200, max(32, 2 * config.sdt_steps)),
    )
    gen, meta = train_generator(lm, sdt)
    save_generator(gen, meta, own)
    log.info("SDT %s: held-out pool accuracy %s", config.domain, meta["eval_accuracy"])
    return gen, meta


class CBPStrategy(MultiStepStrategy):
    """Multi-step rounds over the generator's BlackBox; the start vector is the domain prior.

    Args:
        blackbox, z0: the generator's BlackBox and its SDT start vector ``(r,)`` (the prior until a
            user finished).
        domain: the generator's domain.
        prior: how the users' z become the prior: "mean", "median" or "trimmed-mean" (``domain_prior``).
        prior_trim: the fraction cut from each end by "trimmed-mean", in [0, 0.5).
        basis: ``(K, r)`` directions a new user's search moves z along (``task_subspace``), sent in
            train.begin; None: users search all r coordinates.
        **round_options: ``MultiStepStrategy``'s keyword arguments.
    """

    def __init__(
        self,
        blackbox: BlackBox,
        z0: np.ndarray,
        *,
        domain: str,
        prior: str = "mean",
        prior_trim: float = 0.2,
        basis: np.ndarray | None = None,
        **round_options,
    ):
        super().__init__(blackbox, z0, **round_options)
        self.domain, self.how, self.trim = domain, prior, prior_trim
        self.prior = np.asarray(z0, dtype=np.float32)
        self.basis = None if basis is None else np.asarray(basis, dtype=np.float32)

    @classmethod
    def options(cls, config: RunConfig) -> dict:
        return {**super().options(config), "prior": config.prior, "prior_trim": config.prior_trim}

    @classmethod
    def build(cls, config: RunConfig, lm: FrozenLM, run_path: Path, on_round=None) -> CBPStrategy:
        gen, meta = provider_generator(config, lm, run_path)
        box = BlackBox(lm, gen, max_tokens=config.max_tokens)
        z0 = gen.z0.detach().cpu().numpy()
        basis = task_subspace(gen.task_offsets.detach().cpu().numpy(), config.subspace) if config.subspace else None
        return cls.from_config(
            config, box, z0, domain=meta["domain"], basis=basis, on_round=on_round, run_key=run_path.name
        )

    def start_vector(self) -> np.ndarray:
        return self.prior

    def begin_content(self, server_round: int, z_start: np.ndarray):
        return wire.start(server_round, z_start, self.run_key, basis=self.basis)

    def aggregate(self, server_round: int) -> None:
        """Domain prior over every user's latest customised z (in partition order: deterministic)."""
        if self.user_z:
            vectors = np.stack([self.user_z[p] for p in sorted(self.user_z)])
            self.prior = domain_prior(vectors, self.how, self.trim)

    def checkpoint(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays, state = super().checkpoint()
        return {**arrays, "prior": self.prior}, state

    def restore(self, arrays: dict[str, np.ndarray], state: dict) -> None:
        super().restore(arrays, state)
        self.prior = np.asarray(arrays["prior"], dtype=np.float32)
