"""CBP-Tuning on the federation: SDT (or a loaded generator) at start, per-user z, a per-domain prior.

The provider trains (or loads) the prompt generator for its domain once, serves it through the
BlackBox, and keeps every user's customised vector. Users that join without a state start from the
domain prior: the mean of the users' customised vectors so far (z0 from SDT before any user
finished). Whether the prior helps later users is a measurement, not an assumption.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cbp_fed.backbone import FrozenLM
from cbp_fed.config import RunConfig
from cbp_fed.domain_training import SDTConfig, load_generator, save_generator, train_generator
from cbp_fed.service import BlackBox

from .multistep import MultiStepStrategy

log = logging.getLogger(__name__)


class CBPStrategy(MultiStepStrategy):
    """Multi-step rounds over the generator's BlackBox; the start vector is the domain prior."""

    def __init__(self, config: RunConfig, blackbox: BlackBox, z0: np.ndarray, domain: str, on_round=None):
        super().__init__(config, blackbox, z0, on_round)
        self.domain = domain
        self.prior = np.asarray(z0, dtype=np.float32)

    @classmethod
    def build(cls, config: RunConfig, lm: FrozenLM, run_path: Path, on_round=None) -> CBPStrategy:
        """Load ``config.generator`` or run SDT for ``config.domain`` and save it in the run folder."""
        if config.generator:
            gen, meta = load_generator(config.generator, lm)
        else:
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
            save_generator(gen, meta, run_path / "generator")
            log.info("SDT %s: held-out pool accuracy %s", config.domain, meta["eval_accuracy"])
        box = BlackBox(lm, gen, max_tokens=config.max_tokens)
        return cls(config, box, gen.z0.detach().cpu().numpy(), meta["domain"], on_round)

    def start_vector(self) -> np.ndarray:
        return self.prior

    def aggregate(self, server_round: int) -> None:
        """Domain prior = mean of every user's latest customised z (in partition order: deterministic)."""
        if self.user_z:
            self.prior = np.mean([self.user_z[p] for p in sorted(self.user_z)], axis=0).astype(np.float32)
