"""What the bench measures with: its sizes, the clock, side-by-side timing, and the inputs (queries, the
bare forward at the BlackBox's shapes, FLOPs)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cbp_fed.backbone import FrozenLM
from cbp_fed.prompts import PromptGenerator
from cbp_fed.service import BlackBox, Query

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "results" / "core" / "gen-commonsense"  # the trained SDT generator, when committed here
R, M, T = 500, 256, 10  # the app's default generator sizes


@dataclass(frozen=True)
class Sizes:
    """How big each section's work is. ``one``/``many``/``tried``: (candidates, texts) per user."""

    one: tuple[int, int] = (6, 16)
    many_users: int = 100
    many: tuple[int, int] = (1, 1)
    tried: tuple[int, int] = (4, 4)
    max_tokens: int = 64
    reps: int = 3
    users: tuple[int, ...] = (10, 30, 100, 300)
    memory_users: int = 300
    real_users: int = 10
    eval_texts: int = 64
    profile_users: tuple[int, ...] = (100, 1000)
    scale_users: tuple[int, ...] = (10, 100, 1000, 10000)


QUICK = Sizes(
    one=(6, 4),
    many=(1, 1),
    tried=(2, 4),
    reps=1,
    users=(4, 12),
    memory_users=12,
    real_users=2,
    eval_texts=32,
    profile_users=(10,),
    scale_users=(10, 30),
)


# ------------------------------------------------------------------ timing
class Clock:
    """Seconds of one call: process CPU time on a CPU (robust to other jobs), wall time after a CUDA sync."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            return time.perf_counter() - start
        start = time.process_time()
        fn()
        return time.process_time() - start


class ForwardTimer:
    """``with timer:`` adds the clock time spent inside ``module.forward`` (the backbone's decoder) to
    ``timer.seconds``, reset on entry: the model's share of a BlackBox call, measured within the call and
    so immune to the machine's load changing between calls."""

    def __init__(self, module: torch.nn.Module, clock: Clock):
        self.module, self.clock, self.seconds = module, clock, 0.0

    def __enter__(self) -> ForwardTimer:
        self.seconds, forward = 0.0, self.module.forward

        def timed(*args, **kwargs):
            out = []
            self.seconds += self.clock(lambda: out.append(forward(*args, **kwargs)))
            return out[0]

        self.module.forward = timed
        return self

    def __exit__(self, *exc) -> None:
        del self.module.forward  # back to the class's forward


def side_by_side(clock: Clock, reps: int, fns: dict[str, Callable], warm: dict[str, Callable]) -> dict[str, list]:
    """Time each of ``fns`` ``reps`` times, interleaved, after one untimed call of each ``warm`` (a small
    version of the same work: first-call costs such as kernel selection stay out of the timings)."""
    for fn in warm.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(clock(fn))
    return times


def speedup(times: dict[str, list[float]], base: str, variant: str) -> float:
    """How many times faster ``variant`` ran than ``base``: the ratio of the fastest repetition of each
    (other jobs on a shared machine only ever add time, also CPU time through a busy sibling core)."""
    return min(times[base]) / min(times[variant])


# ------------------------------------------------------------------ inputs
def load_lm(name: str, dtype: str, device: str) -> FrozenLM:
    return FrozenLM.load(name, dtype, device)


def trained_generator() -> bool:
    """Whether the trained generator's checkpoint is here whole (its weights are not committed with its json)."""
    return all((GENERATOR / name).exists() for name in ("generator.json", "generator.safetensors"))


def prompt_source(lm: FrozenLM) -> PromptGenerator:
    """The trained commonsense generator for SmolLM2 when it is here, else a seeded random one: the speed
    is the same."""
    if lm.name == "smollm2-135m" and trained_generator():
        from cbp_fed.domain_training import load_generator

        return load_generator(GENERATOR, lm)[0]
    torch.manual_seed(0)
    return PromptGenerator(lm.d, r=R, m=M, t=T).to(lm.device)


def examples(task: str, count: int, seed: int = 0) -> tuple[list, tuple[str, ...]]:
    """``count`` shuffled rows of a registered task (cycled if it has fewer) and its label words."""
    from cbp_fed.tasks import load_task

    spec = load_task(task)
    rows = list(spec.examples)
    random.Random(seed).shuffle(rows)
    return [rows[i % len(rows)] for i in range(count)], spec.label_words


def make_queries(users: int, k: int, n: int, task: str = "boolq", seed: int = 0) -> list[Query]:
    """``users`` queries of ``k`` random candidates ``(k, R)`` on ``n`` distinct texts each."""
    rows, words = examples(task, users * n, seed)
    rng = np.random.default_rng(seed)
    return [
        Query(
            rng.normal(size=(k, R)).astype(np.float32),
            [e.passage for e in rows[u * n : (u + 1) * n]],
            [e.query for e in rows[u * n : (u + 1) * n]],
            list(words),
        )
        for u in range(users)
    ]


def arc_queries(k: int, n: int, seed: int = 0) -> tuple[Query, Query]:
    """One user's ``k`` random candidates on ``n`` shuffled ARC-Easy rows, asked two ways: scored by the
    4 options (context "Question: ...\nAnswer:", options " ...") and by letters (the options listed as
    "A. ..." lines, label words " A".." D")."""
    from cbp_fed.tasks.registry import multiple_choice_rows

    rows = list(multiple_choice_rows("arc-easy").values())
    random.Random(seed).shuffle(rows)
    rows = [rows[i % len(rows)] for i in range(n)]
    z = np.random.default_rng(seed).normal(size=(k, R)).astype(np.float32)
    letters = [" A", " B", " C", " D"]
    plain = [f"Question: {r.question}\nAnswer:" for r in rows]
    listed = ["".join(f"\n{letter}. {o}" for letter, o in zip("ABCD", r.options)) for r in rows]
    lettered = [f"Question: {r.question}{options}\nAnswer:" for r, options in zip(rows, listed)]
    options = [[" " + o for o in r.options] for r in rows]
    return Query(z, [""] * n, plain, letters, options), Query(z, [""] * n, lettered, letters)


def bare_inputs(box: BlackBox, queries: list[Query]) -> tuple[list[tuple[int, int]], list[tuple]]:
    """The BlackBox's chunk shapes for ``queries`` and, per chunk, the model's inputs (embeds ``(B, L, d)``
    with random prompts, mask, positions): what the bare forward runs, same rows, lengths and padding."""
    encoded = [box.encode(q) for q in queries]
    plan = box.plan(queries, encoded)
    inputs = []
    for begin, end in plan.chunks:
        ids = [encoded[u][e] for u, _, e in plan.rows[begin:end].tolist()]
        prompts = 0.1 * torch.randn(end - begin, box.source.t, box.lm.d, device=box.lm.device)
        inputs.append(box.lm.batch_inputs(prompts, ids)[:3])
    return plan.shapes(), inputs


@torch.no_grad()
def bare_forward(lm: FrozenLM, inputs: list[tuple], full_logits: bool = False) -> torch.Tensor:
    """The backbone alone on prepared inputs; returns the last chunk's hidden states (or, to compare,
    full-vocabulary logits at every position, what a plain ``model(...)`` call computes)."""
    for embeds, mask, positions in inputs:
        if full_logits:
            out = lm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
        else:
            out = lm.model.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state
    return out


def real_tokens(shapes_inputs: list[tuple]) -> int:
    return int(sum(int(mask.sum()) for _, mask, _ in shapes_inputs))


def forward_flops(lm: FrozenLM, shapes: list[tuple[int, int]]) -> float:
    """FLOPs of the bare forward over padded ``(rows, length)`` chunks: 2 per weight per position (no
    embedding lookup, no LM head) plus attention scores and mixing, 4 L^2 (heads x head_dim) per layer."""
    cfg = lm.model.config
    weights = sum(p.numel() for name, p in lm.model.model.named_parameters() if "embed_tokens" not in name)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attention = 4 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim
    return float(sum(2 * weights * b * length + attention * b * length * length for b, length in shapes))
