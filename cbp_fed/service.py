"""BlackBox: the provider's endpoint. Users send candidates and texts; they get the scores of C choices.

A query is what one user sends for one step: candidate task vectors ``z: (k, r)``, its formatted
input texts (passage + query parts, n of them), the task's C label words and, for multiple-choice
tasks, each text's C answer options. The answer is ``scores: (k, n, C)`` for every (candidate, example)
pair: the logits of the label words or, with options, each option's log-likelihood after the text
(lm-evaluation-harness style, optionally per character). Labels never reach the provider.

``score`` takes the queries of many users at once and runs them as one batched computation:
all (candidate, example) pairs are sorted by length and cut into chunks of at most
``token_budget`` padded tokens, so short inputs are not padded to long ones and the forward sees
large batches; option pairs and label-word pairs go in separate chunks. It counts calls (one call =
one candidate scored on its batch, as in BBT) and tokens (options' included).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .backbone import FrozenLM

PROMPT_SLICE = 4096
"""Pairs whose prompts are generated at once (fp32 intermediates of ~PROMPT_SLICE x t x d floats)."""


class QueryError(ValueError):
    """A query the BlackBox refuses; the message names what is wrong."""


@dataclass(frozen=True)
class Query:
    """One user's request for one step.

    z: ``(k, r)`` float candidates; passages/queries: n strings each (passage may be "", it is the
    part truncated when too long); label_words: C strings like " yes".
    options: None (score the label words) or n lists of C answer options like " Paris", continuations
    of their text scored by their summed token log-probabilities; label_words then only name the C
    choices. length_norm: with options, divide each option's score by its characters (acc_norm).
    """

    z: np.ndarray
    passages: Sequence[str]
    queries: Sequence[str]
    label_words: Sequence[str]
    options: Sequence[Sequence[str]] | None = None
    length_norm: bool = False


@dataclass(frozen=True)
class Limits:
    """Sizes a query may have; anything larger is refused before any compute is spent."""

    max_candidates: int = 256
    max_texts: int = 512
    max_chars: int = 32_000
    max_total_chars: int = 2_000_000
    max_label_words: int = 10
    max_label_chars: int = 64
    max_option_chars: int = 1000
    max_option_tokens: int = 96
    max_abs_z: float = 1e4


@dataclass
class Meter:
    """What the provider has computed so far."""

    calls: int = 0
    pairs: int = 0
    tokens: int = 0
    forwards: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Plan:
    """The forward order of one ``score`` call (``P`` pairs in total).

    rows: ``(P, 3)`` (query u, candidate c, example e) sorted by kind, then length, longest first;
    pairs: ``(P,)`` each row's pair number in (u, c, e) order (the row of the flattened prompts);
    lengths: ``(P,)`` tokens of each sequence (prefix + prompt + text, + all its options' tokens);
    chunks: ``[begin, end)`` row ranges, one forward each (for options: the contexts, then the options on
    their cache); kinds: ``(P,)`` each row's number of options, 0 for label words.
    """

    rows: torch.Tensor
    pairs: torch.Tensor
    lengths: torch.Tensor
    chunks: list[tuple[int, int]]
    kinds: torch.Tensor

    def shapes(self) -> list[tuple[int, int]]:
        """``(rows, padded length)`` of each chunk's forward: what a raw forward at the same shapes runs (for
        an option chunk the length counts all options: the tokens it runs, not the shape)."""
        return [(end - begin, int(self.lengths[begin:end].max())) for begin, end in self.chunks]


class BlackBox:
    """Frozen LM + prompt source behind a validated, batched scoring endpoint.

    Args:
        lm: the frozen backbone.
        source: a prompt source ``(k, r), (n, d) -> (k, n, t, d)`` (see ``prompts``).
        max_tokens: per text with its longest option; longer passages are cut to a window (``FrozenLM.encode``).
        token_budget: padded tokens per forward chunk (memory/speed trade-off).
    """

    def __init__(
        self,
        lm: FrozenLM,
        source: torch.nn.Module,
        max_tokens: int = 256,
        token_budget: int = 8192,
        limits: Limits = Limits(),
    ):
        self.lm, self.source = lm, source
        self.max_tokens, self.token_budget, self.limits = max_tokens, token_budget, limits
        self.meter = Meter()

    def validate(self, query: Query) -> None:
        """Raise ``QueryError`` naming the first problem of ``query``."""
        z, lim = query.z, self.limits
        if not isinstance(z, np.ndarray) or z.ndim != 2:
            raise QueryError(f"z must be a 2-D array (k, r); got {getattr(z, 'shape', type(z))}")
        if z.shape[1] != self.source.r:
            raise QueryError(f"z has {z.shape[1]} columns; this prompt source takes r={self.source.r}")
        if not 1 <= z.shape[0] <= lim.max_candidates:
            raise QueryError(f"{z.shape[0]} candidates; allowed 1..{lim.max_candidates}")
        if not np.issubdtype(z.dtype, np.floating):
            raise QueryError(f"z must be floating point, got {z.dtype}")
        if not np.isfinite(z).all():
            raise QueryError("z contains NaN or infinite values")
        if np.abs(z).max(initial=0.0) > lim.max_abs_z:
            raise QueryError(f"|z| exceeds {lim.max_abs_z}")
        n = len(query.queries)
        if len(query.passages) != n:
            raise QueryError(f"{len(query.passages)} passages for {n} queries")
        if not 1 <= n <= lim.max_texts:
            raise QueryError(f"{n} texts; allowed 1..{lim.max_texts}")
        if not 2 <= len(query.label_words) <= lim.max_label_words:
            raise QueryError(f"{len(query.label_words)} label words; allowed 2..{lim.max_label_words}")
        if not all(isinstance(w, str) and 0 < len(w) <= lim.max_label_chars for w in query.label_words):
            raise QueryError(f"label words must be strings of 1..{lim.max_label_chars} characters")
        self._check_options(query)
        options = query.options or [()] * n
        for i, (p, q, o) in enumerate(zip(query.passages, query.queries, options)):
            if not isinstance(p, str) or not isinstance(q, str) or not q:
                raise QueryError(f"text {i} must be a string pair with a non-empty query")
            chars = len(p) + len(q) + sum(map(len, o))
            if chars > lim.max_chars:
                raise QueryError(f"text {i} has {chars} characters with its options; allowed {lim.max_chars}")
        total = sum(len(p) + len(q) + sum(map(len, o)) for p, q, o in zip(query.passages, query.queries, options))
        if total > lim.max_total_chars:
            raise QueryError(f"texts have {total} characters in all; allowed {lim.max_total_chars}")
        try:
            self.lm.label_token_ids(query.label_words)
        except ValueError as err:
            raise QueryError(str(err)) from err
        self._check_option_tokens(query)

    def _check_options(self, query: Query) -> None:
        """``options``: None, or n lists of C (= label words) non-empty strings; ``length_norm``: a bool, True
        only with options (it divides option scores)."""
        options, n, C, most = query.options, len(query.queries), len(query.label_words), self.limits.max_option_chars
        if not isinstance(query.length_norm, bool):
            raise QueryError(f"length_norm must be a bool, got {type(query.length_norm).__name__}")
        if options is None:
            if query.length_norm:
                raise QueryError("length_norm needs options: it divides each option's score by its characters")
            return
        if not isinstance(options, (list, tuple)) or len(options) != n:
            raise QueryError(f"options must be {n} lists, one per text")
        for i, row in enumerate(options):
            if not isinstance(row, (list, tuple)) or len(row) != C:
                raise QueryError(f"text {i} needs {C} options, one per label word; got {row!r:.80}")
            for j, option in enumerate(row):
                if not isinstance(option, str) or not 0 < len(option) <= most:
                    raise QueryError(f"option {j} of text {i} must be a string of 1..{most} characters")

    def _check_option_tokens(self, query: Query) -> None:
        """Every option tokenises to 1..``max_option_tokens`` tokens."""
        most = self.limits.max_option_tokens
        for i, row in enumerate(query.options or ()):
            for j, option in enumerate(row):
                try:
                    count = len(self.lm.option_ids(option))
                except ValueError as err:
                    raise QueryError(f"option {j} of text {i}: {err}") from err
                if count > most:
                    raise QueryError(f"option {j} of text {i} has {count} tokens; allowed {most}")

    def encode(self, query: Query) -> list[list[int]]:
        """Token ids of the query's texts, each fitting ``max_tokens`` together with its longest option
        (passages cut to the window that best matches the query: ``FrozenLM.encode``)."""
        options = query.options or [()] * len(query.queries)
        encoded = []
        for i, (p, q, o) in enumerate(zip(query.passages, query.queries, options)):
            try:
                encoded.append(self.lm.encode(p, q, self.max_tokens, o))
            except ValueError as err:
                raise QueryError(f"text {i}: {err}") from err
        return encoded

    def option_ids(self, query: Query) -> list[list[list[int]]] | None:
        """Token ids of the query's options, ``n x C`` lists (``FrozenLM.option_ids``); None without options."""
        return None if query.options is None else [[self.lm.option_ids(o) for o in row] for row in query.options]

    @torch.no_grad()
    def score(self, queries: Sequence[Query]) -> list[np.ndarray]:
        """Scores ``(k, n, C)`` float32 for each query, computed in one batched pass over all of them."""
        if not queries:
            return []
        started = time.perf_counter()
        for query in queries:
            self.validate(query)
        encoded = [self.encode(q) for q in queries]
        options = [self.option_ids(q) for q in queries]
        prompts = self._prompts(queries, encoded)
        plan = self.plan(queries, encoded)
        hidden = torch.empty(len(plan.pairs), self.lm.d, dtype=self.lm.dtype, device=self.lm.device)
        chosen = torch.empty(len(plan.pairs), int(plan.kinds.max()), device=self.lm.device)
        for begin, end in plan.chunks:
            rows = plan.rows[begin:end].tolist()
            contexts, chunk_prompts = [encoded[u][e] for u, _, e in rows], prompts[plan.pairs[begin:end]]
            if plan.kinds[begin]:
                part = self.lm.option_logprobs(chunk_prompts, contexts, [options[u][e] for u, _, e in rows])
                chosen[begin:end, : part.shape[1]] = part
            else:
                hidden[begin:end] = self.lm.last_hidden(chunk_prompts, contexts)
            self.meter.forwards += 1
        scores = self._assemble(queries, encoded, plan, hidden, chosen)
        self.meter.calls += sum(q.z.shape[0] for q in queries)
        self.meter.pairs += len(plan.pairs)
        self.meter.tokens += int(plan.lengths.sum()) - len(plan.pairs) * len(self.lm.prefix_ids)
        self.meter.seconds += time.perf_counter() - started
        return scores

    def plan(self, queries: Sequence[Query], encoded: Sequence[Sequence[Sequence[int]]]) -> Plan:
        """All (query, candidate, example) pairs grouped by kind (label words first, then option queries by
        their C), sorted by sequence length within a kind, longest first, and cut into chunks of one kind
        and at most ``token_budget`` padded tokens (``rows x longest``; an over-long row alone). An option
        pair's length counts its context and all its options' tokens.

        Pair ``(u, c, e)`` is number ``offset_u + c * n_u + e`` in the order of ``_prompts``.
        """
        extra = len(self.lm.prefix_ids) + self.source.t
        rows, lengths, kinds = [], [], []
        for u, (q, ids) in enumerate(zip(queries, encoded)):
            options = self.option_ids(q) or [[]] * len(ids)
            for c in range(q.z.shape[0]):
                rows += [(u, c, e) for e in range(len(ids))]
                lengths += [len(x) + extra + sum(map(len, o)) for x, o in zip(ids, options)]
                kinds += [len(o) for o in options]
        rows_t = torch.tensor(rows, dtype=torch.long).reshape(-1, 3)
        lengths_t, kinds_t = torch.tensor(lengths, dtype=torch.long), torch.tensor(kinds, dtype=torch.long)
        order = torch.argsort(-lengths_t, stable=True)  # ties keep (u, c, e) order: deterministic chunks
        order = order[torch.argsort(kinds_t[order], stable=True)]
        rows_t, lengths_t, kinds_t = rows_t[order], lengths_t[order], kinds_t[order]
        return Plan(rows_t, order, lengths_t, self._chunks(lengths_t.tolist(), kinds_t.tolist()), kinds_t)

    def _prompts(self, queries: Sequence[Query], encoded: Sequence[Sequence[Sequence[int]]]) -> torch.Tensor:
        """Every pair's soft prompt, ``(pairs, t, d)`` in the model's dtype and (u, c, e) order, from one
        ``source.pairs`` call over all users' stacked candidates ``(K, r)`` and pooled texts ``(N, d)``."""
        device = self.lm.device
        z = torch.as_tensor(np.concatenate([q.z for q in queries]), dtype=torch.float32, device=device)
        pooled = self.lm.pooled([x for ids in encoded for x in ids])
        candidate, text, k_seen, n_seen = [], [], 0, 0
        for q, ids in zip(queries, encoded):
            k, n = q.z.shape[0], len(ids)
            candidate.append(torch.arange(k_seen, k_seen + k).repeat_interleave(n))
            text.append(torch.arange(n_seen, n_seen + n).repeat(k))
            k_seen, n_seen = k_seen + k, n_seen + n
        candidate, text = torch.cat(candidate).to(device), torch.cat(text).to(device)
        out = torch.empty(len(candidate), self.source.t, self.lm.d, dtype=self.lm.dtype, device=device)
        for begin in range(0, len(candidate), PROMPT_SLICE):  # bounded fp32 intermediates
            end = begin + PROMPT_SLICE
            out[begin:end] = self.source.pairs(z, pooled, candidate[begin:end], text[begin:end])
        return out

    def _assemble(
        self,
        queries: Sequence[Query],
        encoded: Sequence[Sequence[Sequence[int]]],
        plan: Plan,
        hidden: torch.Tensor,
        chosen: torch.Tensor,
    ) -> list[np.ndarray]:
        """Each query's ``(k, n, C)`` scores from the plan-order results: label-word queries' from the last
        hidden states ``hidden: (pairs, d)``, one ``(rows, d) @ (d, C)`` product per distinct set of label
        words (usually one for all users); option queries' from their log-likelihoods ``chosen: (pairs, C')``,
        divided by the options' characters when ``length_norm``.
        """
        by_pair, chosen_by_pair = torch.empty_like(hidden), torch.empty_like(chosen)
        by_pair[plan.pairs], chosen_by_pair[plan.pairs] = hidden, chosen  # back to (u, c, e) order
        sizes = [q.z.shape[0] * len(ids) for q, ids in zip(queries, encoded)]
        offsets = np.cumsum([0, *sizes])
        scores = [
            np.empty((q.z.shape[0], len(ids), len(q.label_words)), np.float32) for q, ids in zip(queries, encoded)
        ]
        groups: dict[tuple[str, ...], list[int]] = {}
        for u, q in enumerate(queries):
            if q.options is None:
                groups.setdefault(tuple(q.label_words), []).append(u)
                continue
            part = chosen_by_pair[offsets[u] : offsets[u + 1], : len(q.label_words)].cpu().numpy()
            scores[u][...] = part.reshape(scores[u].shape)
            if q.length_norm:
                scores[u] /= np.array([[len(o) for o in row] for row in q.options], np.float32)
        owner = torch.repeat_interleave(torch.arange(len(queries)), torch.tensor(sizes, dtype=torch.long))
        for words, users in groups.items():
            selected = torch.isin(owner, torch.tensor(users)).nonzero().squeeze(1)
            logits = self.lm.label_logits(by_pair[selected], self.lm.label_token_ids(words)).cpu().numpy()
            for u, part in zip(users, np.split(logits, np.cumsum([sizes[u] for u in users])[:-1])):
                scores[u][...] = part.reshape(scores[u].shape)
        return scores

    def _chunks(self, lengths: list[int], kinds: list[int]) -> list[tuple[int, int]]:
        """``[begin, end)`` ranges of rows sorted by kind, then length (descending), each of one kind and with
        a padded size ``rows x longest`` within the token budget (a single over-long row gets its own chunk)."""
        chunks, begin = [], 0
        for i in range(1, len(lengths) + 1):
            if i == len(lengths) or kinds[i] != kinds[begin] or (i - begin + 1) * lengths[begin] > self.token_budget:
                chunks.append((begin, i))
                begin = i
        return chunks


def accuracy(scores: np.ndarray, labels: Sequence[int]) -> float:
    """Fraction of examples whose top label-word score is the true label; scores ``(n, C)``."""
    return float(np.mean(np.argmax(scores, axis=-1) == np.asarray(labels)))


__all__ = ["BlackBox", "Query", "QueryError", "Limits", "Meter", "Plan", "accuracy"]
