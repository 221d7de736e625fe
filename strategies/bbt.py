"""BBT on the federation: each user searches its own z for a projected prompt; no generator, no SDT.

Same multi-step round as CBP (so bytes and calls compare one to one); the prompt is
``reshape(A' z) + p_init`` for every input, users start from z = 0 and nothing is shared across them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cbp_fed.backbone import FrozenLM
from cbp_fed.config import RunConfig
from cbp_fed.prompts import ProjectedPrompt
from cbp_fed.service import BlackBox

from .multistep import MultiStepStrategy


class BBTStrategy(MultiStepStrategy):
    """Multi-step rounds over BBT's projected prompt; users start from z = 0 (``MultiStepStrategy``'s arguments)."""

    @classmethod
    def build(cls, config: RunConfig, lm: FrozenLM, run_path: Path, on_round=None) -> BBTStrategy:
        source = ProjectedPrompt.for_backbone(lm, config.t, config.r, config.seed)
        box = BlackBox(lm, source, max_tokens=config.max_tokens)
        return cls.from_config(config, box, np.zeros(config.r, np.float32), on_round=on_round, run_key=run_path.name)
