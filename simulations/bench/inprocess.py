"""The performance bench: the hardware limit, the BlackBox against it, what was tried, the federation at scale.

    python -m simulations.bench                          # all sections (~20 min on 2 CPU cores)
    python -m simulations.bench --quick                  # smaller shapes and runs: a few minutes
    python -m simulations.bench --only limit,blackbox    # sections: limit, blackbox, tried, options, federation
    python -m simulations.bench --only tried --compile   # also time torch.compile (minutes to compile)
    python -m simulations.bench --device cuda            # on a GPU (simulations/gpu_check.sh)
    python -m simulations.bench --only scale --scale-users 10,100,1000,10000   # issue 17 (py-spy needed)

Writes ``results/bench/bench.json`` (a rerun section replaces its own entry, the others stay),
``bench.md`` (the README's tables, rebuilt from bench.json) and ``scaling.png`` (wall time per round vs
users). The federation runs' folders and logs go to ``results/bench/runs/``.

How it measures. These machines are shared with other jobs, so every comparison is a ratio of two
things timed side by side in one process, interleaved (A B A B ...).
On a CPU the in-process sections run torch on ``--threads`` threads (default 1) and time with the
process's CPU time (tokens/s are per core); a busy sibling hyperthread still slows a core, so each side
is repeated ``--reps`` times and the fastest repetitions are compared (noise only ever adds time). On
CUDA they time wall-clock after a synchronise. The federation runs (``flwr run``, Ray, 2 cores) time
wall-clock: their ratios (framework vs forward) come from one run each.

- limit: a large matmul's FLOP/s (fp32, bf16) and the backbone's bare forward at the BlackBox's shapes
  (the chunks of a one-user query: same rows, padded lengths, masks), its FLOP/s and share of the peak.
- blackbox: ``BlackBox.score`` against the bare forward at exactly its shapes, for one user and for
  ``--many-users`` users' queries in one call, on the real and the tiny backbone.
- tried: each speed idea as a ratio to its alternative, with the score change it causes.
- options: multiple-choice scoring on ARC-Easy, the C = 4 options' log-likelihoods against letter label
  words per scored pair, and the option path (context once, options on its KV cache) against C full
  forwards per pair.
- federation: `flwr run` simulations (simulations/local_run.simulate) on the tiny backbone for
  ``--users`` users, full vs diagonal CMA-ES at ``--memory-users`` users with r = 500, and one round on
  the real backbone: wall time per round, framework ms per message, bytes, peak memory.
- scale: where a user's round goes (``simulations/profile_round``: py-spy over the last round of a run of
  the scale-1000 preset at ``--profile-users``, CPU ms per user per round by component and by process)
  and seconds per round vs users on the scale-10000 preset (``--scale-users``, up to 10,000), both on the
  scale task (BoolQ repeated, ``simulations/scale_task``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from cbp_fed.backbone import FrozenLM
from cbp_fed.prompts import PromptGenerator
from cbp_fed.service import BlackBox, Plan, Query

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("limit", "blackbox", "tried", "options", "federation", "scale")
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


# ------------------------------------------------------------------ sections
class Bench:
    """One bench run: arguments, clock, progress display and the sections' results."""

    def __init__(self, args: argparse.Namespace, sizes: Sizes, progress: Progress, previous: dict):
        self.args, self.sizes, self.progress, self.previous = args, sizes, progress, previous
        self.device = torch.device(args.device)
        self.clock = Clock(self.device)
        self.task, self.busy = None, False

    def start(self, name: str, steps: int) -> None:
        """A progress bar of ``steps`` steps for a section."""
        self.task, self.busy = self.progress.add_task(name, total=steps), False

    def step(self, text: str) -> None:
        """The previous step is done; say what runs now."""
        self.progress.update(self.task, advance=int(self.busy), description=text)
        self.busy = True

    def finish(self) -> None:
        self.progress.update(self.task, advance=int(self.busy))

    # -------------------------------------------------------------- limit
    def limit(self) -> dict:
        """The bare forward at a one-user query's shapes in fp32 and bf16, each timed beside a large
        matmul of its dtype (the machine's peak for it), so that its share of the peak is a ratio."""
        self.start("limit", 2)
        n = 8192 if self.device.type == "cuda" else 2048
        queries = make_queries(1, *self.sizes.tried)
        rows = []
        for dtype in ("fp32", "bf16"):
            self.step(f"limit: bare forward and {n}^3 matmul, {dtype}")
            rows.append(self.bare_speed(load_lm(self.args.backbone, dtype, self.args.device), queries, n))
        return {"matmul_n": n, "forward": rows, "query": list(self.sizes.tried)}

    def bare_speed(self, lm: FrozenLM, queries: list[Query], n: int) -> dict:
        """Tokens/s and FLOP/s of the bare forward at the BlackBox's shapes for ``queries``, and FLOP/s of
        three ``n x n`` products in the model's dtype timed beside it."""
        box = BlackBox(lm, prompt_source(lm), max_tokens=self.sizes.max_tokens)
        shapes, inputs = bare_inputs(box, queries)
        _, small = bare_inputs(box, make_queries(1, 1, 1))
        a, b = (torch.randn(n, n, device=lm.device).to(lm.dtype) for _ in range(2))
        matmuls = lambda: [a @ b for _ in range(3)]
        times = side_by_side(
            self.clock,
            self.sizes.reps,
            {"bare": lambda: bare_forward(lm, inputs), "matmul": matmuls},
            {"bare": lambda: bare_forward(lm, small), "matmul": matmuls},
        )
        flops, peak = forward_flops(lm, shapes), 3 * 2 * n**3
        seconds = min(times["bare"])
        return {
            "dtype": "bf16" if lm.dtype == torch.bfloat16 else "fp32",
            "chunks": len(shapes),
            "tokens": real_tokens(inputs),
            "padded_tokens": sum(rows * length for rows, length in shapes),
            "seconds": seconds,
            "tokens_per_s": real_tokens(inputs) / seconds,
            "flops_per_s": flops / seconds,
            "matmul_flops_per_s": peak / min(times["matmul"]),
            "share_of_peak": (flops / seconds) / (peak / min(times["matmul"])),
        }

    # -------------------------------------------------------------- blackbox
    def blackbox(self) -> dict:
        """BlackBox throughput as a ratio to the bare forward at its own shapes, 1 user and many users."""
        backbones = [self.args.backbone, "tiny-random"]
        self.start("blackbox", 2 * len(backbones))
        cases = [
            ("1 user", 1, self.sizes.one),
            (f"{self.sizes.many_users} users", self.sizes.many_users, self.sizes.many),
        ]
        rows = []
        for name in backbones:
            lm = load_lm(name, self.args.dtype, self.args.device)
            box = BlackBox(lm, prompt_source(lm), max_tokens=self.sizes.max_tokens)
            for case, users, (k, n) in cases:
                self.step(f"blackbox: {name}, {case}")
                rows.append({"backbone": name, "case": case} | self.blackbox_vs_bare(box, users, k, n))
        return {"rows": rows}

    def blackbox_vs_bare(self, box: BlackBox, users: int, k: int, n: int) -> dict:
        """``users`` queries of k candidates x n texts: ``score`` vs the bare forward at its chunks."""
        lm, queries, small = box.lm, make_queries(users, k, n), make_queries(1, 1, 1)
        shapes, inputs = bare_inputs(box, queries)
        _, small_inputs = bare_inputs(box, small)
        inside = ForwardTimer(lm.model.model, self.clock)
        shares = []
        for query in queries:  # tokenised as in a round (on arrival, before any scoring)
            box.encode(query)

        def score() -> None:
            with inside:
                total = self.clock(lambda: box.score(queries))
            shares.append(inside.seconds / total)

        times = side_by_side(
            self.clock,
            self.sizes.reps,
            {"blackbox": score, "bare": lambda: bare_forward(lm, inputs)},
            {"blackbox": lambda: box.score(small), "bare": lambda: bare_forward(lm, small_inputs)},
        )
        pairs, tokens = users * k * n, real_tokens(inputs)
        bb, bare = min(times["blackbox"]), min(times["bare"])
        return {
            "dtype": str(lm.dtype).removeprefix("torch."),
            "users": users,
            "candidates": k,
            "texts": n,
            "pairs": pairs,
            "tokens": tokens,
            "padded_tokens": sum(b * length for b, length in shapes),
            "chunks": len(shapes),
            "blackbox_s": bb,
            "bare_s": bare,
            "pairs_per_s": pairs / bb,
            "tokens_per_s": tokens / bb,
            "bare_tokens_per_s": tokens / bare,
            "ratio": 1 / speedup(times, "blackbox", "bare"),
            "ratio_spread": sorted(round(b / s, 3) for s, b in zip(times["blackbox"], times["bare"])),
            "forward_share": sorted(shares)[len(shares) // 2],
        }

    # -------------------------------------------------------------- tried
    def tried(self) -> dict:
        """Each speed idea timed against its alternative on the real backbone (and the tiny one where the
        idea is about overhead), with the change of the scores it causes."""
        self.start("tried", 8 + (self.device.type == "cpu") + self.args.compile)
        lm = load_lm(self.args.backbone, self.args.dtype, self.args.device)
        source = prompt_source(lm)
        box = BlackBox(lm, source, max_tokens=self.sizes.max_tokens)
        query = make_queries(1, *self.sizes.tried)
        small = make_queries(1, 1, 1)
        evaluation = self.evaluation_set()
        reference = box.score(evaluation)[0][0]
        tiny = load_lm("tiny-random", self.args.dtype, self.args.device)
        tiny_box = BlackBox(tiny, prompt_source(tiny), max_tokens=self.sizes.max_tokens)
        rows = [
            self.last_position_only(box, query),
            self.batching(box, 1, 1),
            self.batching(tiny_box, *self.sizes.one),
            self.one_source_call(tiny_box),
            self.length_sorted(box),
            *self.token_budgets(lm, source, query, small),
            self.token_cache(tiny_box),
            self.other_dtype(lm, source, query, small, evaluation, reference),
        ]
        if self.device.type == "cpu":
            rows.append(self.int8(lm, source, query, small, evaluation, reference))
        if self.args.compile:
            rows.append(self.compiled(lm, source, query, small, evaluation, reference))
        else:  # minutes to compile: keep the row of the last run that measured it
            rows += [r for r in self.previous.get("tried", {}).get("rows", []) if r["idea"] == "torch.compile"]
        return {"rows": rows, "query": list(self.sizes.tried), "eval_texts": self.sizes.eval_texts}

    def evaluation_set(self) -> list[Query]:
        """One query of ``eval_texts`` labelled BoolQ rows scored with the generator's z0 (labels kept in
        ``self.labels``): accuracy before and after a change that alters the arithmetic."""
        rows, words = examples("boolq", self.sizes.eval_texts, seed=1)
        self.labels = np.array([e.label for e in rows])
        z0 = np.zeros((1, R), np.float32)
        return [Query(z0, [e.passage for e in rows], [e.query for e in rows], list(words))]

    def compare(self, name, base, variant, queries, small, what, verdict) -> dict:
        """Time ``base`` and ``variant`` scoring ``queries`` side by side; ratio > 1 = the variant is faster."""
        times = side_by_side(
            self.clock,
            self.sizes.reps,
            {"base": lambda: base(queries), "variant": lambda: variant(queries)},
            {"base": lambda: base(small), "variant": lambda: variant(small)},
        )
        return {"idea": name, "what": what, "speedup": speedup(times, "base", "variant"), **verdict}

    def last_position_only(self, box: BlackBox, query: list[Query]) -> dict:
        self.step("tried: last position only")
        _, inputs = bare_inputs(box, query)
        _, small = bare_inputs(box, make_queries(1, 1, 1))
        times = side_by_side(
            self.clock,
            self.sizes.reps,
            {"full": lambda: bare_forward(box.lm, inputs, True), "last": lambda: bare_forward(box.lm, inputs)},
            {"full": lambda: bare_forward(box.lm, small, True), "last": lambda: bare_forward(box.lm, small)},
        )
        return {
            "idea": "last-position-only scoring",
            "what": "hidden states and C label rows vs full-vocabulary logits at every position",
            "speedup": speedup(times, "full", "last"),
            "kept": True,
            "why": "same scores (test_label_logits_equal_the_full_vocabulary_logits...), never the LM head",
        }

    def batching(self, box: BlackBox, k: int, n: int) -> dict:
        """Many users' queries in one call vs one call per user: the tiny backbone shows the per-call
        overhead, the real one the matrix efficiency of large batches."""
        self.step(f"tried: cross-user batching, {box.lm.name}")
        queries = make_queries(self.sizes.many_users, k, n)
        return self.compare(
            f"cross-user batching ({box.lm.name})",
            lambda qs: [box.score([q]) for q in qs],
            box.score,
            queries,
            make_queries(2, 1, 1),
            f"{len(queries)} users x {k} x {n} pairs in one call vs one call per user",
            {"kept": True, "why": "identical scores (test_batched_scores_equal_scores_one_query_at_a_time)"},
        )

    def one_source_call(self, box: BlackBox) -> dict:
        """All users' prompts from one ``source.pairs`` call vs one ``source(z, pooled)`` call per user."""
        self.step("tried: prompts in one call")
        queries = make_queries(self.sizes.many_users, *self.sizes.many)
        per_user = PerUserPrompts(box.lm, box.source, max_tokens=self.sizes.max_tokens)
        return self.compare(
            f"all users' prompts in one call ({box.lm.name})",
            per_user.score,
            box.score,
            queries,
            make_queries(2, 1, 1),
            f"{len(queries)} users x {self.sizes.many[0]} x {self.sizes.many[1]}: one source.pairs call vs one a user",
            {"kept": True, "why": "same prompts (test_pairs_are_the_prompts_of_the_chosen_candidate_and_text)"},
        )

    def length_sorted(self, box: BlackBox) -> dict:
        """Length-sorted chunks vs arrival order at the same token budget, on texts of varied lengths."""
        self.step("tried: length-sorted chunks")
        budget = 512
        queries = make_queries(2, self.sizes.tried[0], 2 * self.sizes.tried[1], task="sst2")
        sorted_box = BlackBox(box.lm, box.source, max_tokens=self.sizes.max_tokens, token_budget=budget)
        arrival = ArrivalOrder(box.lm, box.source, max_tokens=self.sizes.max_tokens, token_budget=budget)
        encoded = [sorted_box.encode(q) for q in queries]
        padded = [sum(b * n for b, n in x.plan(queries, encoded).shapes()) for x in (arrival, sorted_box)]
        return self.compare(
            "length-sorted chunks",
            arrival.score,
            sorted_box.score,
            queries,
            make_queries(1, 1, 1),
            f"SST-2 texts, {budget}-token chunks: padded tokens {padded[0]} in arrival order, {padded[1]} sorted",
            {"kept": True, "why": "same scores; less padding"},
        )

    def token_budgets(self, lm, source, query, small) -> list[dict]:
        self.step("tried: token budgets")
        base = BlackBox(lm, source, max_tokens=self.sizes.max_tokens)
        rows = []
        for budget in (256, 1024):
            other = BlackBox(lm, source, max_tokens=self.sizes.max_tokens, token_budget=budget)
            rows.append(
                self.compare(
                    f"token budget {budget}",
                    base.score,
                    other.score,
                    query,
                    small,
                    f"chunks of <= {budget} padded tokens vs the default {base.token_budget}",
                    {"kept": False, "why": "the default is kept unless a budget is clearly faster"},
                )
            )
        return rows

    def token_cache(self, box: BlackBox) -> dict:
        """Tokenising every text on every call vs once (cached by text), where it shows: the tiny backbone."""
        self.step("tried: tokenisation cache")

        def cold(queries):
            box.lm._token_cache.clear()
            return box.score(queries)

        queries = make_queries(self.sizes.many_users, *self.sizes.one)
        return self.compare(
            "tokenisation cached (tiny-random)",
            cold,
            box.score,
            queries,
            make_queries(1, 1, 1),
            f"{len(queries)} users x {self.sizes.one[0]} x {self.sizes.one[1]}: texts tokenised once vs on every call",
            {"kept": True, "why": "texts recur every step of a round"},
        )

    def with_scores(self, name, base_box, variant_box, query, small, evaluation, reference, what) -> dict:
        """``compare`` plus what the variant does to the scores of the evaluation set: max |change|,
        predictions that agree, accuracy with and without (kept only if faster and accuracy holds)."""
        row = self.compare(name, base_box.score, variant_box.score, query, small, what, {})
        scores = variant_box.score(evaluation)[0][0]
        acc = [float((s.argmax(1) == self.labels).mean()) for s in (reference, scores)]
        noise = float(np.sqrt(acc[0] * (1 - acc[0]) / len(self.labels)))
        row.update(
            max_score_change=float(np.abs(scores - reference).max()),
            agreement=float((scores.argmax(1) == reference.argmax(1)).mean()),
            accuracy=acc[0],
            accuracy_variant=acc[1],
        )
        row["kept"] = row["speedup"] > 1.05 and abs(acc[1] - acc[0]) <= noise
        row["why"] = (
            f"{row['speedup']:.2f}x, accuracy {100 * acc[0]:.1f}% -> {100 * acc[1]:.1f}% (noise {100 * noise:.1f}), "
            f"{100 * row['agreement']:.0f}% same predictions"
        )
        return row

    def other_dtype(self, lm, source, query, small, evaluation, reference) -> dict:
        other = "bf16" if lm.dtype == torch.float32 else "fp32"
        self.step(f"tried: {other}")
        twin = load_lm(self.args.backbone, other, self.args.device)
        return self.with_scores(
            f"{other} instead of {str(lm.dtype).removeprefix('torch.')}",
            BlackBox(lm, source, max_tokens=self.sizes.max_tokens),
            BlackBox(twin, source, max_tokens=self.sizes.max_tokens),
            query,
            small,
            evaluation,
            reference,
            "the same BlackBox with the backbone in the other dtype",
        )

    def int8(self, lm, source, query, small, evaluation, reference) -> dict:
        self.step("tried: int8 dynamic quantisation")
        quantised = load_lm(self.args.backbone, "fp32", "cpu")
        quantised.model = torch.ao.quantization.quantize_dynamic(quantised.model, {torch.nn.Linear}, dtype=torch.qint8)
        return self.with_scores(
            "int8 dynamic quantisation",
            BlackBox(lm, source, max_tokens=self.sizes.max_tokens),
            BlackBox(quantised, source, max_tokens=self.sizes.max_tokens),
            query,
            small,
            evaluation,
            reference,
            "every nn.Linear as int8 weights with per-batch activation scales (torch.ao quantize_dynamic)",
        )

    def compiled(self, lm, source, query, small, evaluation, reference) -> dict:
        self.step("tried: torch.compile (compiling)")
        twin = load_lm(self.args.backbone, self.args.dtype, self.args.device)
        twin.model.model = torch.compile(twin.model.model, dynamic=True)
        box = BlackBox(twin, source, max_tokens=self.sizes.max_tokens)
        started = time.perf_counter()
        box.score(small)
        compile_s = time.perf_counter() - started
        row = self.with_scores(
            "torch.compile",
            BlackBox(lm, source, max_tokens=self.sizes.max_tokens),
            box,
            query,
            small,
            evaluation,
            reference,
            f"inductor, dynamic shapes; compiling took {compile_s:.0f} s wall",
        )
        row.update(compile_s=compile_s, measured_by="python -m simulations.bench " + " ".join(sys.argv[1:]))
        return row

    # -------------------------------------------------------------- options
    def options(self) -> dict:
        """Multiple-choice scoring cost on ARC-Easy (1 user, the 'tried' query size): by the options vs by
        letters per scored pair, and the option path vs C full forwards per pair, side by side."""
        self.start("options", 2)
        lm = load_lm(self.args.backbone, self.args.dtype, self.args.device)
        source = prompt_source(lm)
        box = BlackBox(lm, source)  # the default max_tokens: ARC questions with their options listed fit whole
        naive = BlackBox(EveryOptionForward(lm.model, lm.tokenizer, lm.name), source)
        k, n = self.sizes.tried
        by_options, by_letters = arc_queries(k, n)
        small = arc_queries(1, 1, seed=1)
        tokens = []
        for query in (by_options, by_letters):
            before = box.meter.tokens
            box.score([query])
            tokens.append(box.meter.tokens - before)
        self.step("options: options vs letters")
        times = side_by_side(
            self.clock,
            self.sizes.reps,
            {"options": lambda: box.score([by_options]), "letters": lambda: box.score([by_letters])},
            {"options": lambda: box.score([small[0]]), "letters": lambda: box.score([small[1]])},
        )
        versus_letters = {
            "what": f"{k} x {n} ARC-Easy pairs: the 4 options' summed log-probs vs the logits of ' A'..' D' after "
            f"the listed options; tokens {tokens[0]:,} vs {tokens[1]:,}",
            "options_s_per_pair": min(times["options"]) / (k * n),
            "letters_s_per_pair": min(times["letters"]) / (k * n),
            "cost_ratio": speedup(times, "options", "letters"),  # > 1 = options cost more per pair
        }
        self.step("options: shared context vs C full forwards")
        versus_naive = self.compare(
            "context once, options on its KV cache",
            naive.score,
            box.score,
            [by_options],
            [small[0]],
            f"{k} x {n} ARC-Easy pairs: the option path vs 4 forwards of prompt + context + option per pair",
            {"max_score_change": float(np.abs(box.score([by_options])[0] - naive.score([by_options])[0]).max())},
        )
        dtype = str(lm.dtype).removeprefix("torch.")
        return {"rows": [versus_letters, versus_naive], "query": [k, n], "tokens": tokens, "dtype": dtype}

    # -------------------------------------------------------------- federation
    def federation(self) -> dict:
        """`flwr run` simulations: the users sweep and the memory pair on the tiny backbone, one real round."""
        sizes = self.sizes
        runs_dir = Path(self.args.out) / "runs"
        preset = lambda name: tomllib.loads((ROOT / "simulations" / f"{name}.toml").read_text())
        tiny = preset("scale-300") | {"num-rounds": 2, "diagonal": True}
        real = preset("real-100") | {"num-rounds": 1}
        if trained_generator():
            real["generator"] = str(GENERATOR)
        plan = [(f"tiny-{u}", tiny, u) for u in sizes.users]
        plan.append(
            (f"tiny-{sizes.memory_users}-full", tiny | {"diagonal": False, "num-rounds": 1}, sizes.memory_users)
        )
        if sizes.memory_users not in sizes.users:
            plan.append((f"tiny-{sizes.memory_users}", tiny | {"num-rounds": 1}, sizes.memory_users))
        plan.append((f"real-{sizes.real_users}", real, sizes.real_users))
        wanted = set(self.args.runs.split(",")) if self.args.runs else {label for label, _, _ in plan}
        kept = {r["run"]: r for r in self.previous.get("federation", {}).get("runs", []) if r["run"] not in wanted}
        self.start("federation", len(wanted))
        runs = []
        for label, settings, users in plan:
            if label in kept:
                runs.append(kept[label])
                continue
            self.step(f"federation: {label} ({users} users)")
            runs.append(run_federation(label, settings, users, runs_dir))
        return {"runs": runs, "fedbpt_state_bytes": fedbpt_state_bytes(R), "overhead_bytes": up_overhead(R)}

    # -------------------------------------------------------------- scale
    def scale(self) -> dict:
        """Issue 17: the per-component profile at ``profile_users`` and the seconds-per-round curve at
        ``scale_users``; ``--runs`` (e.g. profile-1000,scale-10000) reruns only those, keeping the others."""
        from simulations.profile_round import profile
        from simulations.scale_task import write

        sizes, out = self.sizes, Path(self.args.out)
        tasks = str(write(40, ROOT / ".state" / "scale"))
        preset = lambda name: tomllib.loads((ROOT / "simulations" / f"{name}.toml").read_text()) | {"tasks": tasks}
        plan = [(f"profile-{u}", u) for u in sizes.profile_users] + [(f"scale-{u}", u) for u in sizes.scale_users]
        wanted = set(self.args.runs.split(",")) if self.args.runs else {label for label, _ in plan}
        before = self.previous.get("scale", {})
        kept = {r["run"]: r for r in before.get("profiles", []) + before.get("runs", []) if r["run"] not in wanted}
        self.start("scale", len(wanted & {label for label, _ in plan}))
        profiles, runs = [], []
        for label, users in plan:
            if label in kept:
                (profiles if label.startswith("profile") else runs).append(kept[label])
                continue
            self.step(f"scale: {label} ({users} users)")
            if label.startswith("profile"):
                result = profile(preset("scale-1000"), users, out / "profile")
                profiles.append({"run": label, **{k: v for k, v in result.items() if k != "facts"}, **result["facts"]})
            else:
                runs.append(run_federation(label, preset("scale-10000"), users, out / "runs"))
        return {"profiles": profiles, "runs": runs}


class ArrivalOrder(BlackBox):
    """The BlackBox without the length sort: pairs in arrival order, cut greedily within the same token
    budget (each chunk padded to its own longest row). Only for the bench's comparison."""

    def plan(self, queries, encoded) -> Plan:
        sorted_plan = super().plan(queries, encoded)
        order = torch.argsort(sorted_plan.pairs)
        lengths = sorted_plan.lengths[order]
        chunks, begin, longest = [], 0, 0
        for i, length in enumerate(lengths.tolist()):
            if i > begin and (i - begin + 1) * max(longest, length) > self.token_budget:
                chunks.append((begin, i))
                begin, longest = i, 0
            longest = max(longest, length)
        chunks.append((begin, len(lengths)))
        return Plan(sorted_plan.rows[order], sorted_plan.pairs[order], lengths, chunks, sorted_plan.kinds[order])


class PerUserPrompts(BlackBox):
    """The BlackBox building prompts with one ``source(z, pooled)`` call per user (as before ``pairs``):
    only for the bench's comparison."""

    def _prompts(self, queries, encoded) -> torch.Tensor:
        pooled = self.lm.pooled([x for ids in encoded for x in ids]).split([len(ids) for ids in encoded])
        prompts = [
            self.source(torch.as_tensor(q.z, dtype=torch.float32, device=self.lm.device), p).flatten(0, 1)
            for q, p in zip(queries, pooled)
        ]
        return torch.cat(prompts).to(self.lm.dtype)


class EveryOptionForward(FrozenLM):
    """The naive option scorer: every option its own row ``[prefix ; prompt ; context ; option]``, so each
    pair's context runs C times; log-softmax at the option positions only. Only for the bench's comparison."""

    def option_logprobs(self, prompts, contexts, options) -> torch.Tensor:
        B, C = len(options), len(options[0])
        rows = [[*context, *option] for context, row in zip(contexts, options) for option in row]
        embeds, mask, positions, lengths = self.batch_inputs(prompts.repeat_interleave(C, 0), rows)
        hidden = self.model.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state
        targets, valid = self._option_grid([option for row in options for option in row])  # (B*C, S)
        first = hidden.shape[1] - lengths if self.padding_side == "left" else torch.zeros_like(lengths)
        steps = torch.arange(valid.shape[1], device=self.device)
        predictor = (first + lengths - valid.sum(1) - 1)[:, None] + steps  # (B*C, S): the column before each token
        row = torch.arange(B * C, device=self.device)
        picked = hidden[row[:, None], predictor.clamp(max=hidden.shape[1] - 1)]
        logprobs = self.token_logprobs(picked[valid], targets[valid])
        sums = torch.zeros(B * C, device=self.device).index_add(0, row.repeat_interleave(valid.sum(1)), logprobs)
        return sums.view(B, C)


# ------------------------------------------------------------------ federation helpers
def run_federation(label: str, settings: dict, users: int, runs_dir: Path) -> dict:
    """One `flwr run` (its log beside its folder); the figures of its last round."""
    from simulations.local_run import simulate

    folder = runs_dir / label
    shutil.rmtree(folder, ignore_errors=True)
    runs_dir.mkdir(parents=True, exist_ok=True)
    settings = {**settings, "min-users": users, "results-dir": str(runs_dir), "run-name": label}
    with (runs_dir / f"{label}.log").open("w") as log:
        facts = simulate(settings, users, folder, output=log)
    rounds_path = folder / "rounds.jsonl"
    rounds = [json.loads(line) for line in rounds_path.read_text().splitlines()] if rounds_path.exists() else []
    return round_figures(label, settings, users, facts, rounds)


def round_figures(label: str, settings: dict, users: int, facts: dict, rounds: list[dict]) -> dict:
    """The last round's figures: wall and forward seconds, framework ms per message, bytes, memory."""
    row = {
        "run": label,
        "users": users,
        "backbone": settings["backbone"],
        "diagonal": settings["diagonal"],
        "steps": settings["steps-per-round"],
        "popsize": settings["popsize"],
        "status": facts.get("status"),
        "peak_rss_gib": facts.get("peak_rss_gib"),
    }
    if not rounds:
        return row
    last = rounds[-1]
    totals = last["bytes"]["totals"]
    messages = totals["down"]["messages"] + totals["up"]["messages"]
    return row | {
        "rounds": len(rounds),
        "users_ok": last["users_ok"],
        "round_s": last["seconds"],
        "first_round_s": rounds[0]["seconds"],
        "forward_s": last["forward_seconds"],
        "messages": messages,
        "framework_ms_per_message": 1000 * (last["seconds"] - last["forward_seconds"]) / messages,
        "outside_forward_share": 1 - last["forward_seconds"] / last["seconds"],
        "up_bytes": last["bytes_up_per_user"],
        "up_wire_bytes": last["wire_up_per_user"],
        "up_floor_bytes": last.get("bytes_up_minimum_per_user"),
        "down_bytes": last["bytes_down_per_user"],
        "down_wire_bytes": last["wire_down_per_user"],
    }


def fedbpt_state_bytes(r: int) -> int:
    """Bytes of a pickled full-covariance pycma object at ``r`` after one generation: what FedBPT's
    reference design ships per user per round in each direction."""
    from cbp_fed.search import CMASearch, SearchConfig

    search = CMASearch(np.zeros(r), SearchConfig(popsize=6, budget=60), seed=0)
    population = search.ask()
    search.tell(np.arange(len(population), dtype=float))
    return len(search.to_bytes())


def up_overhead(r: int) -> dict[str, int]:
    """Flower's bytes for each up message of a round with every payload emptied (no candidates, texts,
    indices or z): the per-message overhead that the measured bytes exceed the payload floor by."""
    from cbp_fed import protocol as wire
    from cbp_fed.comm import deflated_size

    population = wire.population(np.zeros((0, r), np.float32), [])
    begin = wire.population(np.zeros((0, r), np.float32), [])
    begin["texts"] = wire.texts([], [], [], "boolq", "commonsense", 0)
    finish = wire.result(np.zeros(0, np.float32), dict.fromkeys(wire.RESULT_METRICS, 0.0))
    return {"begin": deflated_size(begin), "step": deflated_size(population), "finish": deflated_size(finish)}


# ------------------------------------------------------------------ report
def machine(args: argparse.Namespace) -> dict:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    info = {
        "processor": names[0] if names else platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "timer": "wall after cuda synchronize" if args.device.startswith("cuda") else "process CPU time",
    }
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def markdown(bench: dict) -> str:
    """bench.md: the README's tables from bench.json (whichever sections it holds)."""
    parts = [f"# Bench\n\nMachine: {json.dumps(bench.get('machine', {}))}\n"]
    for name, render in (("limit", md_limit), ("blackbox", md_blackbox), ("tried", md_tried), ("options", md_options)):
        if name in bench:
            parts.append(render(bench[name]) + provenance(bench, name))
    if "federation" in bench:
        parts.append(md_federation(bench["federation"]) + provenance(bench, "federation"))
    if "scale" in bench:
        parts.append(md_scale(bench["scale"]) + provenance(bench, "scale"))
    return "\n".join(parts)


def provenance(bench: dict, name: str) -> str:
    """The command that made a section, how long it took and the machine's load (1-min average, start/end)."""
    section = bench[name]
    load = "/".join(f"{x:.1f}" for x in section.get("load", []))
    return f"\n\n`{bench['commands'][name]}` ({section['wall_s']:.0f} s wall, load average {load} on this machine)\n"


def md_limit(limit: dict) -> str:
    query = limit["query"]
    lines = [
        "## The limit\n",
        f"Bare forward at the BlackBox's shapes (1 user, {query[0]} candidates x {query[1]} BoolQ texts), each dtype "
        f"timed beside three {limit['matmul_n']}^3 matmuls of that dtype (the peak):\n",
        "| dtype | chunks | tokens (padded) | tokens/s | forward GFLOP/s | matmul GFLOP/s | forward / matmul peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in limit["forward"]:
        lines.append(
            f"| {r['dtype']} | {r['chunks']} | {r['tokens']:,} ({r['padded_tokens']:,}) | {r['tokens_per_s']:,.0f} | "
            f"{r['flops_per_s'] / 1e9:,.1f} | {r['matmul_flops_per_s'] / 1e9:,.1f} | {100 * r['share_of_peak']:.0f}% |"
        )
    return "\n".join(lines)


def md_blackbox(blackbox: dict) -> str:
    lines = [
        "## BlackBox vs the bare forward at the same shapes\n",
        "| backbone | dtype | case | pairs (k x n per user) | tokens (padded) | chunks | pairs/s | tokens/s "
        "| bare forward tokens/s | BlackBox / bare (per-rep range) | model forward inside a BlackBox call |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in blackbox["rows"]:
        spread = r["ratio_spread"]
        lines.append(
            f"| {r['backbone']} | {r['dtype']} | {r['case']} | {r['pairs']:,} ({r['candidates']} x {r['texts']}) | "
            f"{r['tokens']:,} ({r['padded_tokens']:,}) | {r['chunks']} | {r['pairs_per_s']:,.1f} | "
            f"{r['tokens_per_s']:,.0f} | {r['bare_tokens_per_s']:,.0f} | **{r['ratio']:.2f}** "
            f"({spread[0]:.2f}-{spread[-1]:.2f}) | **{100 * r['forward_share']:.1f}%** |"
        )
    lines.append(
        "\nBlackBox / bare: the fastest of each side by side (tokens/s ratio). Model forward inside a call: the "
        "time in the decoder's forward over the whole `score` call (median of the repetitions), measured within "
        "each call, so the machine's load cannot tilt it."
    )
    return "\n".join(lines)


def md_tried(tried: dict) -> str:
    lines = [
        "## What was tried\n",
        f"Speed-up of each idea over its alternative (> 1 = the idea is faster), 1 user x {tried['query'][0]} "
        f"candidates x {tried['query'][1]} BoolQ texts unless said; score changes on {tried['eval_texts']} "
        "labelled BoolQ texts.\n",
        "| idea | what | speed-up | kept | why |",
        "|---|---|---|---|---|",
    ]
    for r in tried["rows"]:
        why = r["why"] + (f" (measured by `{r['measured_by']}`)" if "measured_by" in r else "")
        lines.append(
            f"| {r['idea']} | {r['what']} | {r['speedup']:.2f} | {'kept' if r['kept'] else 'dropped'} | {why} |"
        )
    return "\n".join(lines)


def md_options(options: dict) -> str:
    versus_letters, versus_naive = options["rows"]
    k, n = options["query"]
    return "\n".join(
        [
            "## Multiple choice: options vs letters\n",
            f"1 user x {k} candidates x {n} ARC-Easy texts, C = 4, {options['dtype']}; tokens scored "
            f"{options['tokens'][0]:,} by the options, {options['tokens'][1]:,} by letters.\n",
            "| comparison | what | ratio |",
            "|---|---|---|",
            f"| cost per pair, options / letters | {versus_letters['what']}; "
            f"{1e3 * versus_letters['options_s_per_pair']:.1f} vs {1e3 * versus_letters['letters_s_per_pair']:.1f} "
            f"ms per pair | {versus_letters['cost_ratio']:.2f} |",
            f"| speed-up of {versus_naive['idea']} | {versus_naive['what']} (max score change "
            f"{versus_naive['max_score_change']:.1e}) | {versus_naive['speedup']:.2f} |",
        ]
    )


def md_federation(fed: dict) -> str:
    overhead = fed["overhead_bytes"]
    lines = [
        "## The federation (flwr run, Ray, wall time, last round of each run)\n",
        "| run | users (ok) | CMA-ES | s/round (first) | BlackBox s | outside BlackBox | framework ms/msg | "
        "up B/user/round | floor + Flower overhead | up / that | down B/user/round | vs FedBPT ref. | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in fed["runs"]:
        if "round_s" not in r:
            lines.append(f"| {r['run']} | {r['users']} | - | failed: {r['status']} |" + " |" * 9)
            continue
        expected = r["up_floor_bytes"] + overhead["begin"] + (r["steps"] - 1) * overhead["step"] + overhead["finish"]
        fedbpt = 2 * fed["fedbpt_state_bytes"] / (r["up_bytes"] + r["down_bytes"])
        lines.append(
            f"| {r['run']} | {r['users']} ({r['users_ok']}) | {'diagonal' if r['diagonal'] else 'full'} | "
            f"{r['round_s']:.1f} ({r['first_round_s']:.1f}) | {r['forward_s']:.1f} | "
            f"{100 * r['outside_forward_share']:.0f}% | {r['framework_ms_per_message']:.1f} | {r['up_bytes']:,.0f} | "
            f"{expected:,.0f} | {r['up_bytes'] / expected:.3f} | {r['down_bytes']:,.0f} | {fedbpt:,.0f}x less | "
            f"{r['peak_rss_gib']} |"
        )
    lines.append(
        f"\nFedBPT's reference design ships the pickled full-covariance pycma object both ways per user per round: "
        f"2 x {fed['fedbpt_state_bytes']:,} bytes at r = {R}. Flower's overhead per up message (payload emptied): "
        f"begin {overhead['begin']}, step {overhead['step']}, finish {overhead['finish']} bytes."
    )
    return "\n".join(lines)


def md_scale(scale: dict) -> str:
    """The profile table (ms per user per round by component and process) and the users curve."""
    profiles = scale.get("profiles", [])
    lines = ["## Ten thousand users: where a user's round goes (issue 17)\n"]
    if profiles:
        names = list(dict.fromkeys(name for p in profiles for name in p["components"]))
        lines += [
            "CPU ms per user in the last round (py-spy samples of every process of the run, waits left out), "
            "scale-1000 preset:\n",
            "| component | " + " | ".join(f"{p['users']} users" for p in profiles) + " |",
            "|---|" + "---|" * len(profiles),
        ]
        lines += [f"| {n} | " + " | ".join(f"{p['components'].get(n, 0):.1f}" for p in profiles) + " |" for n in names]
        kinds = list(dict.fromkeys(k for p in profiles for k in p["processes"]))
        lines += ["", "| process (the OS's CPU count) | " + " | ".join(f"{p['users']} users" for p in profiles) + " |"]
        lines.append("|---|" + "---|" * len(profiles))
        lines += [f"| {k} | " + " | ".join(f"{p['processes'].get(k, 0):.1f}" for p in profiles) + " |" for k in kinds]
        lines += [
            "",
            "| users | round s | BlackBox forward s | framework ms per user per round (wall) | users ok |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {p['users']} | {p['round_s']:.1f} | {p['forward_s']:.1f} | **{p['framework_ms_per_user']:.1f}** | "
            f"{p['users_ok']} |"
            for p in profiles
        ]
        top = profiles[-1]
        lines += [
            "",
            f"The heaviest stacks of the top three components at {top['users']} users, innermost frame first "
            f"(py-spy's collapsed stacks, for any flame-graph tool: `profile/profile-{top['users']}.txt`):\n",
        ]
        for name, stacks in top.get("top_stacks", {}).items():
            lines.append(f"- {name}:")
            lines += [f"  - {n} samples: `{' <- '.join(reversed(s.split(';')))[:400]}`" for s, n in stacks[:3]]
    runs = [r for r in scale.get("runs", []) if "round_s" in r]
    if runs:
        lines += [
            "\nSeconds per round vs users, scale-10000 preset (last round):\n",
            "| users (ok) | s/round (first) | BlackBox s | framework ms per user per round | ms/msg | peak GiB |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['users']} ({r['users_ok']}) | {r['round_s']:.1f} ({r['first_round_s']:.1f}) | "
            f"{r['forward_s']:.1f} | {1000 * (r['round_s'] - r['forward_s']) / r['users']:.1f} | "
            f"{r['framework_ms_per_message']:.1f} | "
            f"{r['peak_rss_gib']} |"
            for r in runs
        ]
    return "\n".join(lines)


def plot_scaling(fed: dict, path: Path, scale: dict | None = None):
    """scaling.png, two panels over users (tiny backbone, diagonal CMA-ES), one y axis each: seconds per
    round (wall and in the BlackBox forward), and framework ms per message (the round outside the
    forward, per message). Returns the figure, or None without such runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(
        (r for r in fed.get("runs", []) if r["backbone"] == "tiny-random" and r["diagonal"] and "round_s" in r),
        key=lambda r: r["users"],
    )
    large = sorted((r for r in (scale or {}).get("runs", []) if "round_s" in r), key=lambda r: r["users"])
    if not runs and not large:
        return None
    fig, (seconds, framework) = plt.subplots(1, 2, figsize=(9, 3.8), layout="constrained")
    presets = (
        (runs, "scale-300 preset (SST-2, federation section)", "o", "C0"),
        (large, "scale-10000 preset", "D", "C2"),
    )
    for series, label, marker, color in presets:
        if series:
            users = [r["users"] for r in series]
            seconds.plot(users, [r["round_s"] for r in series], f"{marker}-", color=color, label=f"round, {label}")
            seconds.plot(
                users,
                [r["forward_s"] for r in series],
                f"{marker}--",
                color=color,
                alpha=0.6,
                label=f"BlackBox forward, {label}",
            )
            framework.plot(users, [r["framework_ms_per_message"] for r in series], f"{marker}-", color=color)
    runs = runs + large
    users = sorted({r["users"] for r in runs})
    seconds.set(xscale="log", yscale="log", ylabel="seconds per round", title="Time per round")
    low, high = min(r["forward_s"] for r in runs), max(r["round_s"] for r in runs)
    seconds.set_yticks([t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if low / 2 < t < 2 * high])
    seconds.yaxis.set_major_formatter("{x:g}")
    fig.legend(loc="outside lower left", ncols=2, fontsize=8)  # below the panels: it covers no line
    framework.set(
        xscale="log",
        ylabel="ms per message",
        ylim=(0, 1.2 * max(r["framework_ms_per_message"] for r in runs)),
        title="Framework time per message\n(round outside the forward / messages)",
    )
    for ax in (seconds, framework):
        ax.set_xticks(users, [str(u) for u in users])
        ax.set_xlabel("users (tiny backbone, diagonal CMA-ES)")
        ax.minorticks_off()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig


# ------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Sizes]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    parser.add_argument("--quick", action="store_true", help="smaller shapes and runs (a few minutes)")
    parser.add_argument("--backbone", default="smollm2-135m", help="the real backbone (registry name, folder, hub id)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", help="the BlackBox's dtype: auto (as the app), fp32, bf16")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on a CPU (CPU time is per core)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile in 'tried'")
    parser.add_argument("--one", help="one user's query, CANDIDATESxTEXTS (default 6x16)")
    parser.add_argument("--many", help="each user's query in the many-users case, CANDIDATESxTEXTS (default 1x1)")
    parser.add_argument("--tried", help="the query of 'limit' and 'tried', CANDIDATESxTEXTS (default 4x4)")
    parser.add_argument("--many-users", type=int, help="users whose queries are scored in one call (default 100)")
    parser.add_argument("--users", help="users of the federation sweep, comma-separated (default 10,30,100,300)")
    parser.add_argument("--reps", type=int, help="timed repetitions per comparison (default 3)")
    parser.add_argument("--runs", help="federation, scale: rerun only these runs (e.g. tiny-300), keep the others'")
    parser.add_argument("--profile-users", help="scale: users of the profiled runs, comma-separated (default 100,1000)")
    parser.add_argument("--scale-users", help="scale: users of the curve, comma-separated (default 10,...,10000)")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench"))
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    sizes = QUICK if args.quick else Sizes()
    shape = lambda text: tuple(int(x) for x in text.lower().split("x"))
    overrides = {
        "one": args.one and shape(args.one),
        "many": args.many and shape(args.many),
        "tried": args.tried and shape(args.tried),
        "many_users": args.many_users,
        "reps": args.reps,
        "users": args.users and tuple(int(u) for u in args.users.split(",")),
        "profile_users": args.profile_users and tuple(int(u) for u in args.profile_users.split(",")),
        "scale_users": args.scale_users and tuple(int(u) for u in args.scale_users.split(",")),
    }
    return args, replace(sizes, **{k: v for k, v in overrides.items() if v})


def main(argv: list[str] | None = None) -> int:
    args, sizes = parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench.json"
    bench = json.loads(path.read_text()) if path.exists() else {}
    bench["machine"] = machine(args)
    command = "python -m simulations.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    console = Console()
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        runner = Bench(args, sizes, progress, dict(bench))
        for name in args.only.split(","):
            started, load = time.time(), os.getloadavg()[0]
            result = getattr(runner, name)()
            bench[name] = result | {"wall_s": round(time.time() - started, 1), "load": [load, os.getloadavg()[0]]}
            runner.finish()
            bench.setdefault("commands", {})[name] = command.strip()
            path.write_text(json.dumps(bench, indent=2, default=float) + "\n")
    (out / "bench.md").write_text(markdown(bench))
    if "federation" in bench or "scale" in bench:
        plot_scaling(bench.get("federation", {}), out / "scaling.png", bench.get("scale"))
    console.print((out / "bench.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
