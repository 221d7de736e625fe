"""FrozenLM: padding, truncation, label and option scoring, loading errors."""

from __future__ import annotations

import pytest
import torch

from cbp_fed.backbone import FrozenLM, resolve_backbone

TEXTS = ["Is water wet?\nAnswer:", "The film was a long, slow and rather dull affair overall.\nSentiment:", "Hi"]


def _one_by_one(lm: FrozenLM, prompts, ids):
    return torch.cat([lm.last_hidden(prompts[i : i + 1], ids[i : i + 1]) for i in range(len(ids))])


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_gives_the_same_hidden_state_as_unpadded_rows(tiny, side):
    lm = FrozenLM(tiny.model, tiny.tokenizer, "tiny-random", padding_side=side)
    ids = [lm.tokenize(t) for t in TEXTS]
    assert len({len(i) for i in ids}) == 3  # unequal lengths, so padding happens
    prompts = torch.randn(3, 4, lm.d) * 0.1
    batched = lm.last_hidden(prompts, ids)
    torch.testing.assert_close(batched, _one_by_one(lm, prompts, ids), atol=1e-5, rtol=1e-4)


def test_left_and_right_padding_agree(tiny):
    ids = [tiny.tokenize(t) for t in TEXTS]
    prompts = torch.randn(3, 2, tiny.d)
    right = FrozenLM(tiny.model, tiny.tokenizer, "tiny-random", padding_side="right")
    torch.testing.assert_close(tiny.last_hidden(prompts, ids), right.last_hidden(prompts, ids), atol=1e-5, rtol=1e-4)


def test_prompt_changes_the_scores_and_gradients_reach_it(tiny):
    ids = [tiny.tokenize(TEXTS[0])]
    labels = tiny.label_token_ids([" yes", " no"])
    prompt = torch.zeros(1, 3, tiny.d, requires_grad=True)
    logits = tiny.label_logits(tiny.last_hidden(prompt, ids), labels)
    assert logits.shape == (1, 2)
    logits[0, 0].backward()
    assert prompt.grad.abs().sum() > 0
    other = tiny.label_logits(tiny.last_hidden(torch.ones(1, 3, tiny.d), ids), labels)
    assert not torch.allclose(logits.detach(), other)


def test_label_logits_equal_the_full_vocabulary_logits_at_the_last_position(tiny):
    ids = tiny.tokenize(TEXTS[1])
    labels = tiny.label_token_ids([" positive", " negative"])
    ours = tiny.label_logits(tiny.last_hidden(torch.zeros(1, 0, tiny.d), [ids]), labels)
    full = tiny.model(input_ids=torch.tensor([ids])).logits[0, -1, labels]
    torch.testing.assert_close(ours[0], full, atol=1e-5, rtol=1e-4)


def test_truncation_without_a_matching_window_keeps_the_passage_end_and_the_query(tiny):
    passage = "one two three four five six seven eight nine ten eleven twelve. "
    query = "Question: is it long?\nAnswer:"
    q_ids = tiny.tokenize(query)
    ids = tiny.encode(passage, query, max_tokens=len(q_ids) + 3)
    assert len(ids) == len(q_ids) + 3
    assert ids[-len(q_ids) :] == q_ids
    assert ids[:3] == tiny.tokenize(passage)[-3:]
    assert tiny.encode(passage, query, 10_000) == tiny.tokenize(passage) + q_ids
    with pytest.raises(ValueError, match="exceeds max_tokens"):
        tiny.encode(passage, query, len(q_ids) - 1)


def test_truncation_keeps_the_passage_window_that_matches_the_query(tiny):
    passage = "The capital of France is Paris. " + "Cows eat grass in green fields every day. " * 12
    query = "Question: What is the capital of France?\nAnswer:"
    q_ids, p_ids = tiny.tokenize(query), tiny.tokenize(passage)
    ids = tiny.encode(passage, query, max_tokens=len(q_ids) + 20)
    assert ids == p_ids[:20] + q_ids  # the sentence the question is about, at the start, survives
    options = [" Paris", " a city far away from France"]
    longest = len(tiny.option_ids(options[1]))
    with_options = tiny.encode(passage, query, len(q_ids) + 20, options)
    assert with_options == p_ids[: 20 - longest] + q_ids  # room for the longest option; the query whole
    with pytest.raises(ValueError, match=r"\+ an option of \d+ exceeds"):
        tiny.encode(passage, query, len(q_ids) + longest - 1, options)


def _option_reference(lm: FrozenLM, prompt: torch.Tensor, context: list[int], option: list[int]) -> torch.Tensor:
    """One option at a time: a plain forward over [prefix; prompt; context; option] with full-vocabulary logits
    at every position, log_softmax, the option tokens' log-probs summed."""
    n_prefix = len(lm.prefix_ids)
    table = lm.embed(lm.prefix_ids + context + option)
    embeds = torch.cat([table[:n_prefix], prompt, table[n_prefix:]])[None]
    logprobs = lm.model(inputs_embeds=embeds).logits[0].float().log_softmax(-1)
    start = embeds.shape[1] - len(option)  # first option position
    return sum(logprobs[start - 1 + j, token] for j, token in enumerate(option))


CONTEXTS = ["Question: What is the capital of France?\nAnswer:", "Hi", TEXTS[1]]
OPTIONS = [[" Paris", " London, the big city", " x"], [" a b c d e", " e", " f g"], [" good", " bad", " dull"]]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("t", [0, 3])
def test_option_logprobs_equal_a_full_forward_per_option(tiny, side, t):
    lm = FrozenLM(tiny.model, tiny.tokenizer, "tiny-random", padding_side=side)
    contexts = [lm.tokenize(c) for c in CONTEXTS]
    options = [[lm.option_ids(o) for o in row] for row in OPTIONS]
    assert len({len(c) for c in contexts}) == 3 and len({len(o) for row in options for o in row}) == 3
    prompts = torch.randn(3, t, lm.d) * 0.1
    got = lm.option_logprobs(prompts, contexts, options)
    expected = [[_option_reference(lm, prompts[b], contexts[b], o) for o in options[b]] for b in range(3)]
    assert got.shape == (3, 3) and got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-4, rtol=0)


def test_gradients_reach_the_prompts_through_option_logprobs(tiny):
    context, options = tiny.tokenize(CONTEXTS[0]), [tiny.option_ids(o) for o in OPTIONS[0]]
    start = torch.randn(1, 3, tiny.d) * 0.1
    prompt, reference = start.clone().requires_grad_(), start[0].clone().requires_grad_()
    tiny.option_logprobs(prompt, [context], [options])[0, 1].backward()
    _option_reference(tiny, reference, context, options[1]).backward()
    assert prompt.grad.abs().sum() > 0
    torch.testing.assert_close(prompt.grad[0], reference.grad, atol=1e-5, rtol=1e-4)


def test_choice_scores_is_label_logits_or_option_logprobs_per_character(tiny):
    contexts, prompts = [tiny.tokenize(c) for c in CONTEXTS], torch.randn(3, 2, tiny.d) * 0.1
    words = [" A", " B", " C"]
    labels = tiny.label_logits(tiny.last_hidden(prompts, contexts), tiny.label_token_ids(words))
    torch.testing.assert_close(tiny.choice_scores(prompts, contexts, words), labels)
    summed = tiny.choice_scores(prompts, contexts, words, OPTIONS)
    ids = [[tiny.option_ids(o) for o in row] for row in OPTIONS]
    torch.testing.assert_close(summed, tiny.option_logprobs(prompts, contexts, ids))
    chars = torch.tensor([[len(o) for o in row] for row in OPTIONS], dtype=torch.float32)
    torch.testing.assert_close(tiny.choice_scores(prompts, contexts, words, OPTIONS, length_norm=True), summed / chars)
    with pytest.raises(ValueError, match="every row needs 2 options"):
        tiny.choice_scores(prompts, contexts, words[:2], OPTIONS)
    with pytest.raises(ValueError, match="tokenises to nothing"):
        tiny.option_ids("")


def test_label_words_sharing_a_first_token_are_refused(tiny):
    with pytest.raises(ValueError, match="share a first token"):
        tiny.label_token_ids([" yes", " yes please"])


def test_unknown_backbone_and_missing_folder_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown backbone 'nope'"):
        resolve_backbone("nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_backbone(str(tmp_path))


@pytest.mark.slow
def test_real_smollm2_is_a_trained_model(smollm2, tiny):
    text = (
        "The city council met on Tuesday evening to discuss the new budget. After a long debate, "
        "the members agreed to spend more money on schools, parks and public transport next year."
    )
    trained, random = smollm2.lm_loss(text), tiny.lm_loss(text)
    assert trained < 3.5 < 9.0 < random  # ~2-3 nats/token vs ~ln(49152) = 10.8 for random weights
    logits = smollm2.label_logits(
        smollm2.last_hidden(
            torch.zeros(1, 0, smollm2.d), [smollm2.tokenize("Is the sun hot? Answer yes or no.\nAnswer:")]
        ),
        smollm2.label_token_ids([" yes", " no", " banana"]),
    )
    assert logits[0, 2] < logits[0, :2].min()  # a trained model prefers an answer word over nonsense


def test_missing_model_wheel_names_the_package_and_the_hub_alternative(tmp_path, monkeypatch):
    from cbp_fed import backbone

    monkeypatch.setenv("CBP_FED_CACHE", str(tmp_path))
    spec = backbone.BackboneSpec(lambda: backbone._package_dir("no_such_model_wheel"), "org/model")
    monkeypatch.setitem(backbone.BACKBONES, "absent", spec)
    with pytest.raises(FileNotFoundError, match=r"'no_such_model_wheel' is not installed.*--backbone org/model"):
        resolve_backbone("absent")


@pytest.mark.slow
def test_real_smollm2_answers_arc_easy_better_by_its_options_than_by_letters(smollm2):
    from cbp_fed.tasks.registry import multiple_choice_rows

    rows = list(multiple_choice_rows("arc-easy").values())[:60]  # file order, not chosen by label
    letters = [" A", " B", " C", " D"]
    listed = ["\n".join(["", *map("{}. {}".format, "ABCD", r.options)]) for r in rows]
    lettered = [f"Question: {r.question}{options}\nAnswer:" for r, options in zip(rows, listed)]
    plain, options = [f"Question: {r.question}\nAnswer:" for r in rows], [[" " + o for o in r.options] for r in rows]
    empty, gold = torch.zeros(len(rows), 0, smollm2.d), torch.tensor([r.gold for r in rows])
    with torch.no_grad():
        by_letter = smollm2.choice_scores(empty, [smollm2.encode("", q, 512) for q in lettered], letters)
        contexts = [smollm2.encode("", q, 512, o) for q, o in zip(plain, options)]
        by_option = smollm2.choice_scores(empty, contexts, letters, options)
    letter_acc, option_acc = (float((s.argmax(1) == gold).float().mean()) for s in (by_letter, by_option))
    assert option_acc >= letter_acc + 0.08 and option_acc >= 0.4, (letter_acc, option_acc)  # measured 0.48 vs 0.37


def test_embedding_std_includes_the_scale_an_embedding_layer_applies_to_its_lookups(tiny):
    """A layer that scales its lookups (as Gemma's does by sqrt(d)) scales the spread BBT's projection uses."""

    class Scaled(torch.nn.Embedding):
        def forward(self, ids):
            return super().forward(ids) * 25.0

    scaled = Scaled.from_pretrained(tiny._embedding.weight.detach().clone())
    lm = FrozenLM(tiny.model, tiny.tokenizer, "tiny-random")
    lm._embedding = scaled
    assert lm.embedding_std() == pytest.approx(25.0 * tiny.embedding_std(), rel=1e-5)
    assert tiny.embedding_std() == pytest.approx(float(tiny._embedding.weight.std()), rel=1e-5)
