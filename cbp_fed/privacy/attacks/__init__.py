"""Leakage attacks, each reading only a run's transcript plus public knowledge (the run's config, the
backbone, the provider's public rows), scored against the ground truth by the harness.

``ATTACKS`` maps a name to ``run(run_dir, **options) -> metrics``; ``run_attack`` writes the metrics to
``<run>/privacy/<name>.json``. ``cbp-fed attack --run DIR --attack NAME`` is the command line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def _label_selection(run_dir: Path, **_) -> dict:
    from ..transcript import Transcript
    from .common import ground_truth, run_config_of
    from .label_selection import infer_labels, score_predictions

    transcript = Transcript(run_dir)
    config = run_config_of(transcript)
    exact_final, restarts = not config.dp_clip, config.method == "fedbpt"
    users = transcript.users()
    predictions = {p: infer_labels(transcript, p, exact_final, restarts) for p in users}
    truth = {p: t.train for p, t in ground_truth(config, users).items()}
    return score_predictions(predictions, truth)


def _membership(
    run_dir: Path, references: int = 2, non_members: int = 50, seed: int = 0, max_users: int = 0, shadow_cache=None, **_
) -> dict:
    from .membership import run

    return run(run_dir, references, non_members, seed, max_users=max_users, shadow_cache=shadow_cache)


def _attribute(
    run_dir: Path, shadows: int = 24, seed: int = 0, shadow_cache=None, defended_shadows: bool = True, **_
) -> dict:
    from .attribute import run

    return run(run_dir, shadows=shadows, seed=seed, shadow_cache=shadow_cache, defended=defended_shadows)


def _exposure(run_dir: Path, **_) -> dict:
    from .exposure import run

    return run(run_dir)


ATTACKS = {
    "label-selection": _label_selection,
    "membership": _membership,
    "attribute": _attribute,
    "exposure": _exposure,
}


def run_attack(run_dir: str | Path, name: str, **options) -> dict:
    """Run one attack (or "all") on a run folder; writes ``<run>/privacy/<name>.json`` and returns it."""
    run_dir = Path(run_dir)
    names = list(ATTACKS) if name == "all" else [name]
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack {unknown[0]!r}; choose from {', '.join(ATTACKS)} or all")
    out = run_dir / "privacy"
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for n in names:
        started = time.time()
        result = {"attack": n, **ATTACKS[n](run_dir, **options), "seconds": round(time.time() - started, 2)}
        (out / f"{n}.json").write_text(json.dumps(result, indent=2) + "\n")
        results[n] = result
    return results if name == "all" else results[name]
