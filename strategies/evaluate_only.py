"""Zero-shot and SDT-only on the federation: no user-side search, one evaluation through the same apps.

The baselines without stage 2 still go through the real protocol: each user sends its test texts
(evaluate.query, with no z of its own it takes the start vector), the BlackBox scores every user's
texts in one batched call, and each user replies with its accuracy (evaluate.score). So their
accuracy, calls and bytes come from the same code and meters as the searching methods.

- zero-shot: no prompt at all (``NoPrompt``).
- sdt-only: the provider's generator with the domain's SDT start vector z0 for every user.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from cbp_fed.backbone import FrozenLM
from cbp_fed.config import RunConfig
from cbp_fed.prompts import NoPrompt
from cbp_fed.service import BlackBox

from .cbp import provider_generator
from .multistep import MultiStepStrategy, RoundLog


class EvaluateOnlyStrategy(MultiStepStrategy):
    """One round: evaluate every connected user with the start vector; nothing is trained."""

    @classmethod
    def zero_shot(cls, config: RunConfig, lm: FrozenLM, run_path: Path, on_round=None) -> EvaluateOnlyStrategy:
        box = BlackBox(lm, NoPrompt(lm.d, config.r), max_tokens=config.max_tokens)
        z = np.zeros(config.r, np.float32)
        return cls.from_config(config, box, z, on_round=on_round, run_key=run_path.name)

    @classmethod
    def sdt_only(cls, config: RunConfig, lm: FrozenLM, run_path: Path, on_round=None) -> EvaluateOnlyStrategy:
        gen, _ = provider_generator(config, lm, run_path)
        box = BlackBox(lm, gen, max_tokens=config.max_tokens)
        z0 = gen.z0.detach().cpu().numpy()
        return cls.from_config(config, box, z0, on_round=on_round, run_key=run_path.name)

    def _run_rounds(self, grid: Grid, result: Result, num_rounds: int, timeout: float) -> None:
        """Evaluate once (round 1, whatever ``num_rounds``) and record it like a training round without
        training (``start`` is ``MultiStepStrategy``'s: Flower's unused arguments are refused there)."""
        if self.rounds_done:
            return
        started, round_log = time.time(), RoundLog(1)
        if self.transcript:
            self.transcript.begin_round(1, self.start_vector())
        evaluation = self._evaluate(grid, 1, result.arrays, timeout, round_log)
        self._end_transcript_round(grid, 1)
        result.evaluate_metrics_clientapp[1] = evaluation
        meter = self.blackbox.meter
        self.rounds_done = 1
        self.on_round(
            {
                "round": 1,
                "users_sampled": 0,
                "users_ok": 0,
                "users_failed": 0,
                "users_finished": [],
                "failures": round_log.failures,
                "test_accuracy": evaluation.get("accuracy"),
                "test_accuracy_std": evaluation.get("accuracy-std"),
                "users_evaluated": evaluation["users"],
                "test_examples": evaluation.get("examples", 0),
                "calls": meter.calls,
                "tokens": meter.tokens,
                "forward_seconds": round(meter.seconds, 3),
                "seconds": round(time.time() - started, 3),
            }
        )
