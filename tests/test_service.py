"""BlackBox: validation names the problem; batching across users does not change any score; option scoring."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from cbp_fed.prompts import NoPrompt, ProjectedPrompt, PromptGenerator, instruction_embedding
from cbp_fed.service import BlackBox, Limits, Query, QueryError, accuracy
from cbp_fed.tasks import load_task

QUERIES = ["Is the sky blue?\nAnswer:", "Do cats bark?\nAnswer:", "Is ice cold in summer?\nAnswer:"]


def make_query(r, k=3, seed=0, n=3, words=(" yes", " no")):
    z = np.random.default_rng(seed).normal(size=(k, r)).astype(np.float32)
    return Query(z, ["Some passage. " * (i + 1) for i in range(n)], [QUERIES[i % 3] for i in range(n)], list(words))


@pytest.fixture()
def generator(tiny):
    torch.manual_seed(0)
    return PromptGenerator(tiny.d, r=16, m=8, t=3, a_seed=1)


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


@pytest.mark.parametrize("scale", [1.0, 20.0])
def test_a_unit_search_step_moves_the_bbt_prompt_by_the_embedding_tables_spread(tiny, scale):
    """sigma0 means the same on every backbone: a sigma = 1 step of z moves each coordinate of BBT's prompt
    by about the spread of the backbone's own token embeddings (here the tiny table, and it scaled 20x)."""
    table = tiny.model.get_input_embeddings().weight.detach().float() * scale
    p_init = instruction_embedding(tiny, 2) * scale
    bbt = ProjectedPrompt(p_init, r=64, a_seed=3, embed_std=float(table.std()))
    z = torch.zeros(1, 64)
    steps = torch.randn(400, 64, generator=torch.Generator().manual_seed(0))
    moved = bbt(z + steps, torch.zeros(1, tiny.d))[:, 0] - bbt(z, torch.zeros(1, tiny.d))[:, 0]  # (400, t, d)
    ratio = float(moved.std() / table.std())
    assert 0.8 < ratio < 1.25, ratio
    tokens = table[torch.randint(len(table), (400,), generator=torch.Generator().manual_seed(1))]
    change = float(moved.flatten(1).norm(dim=1).mean() / (tokens - tokens.roll(1, 0)).norm(dim=1).mean())
    assert 0.4 < change < 1.5, change  # a step is about as far as one token embedding from another


def test_a_unit_search_step_moves_the_generators_input_by_about_one_standardised_input(tiny, generator):
    """The generator's promise: a unit-scale z moves I by about the size of a standardised input, so a CMA-ES
    step of sigma ~ 1 is as large as the difference between two inputs."""
    pooled = tiny.pooled([tiny.tokenize(ex.text) for ex in load_task("sst2").examples[:64]])
    generator.standardise_with(pooled)
    inputs = generator._standardised(pooled)
    steps = torch.randn(400, generator.r, generator=torch.Generator().manual_seed(0)) @ generator.A.T
    ratio = float(steps.norm(dim=1).mean() / inputs.norm(dim=1).mean())
    assert 0.5 < ratio < 2.0, ratio


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
        (dict(options=[[" a", " b"]]), "options must be 3 lists"),
        (dict(options=[[" a", " b", " c"]] * 3), "text 0 needs 2 options"),
        (dict(options=[[" a", ""]] * 3), "option 1 of text 0 must be a string of 1..1000"),
        (dict(options=[[" a", "b" * 1001]] * 3), "option 1 of text 0 must be a string of 1..1000"),
        (dict(options=[[" a", " word" * 100]] * 3), "option 1 of text 0 has 100 tokens; allowed 96"),
        (dict(options=[[" a", " b"]] * 3, passages=["y" * 31_990, "", ""]), "text 0 has 32.* with its options"),
        (dict(length_norm=True), "length_norm needs options"),
        (dict(options=[[" a", " b"]] * 3, length_norm=1), "length_norm must be a bool"),
    ],
)
def test_bad_queries_are_refused_with_a_message_naming_the_problem(tiny, generator, change, message):
    box = BlackBox(tiny, generator, limits=Limits())
    good = make_query(16)
    bad = Query(**{**good.__dict__, **change})
    with pytest.raises(QueryError, match=message):
        box.score([good, bad])
    assert box.meter.calls == 0  # nothing computed for anyone when one query is bad


def test_an_option_query_must_fit_max_tokens_with_its_longest_option(tiny, generator):
    box = BlackBox(tiny, generator, max_tokens=12)
    fits = Query(np.zeros((1, 16), np.float32), [""], [QUERIES[1]], [" A", " B"], [[" yes", " no"]])
    box.score([fits])
    too_long = Query(**{**fits.__dict__, "options": [[" yes", " no" * 10]]})
    with pytest.raises(QueryError, match=r"text 0: query of 7 tokens \+ an option of 10 exceeds max_tokens=12"):
        box.score([too_long])


def test_accuracy_counts_the_top_scored_answer():
    scores = np.array([[3.0, 1.0], [2.5, 2.2], [1.0, 2.0]])
    assert accuracy(scores, [0, 1, 1]) == pytest.approx(2 / 3)


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


OPTIONS = [[" blue", " green, like grass"], [" yes they do", " no"], [" a", " b c d e f g"]]


def make_option_query(r, k=2, seed=5, n=3, c=2, length_norm=False):
    """A multiple-choice query: n texts, each with c options of unequal lengths, named by letter label words."""
    z = np.random.default_rng(seed).normal(size=(k, r)).astype(np.float32)
    options = [[OPTIONS[i % 3][j % 2] + " x" * j for j in range(c)] for i in range(n)]
    passages = ["A passage. " * i for i in range(n)]
    return Query(z, passages, [QUERIES[i % 3] for i in range(n)], [" A", " B", " C"][:c], options, length_norm)


@torch.no_grad()
def _option_pair_by_pair(box: BlackBox, query: Query) -> np.ndarray:
    """The reference for option scores: per (candidate, example, option) a plain forward over
    [prefix; prompt; context; option] with full-vocabulary logits, the option tokens' log-probs summed."""
    lm, ids = box.lm, box.encode(query)
    prompts = box.source(torch.as_tensor(query.z), torch.stack([lm.embed(x).mean(0) for x in ids]))  # (k, n, t, d)
    n_prefix, scores = len(lm.prefix_ids), np.zeros((len(query.z), len(ids), len(query.label_words)), np.float32)
    for c, e, j in np.ndindex(scores.shape):
        option = lm.option_ids(query.options[e][j])
        table = lm.embed(lm.prefix_ids + ids[e] + option)
        embeds = torch.cat([table[:n_prefix], prompts[c, e], table[n_prefix:]])[None]
        logprobs = lm.model(inputs_embeds=embeds).logits[0].float().log_softmax(-1)
        start = embeds.shape[1] - len(option)
        scores[c, e, j] = sum(float(logprobs[start - 1 + i, token]) for i, token in enumerate(option))
        scores[c, e, j] /= len(query.options[e][j]) if query.length_norm else 1
    return scores


@pytest.mark.parametrize("token_budget", [40, 100_000])
@pytest.mark.parametrize("method", ["cbp", "none"])
def test_option_scores_mixed_with_label_words_equal_the_one_option_at_a_time_reference(
    tiny, generator, token_budget, method
):
    source = generator if method == "cbp" else NoPrompt(tiny.d)
    box = BlackBox(tiny, source, max_tokens=24, token_budget=token_budget)
    queries = [
        make_option_query(source.r, k=2, n=3, c=2),
        make_query(source.r, k=2, seed=2, n=2),
        make_option_query(source.r, k=1, seed=6, n=3, c=3, length_norm=True),
    ]
    got = box.score(queries)
    assert [g.shape for g in got] == [(2, 3, 2), (2, 2, 2), (1, 3, 3)]
    for scores, query in zip(got[::2], queries[::2]):
        np.testing.assert_allclose(scores, _option_pair_by_pair(box, query), atol=1e-4)
    np.testing.assert_allclose(got[1], _pair_by_pair(box, queries[1]), atol=1e-4)
    summed = box.score([replace(queries[2], length_norm=False)])[0]
    chars = np.array([[len(o) for o in row] for row in queries[2].options])
    np.testing.assert_allclose(got[2], summed / chars, rtol=1e-6)


def test_option_pairs_are_planned_apart_and_their_tokens_metered(tiny):
    box = BlackBox(tiny, NoPrompt(tiny.d), token_budget=100_000)
    queries = [make_option_query(0, k=1, n=3, c=2), make_query(0, k=1, n=3), make_option_query(0, k=1, n=2, c=3)]
    plan = box.plan(queries, [box.encode(q) for q in queries])
    assert plan.kinds.tolist() == [0, 0, 0, 2, 2, 2, 3, 3]
    assert [plan.kinds[b:e].unique().numel() for b, e in plan.chunks] == [1, 1, 1]
    box.score(queries[:1])
    contexts, options = box.encode(queries[0]), box.option_ids(queries[0])
    assert box.meter.tokens == sum(len(x) + sum(map(len, o)) for x, o in zip(contexts, options))
