"""FrozenLM: padding, truncation, label scoring and loading errors."""

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


def test_truncation_cuts_the_passage_from_the_left_and_keeps_the_query(tiny):
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
