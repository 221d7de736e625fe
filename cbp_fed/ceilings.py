"""White-box ceilings: a prompt trained by back-propagation on a task's labelled rows, for comparison only.

A black-box search cannot beat what gradient descent with full access finds in the same space, so each
ceiling bounds one method from above (it breaks the privacy model: the provider would need the labels):

- ``generator``: every weight of a generator started where SDT starts it (BBT's instruction prompt), z at z0;
- ``z``: z alone through a frozen SDT generator: the most a CBP user's search can reach;
- ``bbt``: z alone through BBT's random projection around the instruction prompt: BBT's ceiling.

Adam on mini-batches of the train rows; every ``eval_every`` steps the prompt is scored on the dev rows
and the best state so far (dev accuracy, then dev cross-entropy) is kept; training stops after
``patience`` checks without improvement. A ceiling records whether its training loss fell: one that did
not is reported as such (it did not train), never as a ceiling.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch

from .backbone import FrozenLM
from .domain_training import _encode, example_scores
from .prompts import ProjectedPrompt, PromptGenerator, instruction_embedding

SPACES = ("generator", "z", "bbt")


@dataclass(frozen=True)
class CeilingConfig:
    """One white-box training run: the space, Adam's learning rate, at most ``steps`` steps of
    ``batch_size`` rows, early stopping on dev every ``eval_every`` steps after ``patience`` checks."""

    space: str = "generator"
    lr: float = 1e-3
    steps: int = 400
    batch_size: int = 8
    eval_every: int = 25
    patience: int = 4
    max_tokens: int = 128
    seed: int = 0

    def __post_init__(self):
        if self.space not in SPACES:
            raise ValueError(f"unknown ceiling space {self.space!r}; choose from {SPACES}")
        for key in ("steps", "batch_size", "eval_every", "patience", "max_tokens"):
            if getattr(self, key) < 1:
                raise ValueError(f"CeilingConfig.{key} must be >= 1, got {getattr(self, key)}")
        if not self.lr > 0:
            raise ValueError(f"CeilingConfig.lr must be > 0, got {self.lr}")


def prompt_space(
    lm: FrozenLM,
    space: str,
    train: list,
    generator: PromptGenerator | None = None,
    dims: tuple[int, int, int] = (500, 256, 10),
    max_tokens: int = 128,
    seed: int = 0,
):
    """``(source, z, trainable)``: the prompt source ``(k, r), (n, d) -> (k, n, t, d)``, the z it is scored
    at ``(r,)`` and the tensors a ceiling trains. ``generator`` starts as SDT starts one (standardised on the
    ``train`` rows' pooled embeddings, at the instruction prompt) with ``dims`` = (r, m, t); ``z`` needs a
    frozen SDT ``generator``; ``bbt`` is BBT's projection (r, t of ``dims``) with z at 0."""
    r, m, t = dims
    if space == "generator":
        source = PromptGenerator(lm.d, r, m, t, a_seed=seed).to(lm.device)
        with torch.no_grad():
            source.standardise_with(lm.pooled(_encode(lm, train[:512], max_tokens)))
            source.start_at(instruction_embedding(lm, t))
        return source, source.z0, list(source.parameters())
    if space == "z":
        if generator is None:
            raise ValueError("the z ceiling trains z through a frozen SDT generator: give one")
        z = torch.nn.Parameter(generator.z0.detach().clone())
        return generator.requires_grad_(False), z, [z]
    source = ProjectedPrompt.for_backbone(lm, t, r, seed).requires_grad_(False)
    z = torch.nn.Parameter(torch.zeros(r, device=lm.device))
    return source, z, [z]


def _loss_and_correct(lm, source, z, task, rows, max_tokens) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy (with gradients) and per-row correctness ``(n,)`` of the prompt at ``z`` on ``rows``."""
    ids = _encode(lm, rows, max_tokens)
    prompts = source(z[None], lm.pooled(ids))[0]  # (n, t, d)
    scores = example_scores(lm, prompts, task, rows, ids)  # (n, C)
    labels = torch.tensor([ex.label for ex in rows], device=lm.device)
    return torch.nn.functional.cross_entropy(scores, labels), scores.argmax(1) == labels


def evaluate(lm, source, z, task, rows, max_tokens, chunk: int = 32) -> tuple[float, torch.Tensor]:
    """Dev cross-entropy and per-row correctness of the prompt at ``z`` (no gradients)."""
    losses, correct = [], []
    with torch.no_grad():
        for i in range(0, len(rows), chunk):
            loss, right = _loss_and_correct(lm, source, z, task, rows[i : i + chunk], max_tokens)
            losses.append(float(loss) * len(right))
            correct.append(right)
    return sum(losses) / len(rows), torch.cat(correct)


def train_ceiling(lm: FrozenLM, source, z, trainable, task, train, dev, config: CeilingConfig, log=None) -> dict:
    """Train ``trainable`` (tensors of ``source`` or ``z``) on ``train`` rows, early-stopped on ``dev`` rows;
    leaves the best state in place and returns what happened: steps, the dev curve and its best point
    (``best_step``, ``best_dev``), the training loss first and last, and whether it fell (``trained``).
    ``log``, if given, is called with each dev check (a dict: step, dev accuracy and loss, seconds)."""
    started = time.time()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    for tensor in trainable:
        tensor.requires_grad_(True)
    optimiser = torch.optim.Adam(trainable, lr=config.lr)
    best_loss, best_correct = evaluate(lm, source, z, task, dev, config.max_tokens)
    best = (float(best_correct.float().mean()), -best_loss)
    saved = [t.detach().clone() for t in trainable]
    curve, losses, checks_without_gain, step = [{"step": 0, "dev_accuracy": best[0], "dev_loss": best_loss}], [], 0, 0
    for step in range(1, config.steps + 1):
        batch = rng.sample(train, min(config.batch_size, len(train)))
        loss, _ = _loss_and_correct(lm, source, z, task, batch, config.max_tokens)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimiser.step()
        losses.append(loss.item())
        if step % config.eval_every:
            continue
        dev_loss, correct = evaluate(lm, source, z, task, dev, config.max_tokens)
        point = (float(correct.float().mean()), -dev_loss)
        curve.append({"step": step, "dev_accuracy": point[0], "dev_loss": dev_loss})
        if log:
            log({**curve[-1], "seconds": round(time.time() - started, 1)})
        if point > best:
            best, saved, checks_without_gain = point, [t.detach().clone() for t in trainable], 0
        else:
            checks_without_gain += 1
            if checks_without_gain >= config.patience:
                break
    with torch.no_grad():
        for tensor, value in zip(trainable, saved):
            tensor.copy_(value)
            tensor.requires_grad_(False)
    best_point = max(curve, key=lambda c: (c["dev_accuracy"], -c["dev_loss"]))  # the state left in place
    window = max(1, min(config.eval_every, len(losses) // 2))
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    return {
        "steps": step,
        "best_step": best_point["step"],
        "best_dev": {"dev_accuracy": best_point["dev_accuracy"], "dev_loss": best_point["dev_loss"]},
        "dev_curve": curve,
        "train_loss_first_last": [round(first, 4), round(last, 4)],
        "trained": last < first,
        "seconds": round(time.time() - started, 1),
    }
