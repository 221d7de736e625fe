"""Stage 1, Server-side Domain Training (SDT): the provider trains the prompt generator.

The backbone stays frozen; back-propagation goes through it into the generator's L_D, L_U and the
domain's starting vector z0, and one task vector per SDT task around it (so that z steers the
generator: trained with a single z0, the generator learns to ignore z). Data: the provider's own
domain pool (``tasks.domain_pool``), disjoint from every user-side split by construction. Loss:
cross-entropy over each example's answer scores (label words or options), exactly what users see.

A checkpoint is ``generator.safetensors`` (L_D, L_U, z0, task offsets, input standardisation) plus
``generator.json`` (backbone identity, dims, A's seed, domain, SDT tasks, data fingerprint, training
settings and curve, and the evidence that z steers: per-task accuracy with its own vector vs z0 vs
zero-shot, and the prompt change of a search step vs BBT's). Loading refuses a checkpoint made for
another backbone.
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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .backbone import FrozenLM, describe
from .prompts import ProjectedPrompt, PromptGenerator, instruction_embedding, prompt_change
from .stats import paired
from .tasks import domain_pool

CHECKPOINT_VERSION = 2
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SDTConfig:
    """Settings of one SDT run (recorded in the checkpoint).

    z_noise: std of the Gaussian noise added to z on every training example, the scale of the users'
    CMA-ES steps (their default sigma0): the generator learns to answer well in the whole neighbourhood
    the users will search. steering_target: before training, L_U's weights are scaled so that a
    sigma = 1 step of z moves the started generator's prompt this fraction of what it moves BBT's (0:
    leave them at 0.1x PyTorch's initialisation, where a step moved it 0.007-0.06x BBT's).
    generalist_share: the fraction of steps that train the domain's start vector
    z0 itself (the other steps train a task's vector z0 + offset). offset_penalty: weight of the mean
    squared offset, which keeps the task vectors near z0 (where users start). eval_size: held-out pool rows
    the checkpoint's evidence is measured on (``held_out``); dev_size: another held-out slice that decides
    early stopping: every ``eval_every`` steps z0's accuracy and loss on it are measured, the best state is
    kept, and training stops after ``patience`` checks without improvement (``eval_every`` 0: no checks,
    all ``steps`` run). transfer_task: one task of the pool left out of training; its drawn rows measure
    whether what SDT learned transfers to a task it never saw (``transfer`` in the checkpoint, as
    ``held_out``). domain: whose SDT pool
    ``train_generator`` draws (an unknown one is refused there, before any step); with a pool of its own
    (a white-box ceiling on one task) only the name recorded in the checkpoint.
    """

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
    eval_size: int = 300
    dev_size: int = 0
    eval_every: int = 0
    patience: int = 4
    transfer_task: str = ""
    max_tokens: int = 128
    z_noise: float = 0.5
    generalist_share: float = 0.5
    offset_penalty: float = 0.1
    steering_target: float = 0.5
    seed: int = 0

    def __post_init__(self):
        for key in ("r", "m", "t", "steps", "batch_size", "pool_size", "max_tokens", "patience"):
            if getattr(self, key) < 1:
                raise ValueError(f"SDTConfig.{key} must be >= 1, got {getattr(self, key)}")
        if self.eval_size < 0 or self.dev_size < 0 or self.eval_every < 0:
            raise ValueError(
                f"SDTConfig.eval_size, dev_size and eval_every must be >= 0, got "
                f"{self.eval_size}, {self.dev_size}, {self.eval_every}"
            )
        if self.eval_every and not self.dev_size:
            raise ValueError("SDTConfig.eval_every needs dev_size > 0 held-out rows to check on (or eval_every 0)")
        if not self.lr > 0:
            raise ValueError(f"SDTConfig.lr must be > 0, got {self.lr}")
        if self.z_noise < 0 or self.offset_penalty < 0:
            raise ValueError(
                f"SDTConfig.z_noise and offset_penalty must be >= 0, got {self.z_noise}, {self.offset_penalty}"
            )
        if self.steering_target < 0:
            raise ValueError(f"SDTConfig.steering_target must be >= 0 (0 = off), got {self.steering_target}")
        if not 0 <= self.generalist_share <= 1:
            raise ValueError(f"SDTConfig.generalist_share must be in [0, 1], got {self.generalist_share}")


def example_scores(lm: FrozenLM, prompts: torch.Tensor, task, examples, ids) -> torch.Tensor:
    """The scores users will see, with gradients: ``prompts: (n, t, d)`` over the examples' token ids
    -> ``(n, C)`` label-word logits or option log-likelihoods, as the task is scored."""
    options = [ex.options for ex in examples] if task.scoring == "options" else None
    return lm.choice_scores(prompts, ids, task.label_words, options, task.length_norm)


def _encode(lm: FrozenLM, examples, max_tokens: int) -> list[list[int]]:
    return [lm.encode(ex.passage, ex.query, max_tokens, ex.options) for ex in examples]


def _fits(lm: FrozenLM, example, max_tokens: int) -> bool:
    """Whether the example's query and longest option fit ``max_tokens`` (its passage can be cut)."""
    try:
        lm.encode("", example.query, max_tokens, example.options)
    except ValueError:
        return False
    return True


def _by_task(pool) -> dict[str, tuple]:
    groups = defaultdict(list)
    tasks = {}
    for task, ex in pool:
        groups[task.name].append(ex)
        tasks[task.name] = task
    return {name: (tasks[name], exs) for name, exs in sorted(groups.items())}


def _correct(lm: FrozenLM, gen, z, task, examples, max_tokens: int, batch_size: int = 32) -> torch.Tensor:
    """``(n,)`` bool: which examples a prompt answers right. ``gen``: a generator (its prompt for task
    vector ``z: (r,)``), a fixed prompt ``(t, d)`` (``z`` unused), or None (zero-shot, an empty prompt)."""
    return _scores_and_labels(lm, gen, z, task, examples, max_tokens, batch_size)[0]


def _scores_and_labels(lm: FrozenLM, gen, z, task, examples, max_tokens: int, batch_size: int = 32):
    """``(correct (n,) bool, loss (n,) cross-entropy)`` of a prompt on ``examples`` (``gen`` as in ``_correct``)."""
    correct, losses = [], []
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            chunk = examples[i : i + batch_size]
            ids = _encode(lm, chunk, max_tokens)
            if gen is None:
                prompts = torch.zeros(len(chunk), 0, lm.d, device=lm.device)
            elif isinstance(gen, torch.Tensor):
                prompts = gen[None].expand(len(chunk), -1, -1)
            else:
                prompts = gen(z[None], lm.pooled(ids))[0]
            labels = torch.tensor([ex.label for ex in chunk], device=lm.device)
            scores = example_scores(lm, prompts, task, chunk, ids).float()
            correct.append(scores.argmax(1) == labels)
            losses.append(torch.nn.functional.cross_entropy(scores, labels, reduction="none"))
    if not correct:
        return torch.zeros(0, dtype=torch.bool), torch.zeros(0)
    return torch.cat(correct).cpu(), torch.cat(losses).cpu()


def _correct_over(lm: FrozenLM, gen: PromptGenerator, groups: dict, max_tokens: int) -> torch.Tensor:
    """``(n,)`` bool: z0's correctness on every row of ``groups`` (task by task, in their order)."""
    correct = [_correct(lm, gen, gen.z0, task, exs, max_tokens) for task, exs in groups.values()]
    return torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool)


def evaluate_pool(lm: FrozenLM, gen: PromptGenerator, groups: dict, max_tokens: int) -> float:
    """Accuracy of the generator with z0 on a held-out part of the domain pool."""
    correct = _correct_over(lm, gen, groups, max_tokens)
    return float(correct.float().mean()) if len(correct) else 0.0


def _paired(diff: torch.Tensor) -> dict:
    """`paired` of per-row differences ``(n,)`` in {-1, 0, 1}, rounded (mean None without rows)."""
    interval = paired(diff.float().cpu().numpy())
    return {"mean": round(interval["mean"], 4) if len(diff) else None, "ci95": round(interval["ci95"], 4)}


def held_out_evidence(lm: FrozenLM, gen: PromptGenerator, groups: dict, max_tokens: int, z0_before: torch.Tensor):
    """Did SDT learn? On the held-out pool rows ``groups``: accuracy of zero-shot, of BBT's instruction
    prompt (no generator), of z0 before training (``z0_before``: the rows' correctness, measured then) and
    of z0 after, and z0 after paired against the better of zero-shot and the instruction prompt on the same
    rows (``z0_vs_best``; the bar is ``mean - ci95 > 0``)."""
    instruction = instruction_embedding(lm, gen.t)
    rows = {"zero_shot": [], "instruction": [], "z0_after": []}
    for task, exs in groups.values():
        rows["zero_shot"].append(_correct(lm, None, None, task, exs, max_tokens))
        rows["instruction"].append(_correct(lm, instruction, None, task, exs, max_tokens))
        rows["z0_after"].append(_correct(lm, gen, gen.z0, task, exs, max_tokens))
    correct = {name: torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool) for name, parts in rows.items()}
    correct["z0_before"] = z0_before
    accuracy = {name: round(float(c.float().mean()), 4) if len(c) else None for name, c in correct.items()}
    best = max(("zero_shot", "instruction"), key=lambda name: accuracy[name] or 0.0)
    vs_best = _paired(correct["z0_after"].float() - correct[best].float())
    return {
        "n": len(z0_before),
        **{name: accuracy[name] for name in ("zero_shot", "instruction", "z0_before", "z0_after")},
        "z0_vs_best": {**vs_best, "against": best},
        "learned": bool(vs_best["mean"] is not None and vs_best["mean"] - vs_best["ci95"] > 0),
    }


def task_vector_evidence(lm: FrozenLM, gen: PromptGenerator, tasks: list[str], groups: dict, max_tokens: int) -> dict:
    """Does z carry task information? Per SDT task, held-out accuracy with its own vector z0 + offset,
    with z0, and zero-shot; and over all held-out rows the paired difference own - z0 with a 95% interval
    (normal approximation of the mean of per-row differences in {-1, 0, 1})."""
    per_task, differences = {}, []
    for name, (task, exs) in groups.items():
        if name not in tasks:
            continue
        own = _correct(lm, gen, gen.z0 + gen.task_offsets[tasks.index(name)], task, exs, max_tokens)
        start = _correct(lm, gen, gen.z0, task, exs, max_tokens)
        zero = _correct(lm, None, None, task, exs, max_tokens)
        per_task[name] = {
            "n": len(exs),
            "own_z": round(float(own.float().mean()), 4),
            "z0": round(float(start.float().mean()), 4),
            "zero_shot": round(float(zero.float().mean()), 4),
        }
        differences.append(own.float() - start.float())
    diff = torch.cat(differences) if differences else torch.zeros(0)
    wins = sum(v["own_z"] > v["z0"] for v in per_task.values())
    return {
        "tasks": per_task,
        "own_beats_z0": f"{wins}/{len(per_task)}",
        "paired_gain": {**_paired(diff), "n": len(diff)},
    }


def steering(lm: FrozenLM, gen: PromptGenerator, ids, sigma: float = 1.0) -> dict:
    """How far a search step moves the prompt: the relative prompt change of a sigma step for CBP (at z0)
    and for BBT's projected prompt (at 0) of the same t and r, on the inputs ``ids``."""
    pooled = lm.pooled(ids)
    bbt = ProjectedPrompt.for_backbone(lm, gen.t, gen.r, seed=gen.a_seed)
    cbp_change = prompt_change(gen, gen.z0.detach(), pooled, sigma)
    bbt_change = prompt_change(bbt, torch.zeros(gen.r, device=lm.device), pooled, sigma)
    return {
        "sigma": sigma,
        "cbp": round(cbp_change, 4),
        "bbt": round(bbt_change, 4),
        "ratio": round(cbp_change / bbt_change, 4),
    }


def calibrate_steering(lm: FrozenLM, gen: PromptGenerator, ids, target: float, rounds: int = 5) -> dict:
    """Scale L_U's weights until a sigma = 1 step of z moves the generator's prompt ``target`` times as much
    as it moves BBT's, on the inputs ``ids``; returns the final ``steering`` measurement and the factor.

    With L_U's bias at BBT's prompt the prompt's change is nearly linear in the weights' scale, so a few
    multiplicative corrections suffice (as the weights grow, the prompt's own norm grows too and the ratio
    saturates: a target above that ceiling ends at the closest reached, as the returned ratio says).
    z's steps stay the size of the inputs (A is untouched): scaling A
    instead (54x for 0.5 on the medical pool) put them far outside the inputs' range and SDT broke."""
    measured, factor = steering(lm, gen, ids), 1.0
    for _ in range(rounds):
        if abs(measured["ratio"] - target) <= 0.05 * target:
            break
        correction = target / max(measured["ratio"], 1e-6)
        with torch.no_grad():
            gen.up.weight.mul_(correction)
        factor *= correction
        measured = steering(lm, gen, ids)
    return {**measured, "weight_factor": round(factor, 4)}


def warmup_cosine(optimiser: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The SDT learning rate over ``steps`` optimiser steps: a linear warm-up over the first tenth, the
    first step already at lr / warm-up, capped by a cosine that decays from step 0 to zero at ``steps``.

    Not transformers' ``get_cosine_schedule_with_warmup``, which no setting makes equal to this one (the
    generators were trained with this one): its first step has lr 0 (a wasted step, a third of a 3-step
    SDT) and its cosine runs from the end of the warm-up, so over 300 steps its lr is up to 9.6% of the
    peak higher (step 117) and 10% more in total. With no warm-up its cosine is exactly this cap."""
    warmup = max(1, steps // 10)
    return torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * s / steps)))
    )


def train_generator(
    lm: FrozenLM, config: SDTConfig, progress: bool = True, pool: list | None = None
) -> tuple[PromptGenerator, dict]:
    """Train a generator and one task vector per SDT task on the domain pool; returns it and its metadata.

    Each step draws one task's batch; with probability ``generalist_share`` it trains the start vector
    z0 on it, else the task's own vector z0 + offset; either way every example's z gets Gaussian noise of
    std ``z_noise``. So z0 becomes the domain's generalist start, the task vectors specialists one search
    step away, and the generator responds to z smoothly across the region users search.
    ``pool``: (Task, Example) pairs to train on instead of the domain's pool. After a seeded shuffle the
    first ``eval_size`` rows are held out for the checkpoint's evidence and the next ``dev_size`` for early
    stopping; the generator trains on the rest.
    """
    started = time.time()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    size = config.pool_size + config.eval_size + config.dev_size
    try:
        drawn = pool if pool is not None else domain_pool(config.domain, config.seed, size)
    except ValueError as err:  # name the two settings that add up to the draw
        raise ValueError(
            f"{err} (pool_size {config.pool_size} + eval_size {config.eval_size} + dev_size {config.dev_size}): "
            "lower them"
        ) from err
    pool = [(task, ex) for task, ex in drawn if _fits(lm, ex, config.max_tokens)]
    rng.shuffle(pool)
    transfer_groups = {}
    if config.transfer_task:
        transfer_groups = _by_task([(task, ex) for task, ex in pool if task.name == config.transfer_task])
        if not transfer_groups:
            names = sorted({task.name for task, _ in pool})
            raise ValueError(f"transfer_task {config.transfer_task!r} has no rows in the SDT pool; its tasks: {names}")
        pool = [(task, ex) for task, ex in pool if task.name != config.transfer_task]
    held = config.eval_size + config.dev_size
    eval_groups, dev_groups = _by_task(pool[: config.eval_size]), _by_task(pool[config.eval_size : held])
    train_rows = pool[held:]
    train_groups = _by_task(train_rows)
    names = list(train_groups)
    gen = PromptGenerator(lm.d, config.r, config.m, config.t, config.a_seed, n_tasks=len(names)).to(lm.device)
    with torch.no_grad():
        gen.standardise_with(lm.pooled(_encode(lm, [ex for _, ex in train_rows], config.max_tokens)))
        gen.start_at(instruction_embedding(lm, config.t))
        gen.task_offsets.normal_(0.0, config.z_noise)
    calibration = None
    if config.steering_target:
        sample = [ex for _, ex in train_rows[:64]]
        calibration = calibrate_steering(lm, gen, _encode(lm, sample, config.max_tokens), config.steering_target)
    vectors = [gen.z0, gen.task_offsets]
    optimiser = torch.optim.AdamW(
        [
            {"params": [gen.down.weight, gen.up.weight], "weight_decay": config.weight_decay},
            {"params": [gen.down.bias, gen.up.bias, *vectors], "weight_decay": 0.0},  # z never decays
        ],
        lr=config.lr,
    )
    schedule = warmup_cosine(optimiser, config.steps)
    z0_before = _correct_over(lm, gen, eval_groups, config.max_tokens)
    transfer_before = _correct_over(lm, gen, transfer_groups, config.max_tokens)

    def dev_check(step: int) -> dict:
        """z0's accuracy and mean cross-entropy on the dev slice at ``step``."""
        parts = [_scores_and_labels(lm, gen, gen.z0, task, exs, config.max_tokens) for task, exs in dev_groups.values()]
        correct, losses = torch.cat([c for c, _ in parts]), torch.cat([loss for _, loss in parts])
        return {"step": step, "dev_accuracy": float(correct.float().mean()), "dev_loss": float(losses.mean())}

    checks = [dev_check(0)] if config.eval_every else []
    start_state = {k: v.detach().clone() for k, v in gen.state_dict().items()} if checks else None
    best, best_state, waited = (checks[0] if checks else None), None, 0
    weights = [len(train_groups[n][1]) for n in names]
    noise = torch.Generator().manual_seed(config.seed)
    curve = []
    columns = (
        TextColumn("SDT {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress) as bar:
        job = bar.add_task(config.domain, total=config.steps, loss=float("nan"))
        for step in range(1, config.steps + 1):
            index = rng.choices(range(len(names)), weights)[0]
            task, exs = train_groups[names[index]]
            batch = rng.sample(exs, min(config.batch_size, len(exs)))
            ids = _encode(lm, batch, config.max_tokens)
            z = gen.z0 if rng.random() < config.generalist_share else gen.z0 + gen.task_offsets[index]
            z = z + config.z_noise * torch.randn(len(batch), config.r, generator=noise).to(lm.device)  # (n, r)
            rows = torch.arange(len(batch), device=lm.device)
            prompts = gen.pairs(z, lm.pooled(ids), rows, rows)  # (n, t, d): each example its own noisy z
            labels = torch.tensor([ex.label for ex in batch], device=lm.device)
            task_loss = torch.nn.functional.cross_entropy(example_scores(lm, prompts, task, batch, ids), labels)
            loss = task_loss + config.offset_penalty * gen.task_offsets[index].pow(2).mean()
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(gen.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            curve.append(round(task_loss.item(), 4))
            recent = sum(curve[-20:]) / len(curve[-20:])
            bar.update(job, advance=1, loss=recent)
            if not bar.console.is_terminal and (len(curve) % max(1, config.steps // 10) == 0):
                log.info("SDT %s: step %d/%d, loss %.3f", config.domain, len(curve), config.steps, recent)
            if config.eval_every and step % config.eval_every == 0:
                checks.append(dev_check(step))
                log.info("SDT %s: dev check at step %d: %s", config.domain, step, checks[-1])
                if (checks[-1]["dev_accuracy"], -checks[-1]["dev_loss"]) > (best["dev_accuracy"], -best["dev_loss"]):
                    best, waited = checks[-1], 0
                    best_state = {k: v.detach().clone() for k, v in gen.state_dict().items()}
                else:
                    waited += 1
                if waited >= config.patience:
                    break
    if checks:  # back to the best dev check (the start itself when no step beat it)
        gen.load_state_dict(best_state if best_state is not None else start_state)
    gen.eval().requires_grad_(False)
    eval_ids = _encode(lm, [ex for _, ex in pool[: config.eval_size]], config.max_tokens)
    meta = {
        "version": CHECKPOINT_VERSION,
        "backbone": describe(lm),
        "dims": {"d": lm.d, "r": config.r, "m": config.m, "t": config.t},
        "projection": {"a_seed": config.a_seed},
        "steering_calibration": calibration,
        "domain": config.domain,
        "sdt_tasks": names,
        "data": {
            "fingerprint": fingerprint(pool),
            "dropped_query_too_long": len(drawn) - len(pool),
            "train_examples": len(train_rows),
            "eval_examples": config.eval_size,
            "dev_examples": config.dev_size,
            "tasks": {n: len(e) for n, (_, e) in train_groups.items()},
        },
        "training": {
            **asdict(config),
            "optimiser": "AdamW (z0 and task offsets without weight decay), linear warm-up + cosine decay",
            "dtype": str(lm.dtype),
            "seconds": round(time.time() - started, 1),
        },
        "eval_accuracy": {
            "before": float(z0_before.float().mean()),
            "after": evaluate_pool(lm, gen, eval_groups, config.max_tokens),
        },
        "held_out": held_out_evidence(lm, gen, eval_groups, config.max_tokens, z0_before),
        "transfer": {
            "task": config.transfer_task,
            **held_out_evidence(lm, gen, transfer_groups, config.max_tokens, transfer_before),
        }
        if transfer_groups
        else None,
        "early_stopping": {
            "eval_every": config.eval_every,
            "patience": config.patience,
            "dev_size": config.dev_size,
            "steps_run": len(curve),
            "best_step": best["step"] if best else len(curve),
            "checks": checks,
        },
        "task_vectors": task_vector_evidence(lm, gen, names, eval_groups, config.max_tokens),
        "steering": steering(lm, gen, eval_ids) if eval_ids else None,
        "loss_curve": curve,
    }
    return gen, meta


def fingerprint(pool) -> str:
    """sha256 over the pool's example ids: which data trained this generator."""
    return hashlib.sha256("\n".join(sorted(ex.uid for _, ex in pool)).encode()).hexdigest()


def save_generator(gen: PromptGenerator, meta: dict, folder: str | Path) -> Path:
    """Write ``generator.safetensors`` + ``generator.json`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in gen.state_dict().items()}, folder / "generator.safetensors")
    (folder / "generator.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def _checkpoint_meta(meta_path: Path) -> dict:
    """A checkpoint's ``generator.json``, or ValueError naming the file when it is damaged or incomplete."""
    damaged = f"generator checkpoint file {meta_path} is damaged"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{damaged}: not valid JSON ({err}); train it again with `cbp-fed sdt`") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{damaged}: it holds a JSON {type(meta).__name__}, not an object")
    if meta.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint version {meta.get('version')} in {meta_path}; this code reads {CHECKPOINT_VERSION}"
        )
    needed = ("backbone", "dims", "projection", "sdt_tasks", "domain", "data", "training")  # what loaders read
    missing = [key for key in needed if key not in meta]
    if missing:
        raise ValueError(f"{damaged}: it lacks {', '.join(missing)}")
    return meta


def load_generator(folder: str | Path, lm: FrozenLM) -> tuple[PromptGenerator, dict]:
    """Load a checkpoint for ``lm``; refuses one trained for another backbone, and a damaged one naming its file."""
    folder = Path(folder)
    meta_path, weights_path = folder / "generator.json", folder / "generator.safetensors"
    if not meta_path.exists() or not weights_path.exists():
        raise FileNotFoundError(
            f"{folder} is not a generator checkpoint (needs generator.json and generator.safetensors)"
        )
    meta = _checkpoint_meta(meta_path)
    trained_for, here = dict(meta["backbone"]), describe(lm)
    if {k: v for k, v in trained_for.items() if k != "name"} != {k: v for k, v in here.items() if k != "name"}:
        raise ValueError(f"checkpoint {folder} was trained for backbone {meta['backbone']}, not {describe(lm)}")
    dims = meta["dims"]
    gen = PromptGenerator(
        dims["d"], dims["r"], dims["m"], dims["t"], meta["projection"]["a_seed"], len(meta["sdt_tasks"])
    )
    try:
        gen.load_state_dict(load_file(weights_path))
    except (SafetensorError, RuntimeError) as err:  # truncated or foreign file; tensors that do not fit the dims
        raise ValueError(
            f"generator checkpoint file {weights_path} is damaged or does not match {meta_path.name} "
            f"({str(err).splitlines()[0]}); train it again with `cbp-fed sdt`"
        ) from err
    return gen.to(lm.device).eval().requires_grad_(False), meta
