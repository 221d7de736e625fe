"""RunConfig: the one validated configuration of a federated run, built from Flower's run_config.

Keys are kebab-case in ``[tool.flwr.app.config]``, presets (``simulations/*.toml``) and
``--run-config``; fields are the snake_case twins. Unknown keys and bad values fail at start-up
with a message that names the key. Imports nothing heavy: the ClientApp builds it too.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from .faults import parse_faults

METHODS = ("cbp", "bbt", "fedbpt", "zero-shot", "sdt-only")
PARTITIONS = ("iid", "dirichlet", "task-per-user")
LOSSES = ("ce", "hinge")
PRIORS = ("mean", "median", "trimmed-mean")


@dataclass(frozen=True)
class RunConfig:
    """Everything a federated run needs; see the README's table of keys for what each one does."""

    method: str = "cbp"
    backbone: str = "smollm2-135m"
    dtype: str = "auto"
    device: str = "auto"
    generator: str = ""
    domain: str = "commonsense"
    sdt_steps: int = 30
    r: int = 500
    m: int = 256
    t: int = 10
    tasks: str = "arc-easy"
    partition: str = "iid"
    dirichlet_alpha: float = 0.5
    num_rounds: int = 3
    users_per_round: int = 0
    min_users: int = 2
    steps_per_round: int = 3
    popsize: int = 6
    sigma0: float = 1.0
    subspace: int = 0
    diagonal: bool = False
    loss: str = "ce"
    batch_size: int = 8
    shots_per_class: int = 4
    dev_shots_per_class: int = 0
    class_balanced: bool = False
    select_on_dev: bool = True
    protect: bool = True
    protect_alpha: float = 0.05
    n_test: int = 48
    max_tokens: int = 128
    eval_every: int = 1
    eval_start: bool = True
    prior: str = "mean"
    prior_trim: float = 0.2
    round_timeout: float = 600.0
    inject_faults: str = ""
    record_transcript: bool = False
    dp_clip: float = 0.0
    dp_noise: float = 0.0
    dp_delta: float = 1e-5
    decoy_texts: float = 0.0
    decoy_candidates: float = 0.0
    selection_noise: float = 0.0
    loss_clip: float = 0.0
    user_state_dir: str = ""
    resume_from: str = ""
    results_dir: str = "results"
    run_name: str = ""
    seed: int = 0

    def __post_init__(self):
        def need(ok: bool, key: str, what: str):
            if not ok:
                raise ValueError(f"run config '{key.replace('_', '-')}' = {getattr(self, key)!r}: {what}")

        need(self.method in METHODS, "method", f"choose from {METHODS}")
        need(self.partition in PARTITIONS, "partition", f"choose from {PARTITIONS}")
        need(self.loss in LOSSES, "loss", f"choose from {LOSSES}")
        need(self.prior in PRIORS, "prior", f"choose from {PRIORS}")
        need(0 <= self.prior_trim < 0.5, "prior_trim", "must be in [0, 0.5): the fraction cut from each end")
        need(self.dtype in ("auto", "fp32", "bf16"), "dtype", "choose from auto, fp32, bf16")
        need(bool(self.task_list), "tasks", "name at least one task (comma-separated)")
        for key in ("r", "m", "t", "num_rounds", "steps_per_round", "shots_per_class", "max_tokens", "eval_every"):
            need(getattr(self, key) >= 1, key, "must be >= 1")
        for key in ("users_per_round", "min_users", "batch_size", "n_test", "sdt_steps", "seed", "dev_shots_per_class"):
            need(getattr(self, key) >= 0, key, "must be >= 0")
        need(self.popsize >= 2, "popsize", "must be >= 2")
        need(0 < self.protect_alpha < 1, "protect_alpha", "must be in (0, 1): the level of the dev sign test")
        need(self.sigma0 > 0, "sigma0", "must be > 0")
        need(
            self.subspace >= 0 and (self.subspace == 0 or self.method == "cbp"),
            "subspace",
            "must be >= 0 (0: search all r coordinates) and is for method = 'cbp' only (it searches along the "
            "generator's SDT task vectors)",
        )
        need(self.dirichlet_alpha > 0, "dirichlet_alpha", "must be > 0")
        need(self.round_timeout > 0, "round_timeout", "must be > 0")
        need(self.dp_clip >= 0, "dp_clip", "must be >= 0: the L2 norm the uploaded z's shift is clipped to (0 = off)")
        need(
            self.dp_noise >= 0 and (self.dp_noise == 0 or self.dp_clip > 0),
            "dp_noise",
            "must be >= 0 (Gaussian noise std in units of dp-clip) and needs dp-clip > 0 to bound the sensitivity",
        )
        need(0 < self.dp_delta < 1, "dp_delta", "must be in (0, 1): the delta of the (epsilon, delta) guarantee")
        need(0 <= self.decoy_texts <= 1, "decoy_texts", "must be in [0, 1]: decoy texts per training text")
        need(0 <= self.decoy_candidates <= 4, "decoy_candidates", "must be in [0, 4]: decoy candidates per real one")
        need(self.selection_noise >= 0, "selection_noise", "must be >= 0: std of the noise added to fitness (nats)")
        need(
            self.loss_clip >= 0 and (self.loss_clip == 0 or self.loss == "ce"),
            "loss_clip",
            "must be >= 0: the cap (nats) on each text's cross-entropy (0 = none); it bounds a label's effect "
            "on the fitness, so it needs loss = 'ce'",
        )
        need(
            self.method != "fedbpt" or not (self.decoy_candidates or self.selection_noise),
            "method",
            "fedbpt does not take decoy-candidates or selection-noise (its users report their losses); set them to 0",
        )
        try:
            parse_faults(self.inject_faults)
        except ValueError as err:
            need(False, "inject_faults", str(err))

    @property
    def task_list(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.tasks.split(",") if t.strip())

    @property
    def decoy_candidate_count(self) -> int:
        """Decoy candidates a user mixes into each population (``decoy-candidates`` x popsize, rounded)."""
        return round(self.decoy_candidates * self.popsize)

    @property
    def wire_popsize(self) -> int:
        """Candidates per population on the wire: the popsize real ones plus the decoys."""
        return self.popsize + self.decoy_candidate_count

    @property
    def calls_per_round(self) -> int:
        """Model calls one user spends per round: K populations of popsize candidates."""
        return self.steps_per_round * self.popsize

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> RunConfig:
        """Build from Flower's ``context.run_config`` (kebab-case keys); unknown keys are an error."""
        types = {f.name: f.type for f in fields(cls)}
        values = {}
        for key, value in run_config.items():
            name = key.replace("-", "_")
            if name not in types:
                known = sorted(k.replace("_", "-") for k in types)
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(f"unknown run config key {key!r}; {hint}known keys: {', '.join(known)}")
            values[name] = _coerce(key, value, types[name])
        return cls(**values)

    def to_run_config(self) -> dict[str, Any]:
        """Kebab-case dict (for ``config.json`` and for building apps in tests)."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}


def _coerce(key: str, value: Any, annotation: str) -> Any:
    """Flower parses TOML, so ints may arrive for float keys; anything else of the wrong type is an error."""
    wanted = {"str": str, "int": int, "float": float, "bool": bool}[annotation]
    if wanted is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) != (wanted is bool) or not isinstance(value, wanted):
        raise ValueError(f"run config {key!r} must be {annotation}, got {type(value).__name__} {value!r}")
    return value
