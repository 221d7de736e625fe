"""Scripts that measure and demonstrate cbp-fed: ``python -m simulations.<name>`` from a clone.

They use the repository's ``.state/cache`` (where `make setup` converts the backbones and downloads the
data wheels) unless ``CBP_FED_CACHE`` is set, so a script run without `make` finds what `make setup` made.
"""

import os
from pathlib import Path

os.environ.setdefault("CBP_FED_CACHE", str(Path(__file__).resolve().parent.parent / ".state" / "cache"))
