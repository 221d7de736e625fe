"""Where cbp-fed keeps what it prepares once: converted backbones and downloaded data wheels.

``$CBP_FED_CACHE``, or ``~/.cache/cbp-fed`` when it is unset (the Makefile and the scripts under
simulations/ set it to the repository's ``.state/cache``). Torch-free, so that reading a task does not
import torch.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$CBP_FED_CACHE`` or ``~/.cache/cbp-fed``."""
    return Path(os.environ.get("CBP_FED_CACHE", Path.home() / ".cache" / "cbp-fed"))
