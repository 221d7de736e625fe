"""FedBPT on the federation (Sun et al., ICML 2024; reference code NVIDIA NVFlare research/fed-bpt):
one global CMA-ES over z shared by all users, BBT's projected prompt, no SDT.

Per round (the shared multi-step loop of ``multistep.py``, so calls and bytes compare one to one
with CBP and BBT at the same config):

    train.begin   down: the global mean (r,) and the global sigma (one float)
    user          a FRESH local CMA-ES at (global mean, global sigma), seeded by (seed, partition id,
                  round); the round's K generations of popsize candidates through the usual hops
    train.finish  up: its local mean z (r,), ``local-loss`` and ``local-sigma`` (see the client's
                  ``_local_search``); the user keeps nothing, not even a z of its own
    provider      the users' means, sorted by partition id, are one population of the global CMA-ES:
                  sigma set to the calibrated spread ``sqrt(mean_k local-sigma_k^2)``, ask (pycma
                  accepts one tell per ask; the asked samples are never used), tell(means, local
                  losses); the next broadcast sigma is the previous one times the factor pycma's
                  step-size update applied (the reference's recalibration)
    evaluate      every user scores the global mean on its test texts: FedBPT's product is one prompt

The global CMA-ES follows the reference: x0 = 0, sigma0 from the config, popsize m = the users
sampled in the first round, every one of them a parent (``CMA_mu = m``: the mean is a rank-weighted
average of all the users' means). Where it differs, and why:

- Only the mean (r float32) and sigma (one float) go down; the reference pickles the whole
  ``CMAEvolutionStrategy`` to every user every round (about 4.1 MB at r = 500 with full covariance,
  growing with pycma's archives): at r = 500 that is ~2 KB instead of ~4 MB per user per round, a
  factor of about 2000. The users' seeds come from the run config and the round. Consequently a
  user's local search starts from an identity covariance; the global covariance lives on the
  provider and shapes only the aggregation.
- pycma defaults to TPA step-size adaptation for r >= 300, which reads the first two told values
  as its own mirrored pair along the last mean shift: meaningless for users' means. The global
  CMA-ES uses CSA (cumulative step-size adaptation), which needs only the told points.
- A short round (fewer than m replies, or fewer than 3: pycma refuses a tell with fewer solutions
  than its mu = m, and any population under 3) cannot be told: in the reference pycma would raise.
  Here it moves only the mean: the rank-weighted average of the means that came back with the
  weights pycma would use for that many parents (``RecombinationWeights(2 n)``); covariance,
  evolution paths and sigma stay as they were. No replies: nothing changes. More than m replies
  (nodes that joined later) are told as they are: pycma keeps the best m as parents and gives the
  others negative weights in its covariance update.
- The users report an estimate of the loss at their mean (no extra model call; the reference
  spends one) and their seeds differ (the reference seeds every user alike).
- The reference's floor of 0.5 on the broadcast sigma is undone by its next line (a comparison with
  the value it has just stored), so it has no effect there, and none is applied here.

``checkpoint``/``restore`` carry the global CMA-ES as its pickled bytes (base64 in the JSON state),
so ``resume-from`` continues with exactly the same global optimiser.
"""

from __future__ import annotations

import base64
import pickle
from collections.abc import Iterable

import cma
import numpy as np
from cma.recombination_weights import RecombinationWeights
from cma.sigma_adaptation import CMAAdaptSigmaCSA
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from cbp_fed import protocol as wire
from cbp_fed.config import RunConfig
from cbp_fed.search import SeededNormal
from cbp_fed.service import BlackBox

from .bbt import BBTStrategy


class FedBPTStrategy(BBTStrategy):
    """BBT's BlackBox and round loop with one global CMA-ES aggregated from the users' means.

    Args:
        blackbox: BBT's BlackBox.
        z_start: ``(r,)`` the global CMA-ES's x0 (zeros from ``build``).
        sigma0: the global CMA-ES's initial step size (the first broadcast sigma).
        diagonal: a diagonal global covariance (pycma's ``CMA_diagonal``).
        seed: seeds the node sampling and the global CMA-ES's normal draws.
        **round_options: ``MultiStepStrategy``'s other keyword arguments, except ``select_on_dev``:
            a FedBPT user ships its local mean, not a z of its own to choose.
    """

    def __init__(
        self, blackbox: BlackBox, z_start: np.ndarray, *, sigma0: float, diagonal: bool, seed: int = 0, **round_options
    ):
        super().__init__(blackbox, z_start, select_on_dev=False, seed=seed, **round_options)
        self.sigma0, self.diagonal, self.seed = sigma0, diagonal, seed
        # created in the first round's configure_train (popsize = the users sampled then); its sigma
        # is the broadcast sigma between rounds
        self.es: cma.CMAEvolutionStrategy | None = None

    @classmethod
    def options(cls, config: RunConfig) -> dict:
        options = {k: v for k, v in super().options(config).items() if k != "select_on_dev"}
        return {**options, "sigma0": config.sigma0, "diagonal": config.diagonal}

    def new_global(self, popsize: int) -> cma.CMAEvolutionStrategy:
        """The global CMA-ES: r-dimensional at ``z_start`` with sigma0, every sampled user a parent."""
        options = {
            "popsize": popsize,
            "CMA_mu": popsize,
            "CMA_diagonal": self.diagonal,
            "CMA_mirrors": 0,  # mirrors only shape ask(), whose samples are never used here
            "AdaptSigma": CMAAdaptSigmaCSA,
            "randn": SeededNormal(self.seed),
            "seed": float("nan"),  # pycma would seed numpy's global RNG; ours is `randn`
            "verbose": -9,
        }
        return cma.CMAEvolutionStrategy(self.z_start.astype(float), self.sigma0, options)

    def start_vector(self) -> np.ndarray:
        """The global mean ``(r,)`` (``z_start`` until the global CMA-ES exists)."""
        return self.z_start if self.es is None else np.asarray(self.es.mean, dtype=np.float32)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The sampled users' train.begin with the global mean ``arrays["z-start"]`` and sigma."""
        sampled = list(super().configure_train(server_round, arrays, config, grid))
        if self.es is None:
            self.es = self.new_global(len(sampled))
        start = wire.start(server_round, arrays["z-start"].numpy(), self.run_key, sigma=self.es.sigma)
        return [self._message(start, m.metadata.dst_node_id, wire.BEGIN, server_round) for m in sampled]

    def _check_result(self, reply: Message) -> None:
        super()._check_result(reply)
        wire.read_local_search(reply.content)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord, MetricRecord]:
        """Update the global CMA-ES from the finished users (in partition order: deterministic), then
        keep their z and weight their metrics as every strategy does; adds ``global-sigma`` (the
        next broadcast sigma) and ``global-told`` (means told to pycma; 0 for a mean-only round)."""
        replies = sorted(replies, key=lambda r: self.partition_of[r.metadata.src_node_id])
        means = np.array([wire.read_result(r.content, self.z_start.size)[0] for r in replies], dtype=float)
        local = [wire.read_local_search(r.content) for r in replies]
        told = self.update(
            means.reshape(len(replies), self.z_start.size),
            np.array([m["local-loss"] for m in local]),
            np.array([m["local-sigma"] for m in local]),
        )
        start, metrics = super().aggregate_train(server_round, replies)
        metrics["global-sigma"] = float(self.es.sigma)
        metrics["global-told"] = told
        return start, metrics

    def update(self, means: np.ndarray, losses: np.ndarray, sigmas: np.ndarray) -> int:
        """The server step of FedBPT on ``n`` users' means ``(n, r)``, local losses ``(n,)`` and local
        sigmas ``(n,)``; returns how many means pycma was told (0: a mean-only or empty round)."""
        es, n = self.es, len(means)
        if n == 0:
            return 0
        if n < max(es.popsize, 3):
            order = np.argsort(losses, kind="stable")
            es.mean = np.asarray(RecombinationWeights(2 * n).positive_weights) @ means[order]
            return 0
        broadcast, calibrated = es.sigma, float(np.sqrt(np.mean(sigmas**2)))
        es.sigma = calibrated
        es.ask()
        es.tell(list(means), list(losses))
        es.sigma = broadcast * es.sigma / calibrated
        return n

    def checkpoint(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays, state = super().checkpoint()
        if self.es is not None:
            state["global_es"] = base64.b64encode(pickle.dumps(self.es)).decode("ascii")
        return arrays, state

    def restore(self, arrays: dict[str, np.ndarray], state: dict) -> None:
        super().restore(arrays, state)
        if "global_es" in state:  # the provider's own checkpoint
            self.es = pickle.loads(base64.b64decode(state["global_es"]))
