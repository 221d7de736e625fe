"""Stage 2 in one process: one user customises z for one task through the BlackBox (no Flower).

The loop is the whole method seen from the user's side:

    split = the user's private k-shot train / dev / test rows
    repeat until the call budget is spent:
        Z = search.ask()                                   (k, r) candidates
        scores = blackbox.score(Z, train texts)            (k, n, C)  <- the provider's only answer
        search.tell(fitness(scores, private train labels)) (k,)
    keep z = search.result and report its test accuracy

``eval_split="dev"`` reports the dev split instead and never scores a test row: hyperparameter
search (``tune.py``) selects on dev and touches test once, at the end.

The same code runs the baselines: zero-shot (no prompt, no search), SDT-only (generator with z0,
no search) and BBT (a projected prompt without generator). The federated strategies reuse the
BlackBox, CMASearch and fitness pieces.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .backbone import FrozenLM
from .domain_training import load_generator
from .prompts import NoPrompt, ProjectedPrompt
from .search import CMASearch, SearchConfig, fitness
from .service import BlackBox, Query, accuracy, calibrated
from .tasks import load_task_spec, task_names, user_split

METHODS = ("zero-shot", "sdt-only", "bbt", "cbp")
SEARCHING = ("bbt", "cbp")
EVAL_SPLITS = ("test", "dev")


@dataclass(frozen=True)
class CustomizeConfig:
    """One user-side run. ``generator`` (an SDT checkpoint folder) is required by sdt-only and cbp.

    ``eval_split`` is the split the summary's accuracies (and budget-curve points) are measured on;
    with ``"dev"`` no test row is ever scored. ``n_dev`` is the dev size (None: as many as train, the
    BBT convention).
    """

    task: str
    method: str = "cbp"
    seed: int = 0
    budget: int = 200
    popsize: int = 10
    sigma0: float = 1.0
    diagonal: bool = False
    loss: str = "ce"
    backbone: str = "smollm2-135m"
    dtype: str = "auto"
    device: str = "auto"
    generator: str | None = None
    bbt_r: int = 500
    bbt_t: int = 10
    shots_per_class: int = 16
    n_test: int = 300
    max_tokens: int = 128
    checkpoints: tuple[int, ...] = ()
    eval_split: str = "test"
    n_dev: int | None = None

    def __post_init__(self):
        if self.eval_split not in EVAL_SPLITS:
            raise ValueError(f"unknown eval_split {self.eval_split!r}; choose from {EVAL_SPLITS}")
        if self.n_dev is not None and self.n_dev < 1:
            raise ValueError(f"n_dev must be >= 1 (or None: as many as train), got {self.n_dev}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {METHODS}")
        if self.task not in task_names() and not self.task.endswith(".json"):
            raise ValueError(f"unknown task {self.task!r}; known: {task_names()}, or a custom task spec (.json)")
        if self.method in ("sdt-only", "cbp") and not self.generator:
            raise ValueError(f"method {self.method!r} needs a generator checkpoint (run `cbp-fed sdt` first)")
        if self.method in SEARCHING:
            SearchConfig(self.popsize, self.sigma0, self.budget, self.diagonal, loss=self.loss)  # validates
        bad = [c for c in self.checkpoints if not 0 < c <= self.budget]
        if bad:
            raise ValueError(f"checkpoints {bad} are outside 1..budget ({self.budget})")


def build_source(config: CustomizeConfig, lm: FrozenLM) -> tuple[torch.nn.Module, np.ndarray, dict]:
    """The method's prompt source, its start vector ``(r,)`` and what to record about it."""
    if config.method == "zero-shot":
        return NoPrompt(lm.d), np.zeros((0,), np.float32), {}
    if config.method == "bbt":
        source = ProjectedPrompt.for_backbone(lm, config.bbt_t, config.bbt_r, config.seed)
        return source, np.zeros(config.bbt_r, np.float32), {"bbt_r": config.bbt_r, "bbt_t": config.bbt_t}
    gen, meta = load_generator(config.generator, lm)
    info = {
        "generator": config.generator,
        "generator_domain": meta["domain"],
        "generator_data": meta["data"]["fingerprint"],
    }
    return gen, gen.z0.detach().cpu().numpy(), info


def customize(config: CustomizeConfig, lm: FrozenLM | None = None, progress: bool = True) -> dict:
    """Run one user-side customisation and return its summary (see ``cbp-fed customize``)."""
    started = time.time()
    task = load_task_spec(config.task)
    split = user_split(task, config.seed, config.shots_per_class, n_dev=config.n_dev, n_test=config.n_test)
    on = config.eval_split
    eval_rows = split.dev if on == "dev" else split.test
    lm = lm or FrozenLM.load(config.backbone, config.dtype, config.device)
    source, z, source_info = build_source(config, lm)
    box = BlackBox(lm, source, max_tokens=config.max_tokens)

    def scores_of(z_batch: np.ndarray, rows) -> np.ndarray:
        query = Query(z_batch, [ex.passage for ex in rows], [ex.query for ex in rows], task.label_words)
        return box.score([query])[0]

    def evaluate(z_final: np.ndarray) -> dict:
        scores = scores_of(z_final[None], eval_rows)[0]
        train = scores_of(z_final[None], split.train)[0]
        labels = [ex.label for ex in eval_rows]
        return {
            f"{on}_accuracy": accuracy(scores, labels),
            f"{on}_accuracy_calibrated": accuracy(calibrated(scores, train), labels),
            f"{on}_predicted_share": np.bincount(scores.argmax(1), minlength=len(task.label_words)).tolist(),
        }

    train_labels = np.array([ex.label for ex in split.train])
    curve, search = [], None
    if config.method in SEARCHING:
        search = CMASearch(
            z,
            SearchConfig(config.popsize, config.sigma0, config.budget, config.diagonal, loss=config.loss),
            config.seed,
        )
        pending = sorted(config.checkpoints)
        columns = (
            TextColumn(f"{config.method} {config.task} seed {config.seed}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} calls, best loss {task.fields[best]:.3f}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, disable=not progress) as bar:
            job = bar.add_task("search", total=config.budget, best=float("nan"))
            while not search.done:
                candidates = search.ask()
                search.tell(fitness(scores_of(candidates, split.train), train_labels, config.loss))
                bar.update(job, completed=search.calls, best=search.best_fitness)
                while pending and search.calls >= pending[0]:
                    curve.append({"calls": pending.pop(0), **evaluate(search.result)})
        z = search.result
    final = curve[-1] if curve and curve[-1]["calls"] == search.calls else evaluate(z)
    final = {k: v for k, v in final.items() if k != "calls"}
    if on == "test":
        final["dev_accuracy"] = accuracy(scores_of(z[None], split.dev)[0], [ex.label for ex in split.dev])
    eval_labels = [ex.label for ex in eval_rows]
    return {
        "task": config.task,
        "domain": task.domain,
        "method": config.method,
        "seed": config.seed,
        "budget": config.budget if search else 0,
        "calls_used": search.calls if search else 0,
        "backbone": lm.name,
        "dtype": str(lm.dtype).removeprefix("torch."),
        "train_size": len(split.train),
        "dev_size": len(split.dev),
        "test_size": len(split.test),
        "eval_split": on,
        **final,
        "majority_rate": max(Counter(eval_labels).values()) / len(eval_labels),
        "best_train_loss": search.best_fitness if search else None,
        "curve": curve,
        "calls_total": box.meter.calls,
        "eval_calls": box.meter.calls - (search.calls if search else 0),
        "tokens_scored": box.meter.tokens,
        "forward_seconds": round(box.meter.seconds, 2),
        "wall_seconds": round(time.time() - started, 2),
        "z_norm": float(np.linalg.norm(z)) if z.size else 0.0,
        "config": asdict(config),
        **source_info,
    }
