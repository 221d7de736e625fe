"""The second backbone, Gemma-3-270M (d = 640, a 262k vocabulary, a logit soft-cap), through the same path."""

from __future__ import annotations

import pytest

from cbp_fed.backbone import FrozenLM
from cbp_fed.customize import CustomizeConfig, customize

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma() -> FrozenLM:
    return FrozenLM.load("gemma3-270m", dtype="fp32")


def test_gemma_loads_from_its_wheels_as_a_trained_model(gemma):
    assert gemma.d == 640 and gemma.prefix_ids == [gemma.tokenizer.bos_token_id]  # Gemma wants its BOS
    assert gemma.lm_loss("The cat sat on the mat and looked out of the window at the rain.") < 4.0  # random: ~12.5


def test_gemma_answers_sentiment_through_the_users_path(gemma):
    """Zero-shot and the user's own options on SST-2 through the BlackBox: a wrong label token, tokenizer or
    soft-cap would leave it near the 50% majority."""
    summary = customize(CustomizeConfig(task="sst2", method="zero-shot", shots_per_class=4, n_test=60), gemma, False)
    assert summary["backbone"] == "gemma3-270m" and summary["test_size"] == 60
    assert summary["test_accuracy"] >= 0.7 and summary["majority_rate"] <= 0.6


def test_bbt_prompts_are_scaled_to_the_embeddings_gemma_feeds_its_decoder(gemma):
    """Gemma's embedding layer multiplies each lookup by sqrt(640): BBT's projection must be scaled to what
    the decoder sees beside it (text embeddings of std about 1), not to the raw table (std about 0.04)."""
    text = gemma.embed(gemma.tokenize("The film was a quiet delight from start to finish, and I would see it again."))
    assert 0.5 < gemma.embedding_std() / float(text.std()) < 2
