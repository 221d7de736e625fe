"""The in-process sections: the hardware limit, the BlackBox against the bare forward, what was tried,
multiple-choice option scoring. One process, torch on ``--threads`` threads, every comparison side by side."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from rich.progress import Progress

from cbp_fed.backbone import FrozenLM
from cbp_fed.service import BlackBox, Plan, Query
from simulations.bench.measure import (
    Clock,
    ForwardTimer,
    R,
    Sizes,
    arc_queries,
    bare_forward,
    bare_inputs,
    examples,
    forward_flops,
    load_lm,
    make_queries,
    prompt_source,
    real_tokens,
    side_by_side,
    speedup,
)


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
