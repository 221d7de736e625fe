"""What a user can do with its answer scores alone, and its protected choice against a prompt."""

from __future__ import annotations

import numpy as np
import pytest

from cbp_fed.calibration import (
    calibrated,
    content_free,
    content_free_prior,
    fit_offsets,
    held_out_options,
    label_prior,
    own_options,
    protect,
    sign_test,
)


def planted(n: int = 400, bias: float = 3.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``(n, 2)`` with a real signal for the label and a planted prior ``bias`` toward answer 1."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = rng.normal(0, 1, (n, 2))
    scores[np.arange(n), labels] += 1.5
    scores[:, 1] += bias
    return scores, labels


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float((scores.argmax(1) == labels).mean())


def test_content_free_inputs_keep_the_template_and_the_answer_cue():
    assert content_free("Review: great drug\n", "Sentiment:", "N/A") == ("Review: N/A\n", "Sentiment:")
    assert content_free("A passage.\nMore of it.\n", "Question: Is it?\nAnswer:", "N/A") == (
        "N/A\n",
        "Question: N/A\nAnswer:",
    )
    assert content_free("A passage.\n", "Question: Is it?\nAnswer:", "") == ("", "Question:\nAnswer:")


def test_the_content_free_prior_averages_probabilities_not_logits():
    # one confident and one indifferent content-free input: probabilities average to (0.75, 0.25); logits
    # averaged first would say (0.993, 0.007)
    prior = content_free_prior(np.array([[30.0, 0.0], [0.0, 0.0]]))
    np.testing.assert_allclose(np.exp(prior), [0.75, 0.25], atol=1e-6)


def test_calibration_removes_a_planted_prior_the_content_free_inputs_show():
    scores, labels = planted()
    assert accuracy(scores, labels) < 0.7  # the prior drowns the signal
    prior = content_free_prior(np.array([[0.0, 3.0], [0.1, 3.1], [-0.1, 2.9]]))  # what the template alone says
    assert accuracy(calibrated(scores, prior), labels) > 0.8


def test_offsets_fitted_on_labelled_rows_recover_the_planted_prior():
    scores, labels = planted()
    offsets = fit_offsets(scores[:64], labels[:64])
    assert offsets[1] - offsets[0] < -1.0  # against the planted prior
    assert accuracy(scores[64:], labels[64:]) < 0.7 and accuracy(scores[64:] + offsets, labels[64:]) > 0.8


def test_offsets_stay_finite_when_an_answer_is_absent_from_train():
    offsets = fit_offsets(np.zeros((8, 3)), np.zeros(8, int))
    assert np.isfinite(offsets).all() and offsets.argmax() == 0


def test_own_options_answer_from_the_zero_shot_scores_alone():
    zero = np.array([[0.0, 2.0, 0.0], [2.0, 0.0, 0.0]])
    labels = label_prior(np.array([2, 2, 0, 1, 2]), 3)
    options = own_options(zero, np.array([0.0, -3.0, 0.0]), np.log([0.2, 0.6, 0.2]), labels)
    assert list(options) == ["majority", "zero-shot", "calibrated", "calibrated-fit"]
    assert (options["majority"].argmax(1) == 2).all()
    assert options["zero-shot"].argmax(1).tolist() == [1, 0]
    assert options["calibrated"].argmax(1).tolist() == [1, 0]  # 0.79 / 0.6 still beats 0.11 / 0.2
    assert options["calibrated-fit"].argmax(1).tolist() == [0, 0]  # the offset moves row 0 off answer 1
    assert "calibrated" not in own_options(zero, np.zeros(3), None, labels)


def test_the_label_prior_is_the_smoothed_train_frequencies_and_ties_prefer_the_lower_answer():
    assert np.exp(label_prior(np.array([1, 1, 0]), 2)) == pytest.approx([2 / 5, 3 / 5])
    assert label_prior(np.array([1, 0]), 2).argmax() == 0
    assert label_prior(np.array([], int), 3).argmax() == 0  # no train rows: the first answer


def test_held_out_options_score_each_train_row_with_what_was_fitted_without_it():
    rng = np.random.default_rng(0)
    zero, labels = rng.normal(size=(9, 2)), np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    held = held_out_options(zero, labels, np.log([0.5, 0.5]))
    for i in range(9):
        rest = np.arange(9) != i
        assert held["calibrated-fit"][i] == pytest.approx(zero[i] + fit_offsets(zero[rest], labels[rest]))
    # the majority of the other 8 rows: 0 for a 1-row (5 of 0 left), a tie (4 and 4) broken to 0 for a 0-row
    assert held["majority"].argmax(1).tolist() == [0] * 9
    assert held["zero-shot"] == pytest.approx(zero)  # nothing fitted, nothing changes
    assert held_out_options(zero[:1], labels[:1], None) == {}


def test_sign_test_is_the_exact_binomial_tail():
    assert sign_test(1, 0) == 0.5
    assert sign_test(5, 0) == pytest.approx(1 / 32)
    assert sign_test(0, 0) == 1.0
    assert sign_test(6, 1) == pytest.approx(8 / 128)


def scores(labels: np.ndarray, right: list[int], margin: float = 1.0) -> np.ndarray:
    """Scores ``(n, 2)`` that answer the rows ``right`` correctly with ``margin`` and the rest wrongly."""
    answer = np.where(np.isin(np.arange(len(labels)), right), labels, 1 - labels)
    return np.eye(2)[answer] * margin


LABELS = np.arange(32) % 2


def test_a_prompt_worse_than_zero_shot_on_dev_is_not_kept():
    dev = {
        "majority": scores(LABELS, list(range(20))),
        "zero-shot": scores(LABELS, list(range(24))),
        "prompt": scores(LABELS, list(range(18))),
    }
    choice = protect(LABELS, dev, provider={"prompt"})
    assert choice.kept == "zero-shot" and choice.baseline == "zero-shot" and choice.contender == "prompt"


def test_a_prompt_clearly_better_on_dev_is_kept():
    dev = {"zero-shot": scores(LABELS, list(range(16))), "prompt": scores(LABELS, list(range(26)))}
    choice = protect(LABELS, dev, provider={"prompt"})
    assert choice.kept == "prompt" and (choice.wins, choice.losses) == (10, 0) and choice.p_value < 0.01


def test_a_one_row_dev_difference_never_moves_the_user():
    dev = {"zero-shot": scores(LABELS, list(range(20))), "prompt": scores(LABELS, list(range(21)))}
    choice = protect(LABELS, dev, provider={"prompt"})
    assert choice.kept == "zero-shot" and choice.p_value == 0.5


def test_the_baseline_is_chosen_on_train_and_dev_rows_together():
    labels = LABELS[:10]
    dev = {
        "zero-shot": scores(labels, [0, 1, 2, 3, 4, 5]),  # one dev row ahead
        "calibrated": scores(labels, [0, 1, 2, 3, 4]),
        "prompt": scores(labels, [0]),
    }
    assert protect(labels, dev, provider={"prompt"}).baseline == "zero-shot"
    train = {"zero-shot": scores(LABELS, list(range(16))), "calibrated": scores(LABELS, list(range(24)))}
    choice = protect(labels, dev, provider={"prompt"}, held_out=(LABELS, train))
    assert choice.baseline == "calibrated" and choice.own_rows == 42
    assert choice.own_accuracy["calibrated"] == pytest.approx(29 / 42)
    with pytest.raises(ValueError, match="held_out"):
        protect(labels, dev, provider={"prompt"}, held_out=(LABELS, {"zero-shot": train["zero-shot"]}))


def test_own_options_equal_in_accuracy_are_ranked_by_their_loss_then_by_their_order():
    right = list(range(7))
    labels = LABELS[:10]
    dev = {
        "majority": scores(labels, right, margin=0.1),
        "zero-shot": scores(labels, right, margin=0.1),
        "calibrated": scores(labels, right, margin=3.0),  # confident where right and where wrong
        "calibrated-fit": scores(labels, right, margin=1.0),
        "prompt": scores(labels, [0]),
    }
    choice = protect(labels, dev, provider={"prompt"})
    assert choice.own_loss["calibrated-fit"] < min(choice.own_loss["zero-shot"], choice.own_loss["calibrated"])
    assert choice.baseline == "calibrated-fit"
    del dev["calibrated"], dev["calibrated-fit"]
    assert protect(labels, dev, provider={"prompt"}).baseline == "majority"  # equal in both: the first listed


def test_protect_refuses_a_choice_without_an_own_option():
    with pytest.raises(ValueError, match="without the provider"):
        protect(LABELS[:4], {"prompt": scores(LABELS[:4], [0])}, provider={"prompt"})
