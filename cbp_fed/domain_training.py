"""Stage 1, Server-side Domain Training (SDT): the provider trains the prompt generator.

The backbone stays frozen; back-propagation goes through it into the generator's L_D, L_U and the
domain's starting vector z0. Data: the provider's own domain pool (``tasks.domain_pool``), which is
disjoint from every user-side split by construction. Loss: cross-entropy over each example's label
words at the answer position, exactly the scores users will later see.

A checkpoint is ``generator.safetensors`` (L_D, L_U, z0) plus ``generator.json`` (backbone identity,
dims, A's seed and scale, domain, data fingerprint, training settings and curve). Loading refuses a
checkpoint made for another backbone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file

from .backbone import FrozenLM, describe
from .prompts import PromptGenerator
from .tasks import DOMAINS, domain_pool

CHECKPOINT_VERSION = 1
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SDTConfig:
    """Settings of one SDT run (recorded in the checkpoint)."""

    domain: str = "commonsense"
    r: int = 500
    m: int = 256
    t: int = 10
    a_seed: int = 0
    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.01
    pool_size: int = 4000
    eval_size: int = 200
    max_tokens: int = 128
    seed: int = 0

    def __post_init__(self):
        if self.domain not in DOMAINS:
            raise ValueError(f"unknown domain {self.domain!r}; known: {sorted(DOMAINS)}")
        for key in ("r", "m", "t", "steps", "batch_size", "pool_size", "max_tokens"):
            if getattr(self, key) < 1:
                raise ValueError(f"SDTConfig.{key} must be >= 1, got {getattr(self, key)}")
        if not self.lr > 0:
            raise ValueError(f"SDTConfig.lr must be > 0, got {self.lr}")


def _batch_loss(lm: FrozenLM, gen: PromptGenerator, task, examples, max_tokens: int) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over the label words and the number correct, for one task's examples."""
    ids = [lm.encode(ex.passage, ex.query, max_tokens) for ex in examples]
    prompts = gen(gen.z0[None], lm.pooled(ids))[0]  # (n, t, d)
    logits = lm.label_logits(lm.last_hidden(prompts, ids), lm.label_token_ids(task.label_words))
    labels = torch.tensor([ex.label for ex in examples], device=lm.device)
    return torch.nn.functional.cross_entropy(logits, labels), int((logits.argmax(1) == labels).sum())


def _by_task(pool) -> dict[str, tuple]:
    groups = defaultdict(list)
    tasks = {}
    for task, ex in pool:
        groups[task.name].append(ex)
        tasks[task.name] = task
    return {name: (tasks[name], exs) for name, exs in sorted(groups.items())}


def evaluate_pool(lm: FrozenLM, gen: PromptGenerator, groups: dict, max_tokens: int, batch_size: int = 32) -> float:
    """Accuracy of the generator with z0 on a held-out part of the domain pool."""
    correct = total = 0
    with torch.no_grad():
        for task, exs in groups.values():
            for i in range(0, len(exs), batch_size):
                _, c = _batch_loss(lm, gen, task, exs[i : i + batch_size], max_tokens)
                correct, total = correct + c, total + len(exs[i : i + batch_size])
    return correct / max(total, 1)


def fingerprint(pool) -> str:
    """sha256 over the pool's example ids: which data trained this generator."""
    return hashlib.sha256("\n".join(sorted(ex.uid for _, ex in pool)).encode()).hexdigest()


def train_generator(lm: FrozenLM, config: SDTConfig, progress: bool = True) -> tuple[PromptGenerator, dict]:
    """Train a generator on the domain pool; returns it and its metadata (see module docstring)."""
    started = time.time()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    drawn = domain_pool(config.domain, config.seed, config.pool_size + config.eval_size)
    pool = [(task, ex) for task, ex in drawn if len(lm.tokenize(ex.query)) <= config.max_tokens]
    rng.shuffle(pool)
    train_groups, eval_groups = _by_task(pool[config.eval_size :]), _by_task(pool[: config.eval_size])
    gen = PromptGenerator(lm.d, config.r, config.m, config.t, config.a_seed, lm.embedding_std()).to(lm.device)
    optimiser = torch.optim.AdamW(gen.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, config.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then cosine decay to zero
        optimiser, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * s / config.steps)))
    )
    accuracy_before = evaluate_pool(lm, gen, eval_groups, config.max_tokens)
    names = list(train_groups)
    weights = [len(train_groups[n][1]) for n in names]
    curve = []
    columns = (
        TextColumn("SDT {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress) as bar:
        job = bar.add_task(config.domain, total=config.steps, loss=float("nan"))
        for _ in range(config.steps):
            task, exs = train_groups[rng.choices(names, weights)[0]]
            loss, _ = _batch_loss(lm, gen, task, rng.sample(exs, min(config.batch_size, len(exs))), config.max_tokens)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(gen.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            curve.append(round(loss.item(), 4))
            recent = sum(curve[-20:]) / len(curve[-20:])
            bar.update(job, advance=1, loss=recent)
            if not bar.console.is_terminal and (len(curve) % max(1, config.steps // 10) == 0):
                log.info("SDT %s: step %d/%d, loss %.3f", config.domain, len(curve), config.steps, recent)
    gen.eval()
    meta = {
        "version": CHECKPOINT_VERSION,
        "backbone": describe(lm),
        "dims": {"d": lm.d, "r": config.r, "m": config.m, "t": config.t},
        "projection": {"a_seed": config.a_seed, "embed_std": gen.embed_std},
        "domain": config.domain,
        "data": {
            "fingerprint": fingerprint(pool),
            "dropped_query_too_long": len(drawn) - len(pool),
            "train_examples": len(pool) - config.eval_size,
            "eval_examples": config.eval_size,
            "tasks": {n: len(e) for n, (_, e) in train_groups.items()},
        },
        "training": {
            **asdict(config),
            "optimiser": "AdamW, linear warm-up + cosine decay",
            "dtype": str(lm.dtype),
            "seconds": round(time.time() - started, 1),
        },
        "eval_accuracy": {"before": accuracy_before, "after": evaluate_pool(lm, gen, eval_groups, config.max_tokens)},
        "loss_curve": curve,
    }
    return gen, meta


def save_generator(gen: PromptGenerator, meta: dict, folder: str | Path) -> Path:
    """Write ``generator.safetensors`` + ``generator.json`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in gen.state_dict().items()}, folder / "generator.safetensors")
    (folder / "generator.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def load_generator(folder: str | Path, lm: FrozenLM) -> tuple[PromptGenerator, dict]:
    """Load a checkpoint for ``lm``; refuses one trained for another backbone."""
    folder = Path(folder)
    meta_path, weights_path = folder / "generator.json", folder / "generator.safetensors"
    if not meta_path.exists() or not weights_path.exists():
        raise FileNotFoundError(
            f"{folder} is not a generator checkpoint (needs generator.json and generator.safetensors)"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint version {meta.get('version')} in {folder}; this code reads {CHECKPOINT_VERSION}")
    trained_for, here = dict(meta["backbone"]), describe(lm)
    if {k: v for k, v in trained_for.items() if k != "name"} != {k: v for k, v in here.items() if k != "name"}:
        raise ValueError(f"checkpoint {folder} was trained for backbone {meta['backbone']}, not {describe(lm)}")
    dims, projection = meta["dims"], meta["projection"]
    gen = PromptGenerator(dims["d"], dims["r"], dims["m"], dims["t"], projection["a_seed"], projection["embed_std"])
    gen.load_state_dict(load_file(weights_path))
    return gen.to(lm.device).eval().requires_grad_(False), meta
