"""The provider's checkpoint: after every round, what a killed run needs to continue (``resume-from``).

One file, ``checkpoint.safetensors`` in the run folder, replaced atomically after each round's line of
rounds.jsonl is written: the strategy's arrays (every user's customised z, the domain prior) as
tensors, and its small state (rounds done, the sampling RNG, the BlackBox meter) as JSON in the
header. The users keep their own optimiser state (``user-state-dir``); the generator is already in
the run folder. Nothing here is private to a user beyond what the provider holds anyway.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

VERSION = 1
FILE = "checkpoint.safetensors"
# Keys a resumed run may change: how long it runs and how it is operated, not what it computes.
RESUMABLE_CHANGES = {
    *("resume-from", "run-name", "results-dir"),
    *("num-rounds", "round-timeout", "inject-faults", "min-users"),
}


def save_checkpoint(folder: str | Path, arrays: dict[str, np.ndarray], state: dict) -> Path:
    """Write ``folder/checkpoint.safetensors`` atomically (a kill mid-write keeps the previous one)."""
    path = Path(folder) / FILE
    tmp = path.with_name(FILE + ".tmp")
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}
    save_file(tensors, tmp, metadata={"version": str(VERSION), "state": json.dumps(state)})
    os.replace(tmp, path)
    return path


def load_checkpoint(folder: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays and state written by ``save_checkpoint``; a clear error when there is none to resume."""
    path = Path(folder) / FILE
    if not path.exists():
        raise FileNotFoundError(f"resume-from {folder}: no {FILE} there (a run writes it after its first round)")
    with safe_open(str(path), framework="np") as file:
        header = file.metadata() or {}
        if header.get("version") != str(VERSION):
            raise ValueError(f"{path} has checkpoint version {header.get('version')}; this code reads {VERSION}")
        arrays = {key: file.get_tensor(key) for key in file.keys()}
    return arrays, json.loads(header["state"])


def check_resumable(saved: dict, config: dict) -> None:
    """Refuse to resume with settings that change what the run computes (listing the keys)."""
    keys = (set(saved) | set(config)) - RESUMABLE_CHANGES
    changed = sorted(k for k in keys if saved.get(k) != config.get(k))
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in changed)
        raise ValueError(f"cannot resume: the run config differs from the interrupted run's ({detail})")
