"""Flower strategies (message-based): the multi-step black-box round and the methods built on it.

``STRATEGIES`` maps a run config's ``method`` to a builder ``(config, lm, run_path) -> strategy``.
"""

from .bbt import BBTStrategy
from .cbp import CBPStrategy
from .evaluate_only import EvaluateOnlyStrategy
from .fedbpt import FedBPTStrategy
from .multistep import MultiStepStrategy

STRATEGIES = {
    "cbp": CBPStrategy.build,
    "bbt": BBTStrategy.build,
    "fedbpt": FedBPTStrategy.build,
    "zero-shot": EvaluateOnlyStrategy.zero_shot,
    "sdt-only": EvaluateOnlyStrategy.sdt_only,
}

__all__ = ["STRATEGIES", "BBTStrategy", "CBPStrategy", "EvaluateOnlyStrategy", "FedBPTStrategy", "MultiStepStrategy"]
