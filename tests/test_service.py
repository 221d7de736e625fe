"""BlackBox: validation names the problem; batching across users does not change any score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cbp_fed.prompts import NoPrompt, ProjectedPrompt, PromptGenerator, instruction_embedding
from cbp_fed.service import BlackBox, Limits, Query, QueryError, accuracy, calibrated

QUERIES = ["Is the sky blue?\nAnswer:", "Do cats bark?\nAnswer:", "Is ice cold in summer?\nAnswer:"]


def make_query(r, k=3, seed=0, n=3, words=(" yes", " no")):
    z = np.random.default_rng(seed).normal(size=(k, r)).astype(np.float32)
    return Query(z, ["Some passage. " * (i + 1) for i in range(n)], [QUERIES[i % 3] for i in range(n)], list(words))


@pytest.fixture()
def generator(tiny):
    torch.manual_seed(0)
    return PromptGenerator(tiny.d, r=16, m=8, t=3, a_seed=1, embed_std=tiny.embedding_std())


def test_shapes_of_every_prompt_source(tiny, generator):
    z, pooled = torch.randn(4, 16), torch.randn(5, tiny.d)
    assert generator(z, pooled).shape == (4, 5, 3, tiny.d)
    bbt = ProjectedPrompt(instruction_embedding(tiny, 6), r=16, embed_std=tiny.embedding_std())
    out = bbt(z, pooled)
    assert out.shape == (4, 5, 6, tiny.d) and torch.equal(out[:, 0], out[:, 4])  # same for every input
    torch.testing.assert_close(bbt(torch.zeros(1, 16), pooled)[0, 0], bbt.p_init)
    assert NoPrompt(tiny.d)(z, pooled).shape == (4, 5, 0, tiny.d)


def test_pairs_are_the_prompts_of_the_chosen_candidate_and_text(tiny, generator):
    z, pooled = torch.randn(4, 16), torch.randn(5, tiny.d)
    candidate, text = torch.tensor([3, 0, 3, 1]), torch.tensor([4, 4, 0, 2])
    bbt = ProjectedPrompt(instruction_embedding(tiny, 6), r=16, embed_std=tiny.embedding_std())
    for source in (generator, bbt, NoPrompt(tiny.d)):
        with torch.no_grad():
            torch.testing.assert_close(source.pairs(z, pooled, candidate, text), source(z, pooled)[candidate, text])


def test_generator_prompts_depend_on_the_input(tiny, generator):
    out = generator(torch.randn(1, 16), torch.randn(2, tiny.d))
    assert not torch.allclose(out[0, 0], out[0, 1])


def test_projection_scale_matches_the_embedding_spread(tiny):
    gen = PromptGenerator(tiny.d, r=500, m=8, t=2, embed_std=0.05)
    projected = torch.randn(2000, 500) @ gen.A.T
    assert abs(float(projected.std()) - 0.05) < 0.005


@pytest.mark.parametrize("token_budget", [40, 100_000])
def test_batched_scores_equal_scores_one_query_at_a_time(tiny, generator, token_budget):
    box = BlackBox(tiny, generator, token_budget=token_budget)
    queries = [make_query(16, k=2, seed=0), make_query(16, k=4, seed=1, n=2, words=(" A", " B", " C"))]
    together = box.score(queries)
    alone = [BlackBox(tiny, generator).score([q])[0] for q in queries]
    assert together[0].shape == (2, 3, 2) and together[1].shape == (4, 2, 3)
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert box.meter.calls == 6 and box.meter.pairs == 2 * 3 + 4 * 2
    assert (box.meter.forwards > 2) == (token_budget == 40)


def test_long_passages_are_cut_to_max_tokens(tiny):
    box = BlackBox(tiny, NoPrompt(tiny.d), max_tokens=12)
    q = Query(np.zeros((1, 0), np.float32), ["word " * 500], [QUERIES[0]], [" yes", " no"])
    box.score([q])
    assert box.meter.tokens == 12


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(z=np.zeros((3, 7), np.float32)), "r=16"),
        (dict(z=np.full((3, 16), np.nan, np.float32)), "NaN"),
        (dict(z=np.zeros(16, np.float32)), "2-D"),
        (dict(z=np.zeros((0, 16), np.float32)), "0 candidates"),
        (dict(z=np.zeros((3, 16), np.int64)), "floating"),
        (dict(z=np.full((3, 16), 1e9, np.float32)), "exceeds"),
        (dict(passages=["a"]), "1 passages for 3 queries"),
        (dict(queries=["", "b", "c"]), "non-empty query"),
        (dict(label_words=[" yes"]), "1 label words"),
        (dict(label_words=[" yes", " yes"]), "share a first token"),
        (dict(passages=["x" * 40_000, "", ""]), "characters"),
    ],
)
def test_bad_queries_are_refused_with_a_message_naming_the_problem(tiny, generator, change, message):
    box = BlackBox(tiny, generator, limits=Limits())
    good = make_query(16)
    bad = Query(**{**good.__dict__, **change})
    with pytest.raises(QueryError, match=message):
        box.score([good, bad])
    assert box.meter.calls == 0  # nothing computed for anyone when one query is bad


def test_accuracy_and_calibration():
    scores = np.array([[3.0, 1.0], [2.5, 2.2], [1.0, 2.0]])
    assert accuracy(scores, [0, 1, 1]) == pytest.approx(2 / 3)
    fixed = calibrated(scores, scores)  # subtract the mean logit per label: (2.17, 1.73)
    assert accuracy(fixed, [0, 1, 1]) == pytest.approx(1.0)


@torch.no_grad()
def _pair_by_pair(box: BlackBox, query: Query) -> np.ndarray:
    """The unoptimised reference: one forward per (candidate, example), no batching, no sorting."""
    lm, ids = box.lm, box.encode(query)
    pooled = torch.stack([lm.embed(x).mean(0) for x in ids])
    prompts = box.source(torch.as_tensor(query.z), pooled)  # (k, n, t, d)
    labels = lm.label_token_ids(query.label_words)
    return np.array(
        [
            [lm.label_logits(lm.last_hidden(prompts[c, e][None], [ids[e]]), labels)[0].numpy() for e in range(len(ids))]
            for c in range(len(query.z))
        ]
    )


@pytest.mark.parametrize("token_budget", [40, 100_000])
@pytest.mark.parametrize("method", ["cbp", "bbt"])
def test_optimised_scores_equal_the_pair_by_pair_reference(tiny, generator, token_budget, method):
    source = generator if method == "cbp" else ProjectedPrompt(instruction_embedding(tiny, 3), r=16)
    box = BlackBox(tiny, source, max_tokens=12, token_budget=token_budget)
    queries = [
        make_query(16, k=3, seed=2, n=3),
        make_query(16, k=2, seed=3, n=2, words=(" A", " B", " C")),
        make_query(16, k=1, seed=4, n=3),
    ]
    for got, query in zip(box.score(queries), queries):
        np.testing.assert_allclose(got, _pair_by_pair(box, query), atol=1e-4)


def test_pooled_is_the_mean_embedding_of_each_sequence(tiny):
    ids = [tiny.tokenize(q) for q in QUERIES]
    expected = torch.stack([tiny.embed(x).mean(0) for x in ids])
    torch.testing.assert_close(tiny.pooled(ids), expected)


def test_plan_sorts_by_length_and_keeps_chunks_within_the_budget(tiny, generator):
    box = BlackBox(tiny, generator, token_budget=60)
    queries = [make_query(16, k=2, seed=0), make_query(16, k=3, seed=1, n=2)]
    plan = box.plan(queries, [box.encode(q) for q in queries])
    assert plan.lengths.tolist() == sorted(plan.lengths.tolist(), reverse=True)
    assert sorted(plan.pairs.tolist()) == list(range(2 * 3 + 3 * 2))
    assert [e - b for b, e in plan.chunks] == [rows for rows, _ in plan.shapes()]
    assert all(rows * longest <= 60 or rows == 1 for rows, longest in plan.shapes())
    assert box.score([]) == []
