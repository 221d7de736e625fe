"""The label mechanism and its accountant: the epsilon the sweep reports is what dp-accounting's own
accountants compute, the sensitivity it assumes is the one the user's code has, and on a planted case
the best attack on the mechanism's output reaches exactly the accuracy the bound allows (and an attack
on what the provider really sees, the next populations, stays within it)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import GaussianDpEvent, SelfComposedDpEvent
from dp_accounting.pld.pld_privacy_accountant import PLDAccountant
from scipy.stats import norm

from cbp_fed.config import RunConfig
from cbp_fed.privacy.accounting import LabelChannel, epsilon_of, gaussian_mu, release_event
from cbp_fed.privacy.defences import noisy_fitness
from cbp_fed.search import CMASearch, SearchConfig

from .test_privacy_transcript import run_rounds


def release_epsilon(noise: float, releases: int, delta: float = 1e-5) -> float:
    return epsilon_of(release_event(noise, releases), delta)


# epsilon at delta 1e-5 of one release at dp-noise 0.05 / 0.2 / 1 / 4 (the old sweep's 970 / 92 / 10 / 2.0), and
# of 3 releases at noise 1, as the hand-written accountant dp-accounting replaced computed them (bisection on the
# exact mu-GDP curve)
HAND_WRITTEN_EPSILON = {(0.05, 1): 969.6455927139167, (0.2, 1): 91.81728962466376, (1.0, 1): 9.997256146434305}
HAND_WRITTEN_EPSILON |= {(4.0, 1): 1.993091404415118, (1.0, 3): 20.12502354588818}


def test_the_release_accountant_keeps_the_hand_written_epsilons():
    # both invert the same exact curve; they differ only in the root finder's stopping point (1e-8 relative)
    for (noise, releases), old in HAND_WRITTEN_EPSILON.items():
        assert release_epsilon(noise, releases) == pytest.approx(old, rel=1e-8)


def test_the_accountant_matches_the_gaussian_privacy_curve_and_the_pld_accountant():
    # one release at noise 2 (mu = 1): delta(eps) computed independently, E[(1 - e^(eps - L))_+] with the
    # privacy loss L ~ N(mu^2/2, mu^2), is the requested delta at the accountant's epsilon
    e = release_epsilon(2.0, 1)
    grid = np.linspace(-12, 12, 400_001)
    density = np.exp(-(grid**2) / 2) / math.sqrt(2 * math.pi)
    numeric = float(np.sum(np.maximum(0.0, 1 - np.exp(e - 0.5 - grid)) * density) * (grid[1] - grid[0]))
    assert numeric == pytest.approx(1e-5, rel=1e-3)
    # the classic calibration sigma = sensitivity sqrt(2 ln(1.25/delta)) / eps (eps < 1) is an upper bound
    noise = 2 * math.sqrt(2 * math.log(1.25 / 1e-5)) / 0.8  # std / C, with sensitivity 2C
    assert release_epsilon(noise, 1) <= 0.8
    # a label channel (generations at one multiplier, composed) against the PLD accountant composing itself
    channel = LabelChannel(candidates=6, batch=4, generations=6, dev=4, selections=2, noise=1.0, clip=1.4)
    multiplier = 1.0 * 4 / (math.sqrt(6) * 1.4)
    pld = PLDAccountant().compose(SelfComposedDpEvent(GaussianDpEvent(multiplier), 6)).get_epsilon(1e-5)
    assert channel.epsilon(1e-5)["provider"] == pytest.approx(pld, rel=1e-5)
    assert gaussian_mu(channel.training_label()) == pytest.approx(math.sqrt(6) / multiplier)


def test_the_channel_has_no_bound_without_noise_and_clip_and_the_release_bounds_z_alone():
    base = dict(candidates=6, batch=4, generations=6, dev=4, selections=2)
    assert LabelChannel(**base, noise=1.0).epsilon(1e-5)["provider"] == math.inf  # no clip: unbounded loss
    assert LabelChannel(**base, clip=1.4).epsilon(1e-5)["provider"] == math.inf  # no noise
    released = LabelChannel(**base, release_noise=2.0, releases=2).epsilon(1e-5)
    assert released == {"provider": math.inf, "released_z": pytest.approx(release_epsilon(2.0, 2))}
    both = LabelChannel(**base, noise=4.0, clip=1.4, release_noise=2.0, releases=2).epsilon(1e-5)
    assert both["released_z"] == both["provider"] < release_epsilon(2.0, 2)  # z is a function of the noisy view
    # a dev label is seen by the 2 dev choices only; with a tiny dev set they dominate
    few_dev = LabelChannel(**{**base, "dev": 1}, noise=1.0, clip=1.4)
    assert few_dev.epsilon(1e-5)["provider"] == pytest.approx(epsilon_of(few_dev.dev_label(), 1e-5))
    assert epsilon_of(few_dev.dev_label(), 1e-5) > epsilon_of(few_dev.training_label(), 1e-5)
    # from a run config: batch is the smaller of batch-size and the training set; FedBPT reports clean losses
    config = RunConfig(popsize=6, batch_size=8, num_rounds=2, steps_per_round=3, selection_noise=1.0, loss_clip=1.4)
    assert LabelChannel.of(config, n_train=4, n_dev=4) == LabelChannel(**base, noise=1.0, clip=1.4)
    assert LabelChannel.of(config, n_train=20, n_dev=4).batch == 8
    fedbpt = RunConfig(method="fedbpt", popsize=6, loss_clip=1.4)
    assert LabelChannel.of(fedbpt, 4, 4).epsilon(1e-5)["provider"] == math.inf


def planted_scores(k: int, n: int, clip: float) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``(k, n, 2)`` where text 0's label flips every candidate's capped loss between 0 and
    ``clip`` (alternating candidates): the largest change one label can make, sqrt(k) clip / n in L2.
    The other texts score the same for every candidate. Returns the scores for labels 0 and 1 of text 0."""
    scores = np.zeros((k, n, 2))
    scores[:, 1:, 0] = 2.0  # the other texts: labelled 0, the same loss for every candidate
    far = 50.0  # a margin whose cross-entropy, above the cap, is capped to exactly `clip`
    scores[0::2, 0, 0], scores[1::2, 0, 1] = far, far  # even candidates answer 0, odd ones answer 1
    return scores, np.array([0] * n)


def test_one_label_moves_the_capped_fitness_by_at_most_the_sensitivity_and_the_planted_case_reaches_it():
    k, n, clip = 6, 4, 1.4
    rng = np.random.default_rng(0)
    for _ in range(200):  # random scores and labels: a flipped label never moves the vector further
        scores, labels = rng.normal(0, 5, (k, n, 3)), rng.integers(0, 3, n)
        flipped = labels.copy()
        flipped[rng.integers(n)] = rng.integers(3)
        move = noisy_fitness(scores, labels, "ce", clip, 0.0, rng) - noisy_fitness(
            scores, flipped, "ce", clip, 0.0, rng
        )
        assert np.linalg.norm(move) <= math.sqrt(k) * clip / n + 1e-12
    scores, labels = planted_scores(k, n, clip)
    flipped = labels.copy()
    flipped[0] = 1
    move = noisy_fitness(scores, labels, "ce", clip, 0.0, rng) - noisy_fitness(scores, flipped, "ce", clip, 0.0, rng)
    assert np.linalg.norm(move) == pytest.approx(math.sqrt(k) * clip / n, rel=1e-6)


def test_the_best_attack_on_the_mechanism_reaches_the_accountants_bound_and_no_further():
    # the provider guesses text 0's label from G noisy fitness vectors: the likelihood-ratio test (here a
    # projection on the difference of the two means) is optimal, so its accuracy is the largest any attack
    # can have; under mu-GDP that is Phi(mu / 2) exactly. 4000 trials: standard error 0.8 points.
    k, n, clip, noise, generations, trials = 6, 4, 1.4, 2.0, 6, 4000
    channel = LabelChannel(candidates=k, batch=n, generations=generations, noise=noise, clip=clip)
    mu = gaussian_mu(channel.training_label())
    bound = norm.cdf(mu / 2)
    scores, labels = planted_scores(k, n, clip)
    flipped = labels.copy()
    flipped[0] = 1
    rng = np.random.default_rng(1)
    clean = {y: noisy_fitness(scores, lab, "ce", clip, 0.0, rng) for y, lab in ((0, labels), (1, flipped))}
    direction, middle = clean[1] - clean[0], (clean[0] + clean[1]) / 2
    correct = 0
    for _ in range(trials):
        y = int(rng.integers(2))
        seen = [
            noisy_fitness(scores, labels if y == 0 else flipped, "ce", clip, noise, rng) for _ in range(generations)
        ]
        guess = int(sum((f - middle) @ direction for f in seen) > 0)
        correct += guess == y
    accuracy, se = correct / trials, math.sqrt(bound * (1 - bound) / trials)
    assert abs(accuracy - bound) < 3 * se  # tight: the accountant charges exactly what the mechanism leaks
    # the (epsilon, delta) form holds for this test too: TPR <= e^eps FPR + delta at its threshold
    eps = channel.epsilon(1e-5)["provider"]
    assert accuracy <= math.exp(eps) / (1 + math.exp(eps)) + 1e-5


def test_reading_the_label_off_the_populations_stays_within_the_bound():
    # what the provider really sees: each population, then the next one (CMA-ES moved by the noisy
    # ranking). The label attack's statistic, the correlation of text 0's loss under each label with how
    # far each candidate was followed, is post-processing of the mechanism, so its accuracy is at most
    # Phi(mu / 2); without the noise the same attack reads the label far above that bound.
    k, n, clip, generations, r = 6, 4, 1.4, 6, 6
    accuracy = {}
    for noise in (4.0, 0.0):
        rng = np.random.default_rng(2)
        correct, trials = 0, 600
        for t in range(trials):
            y = int(rng.integers(2))
            search = CMASearch(np.zeros(r), SearchConfig(popsize=k, budget=k * generations, bound=0), seed=t)
            evidence = 0.0
            for _ in range(generations):
                z = search.ask().astype(float)
                mean = z.mean(axis=0)
                # a candidate's answer on text 0 is the sign of its first coordinate: loss 0 or the cap
                answers = (z[:, 0] > 0).astype(int)
                scores = np.zeros((k, n, 2))
                scores[np.arange(k), 0, answers] = 50.0
                scores[:, 1:, 0] = 2.0
                labels = np.array([y, 0, 0, 0])
                search.tell(noisy_fitness(scores, labels, "ce", clip, noise, rng))
                shift = search.es.mean - mean
                followed = (z - mean) @ shift
                evidence += np.corrcoef(answers, followed)[0, 1] if answers.std() and followed.std() else 0.0
            correct += int(evidence > 0) == y  # followed candidates that answer 1: the label is 1
        accuracy[noise] = correct / trials
    mu = gaussian_mu(
        LabelChannel(candidates=k, batch=n, generations=generations, noise=4.0, clip=clip).training_label()
    )
    bound, se = norm.cdf(mu / 2), math.sqrt(0.25 / 600)
    assert accuracy[4.0] <= bound + 3 * se
    assert accuracy[0.0] > bound + 5 * se  # the attack is strong: it is the noise that holds it down


@pytest.mark.usefixtures("task_identity")
def test_the_label_mechanism_through_the_apps_keeps_dev_accuracies_home_and_reports_only_noisy_losses(tiny, tmp_path):
    strategy, grid, _, result = run_rounds(tiny, tmp_path, rounds=2, users=2, selection_noise=1.0, loss_clip=1.4)
    train = result.train_metrics_clientapp
    assert set(train) == {1, 2}
    for metrics in train.values():
        assert (
            "kept-earlier-share" in metrics and "dev-accuracy" not in metrics and "dev-accuracy-before" not in metrics
        )
    _, _, _, clean = run_rounds(tiny, tmp_path / "clean", rounds=2, users=2)
    assert all("dev-accuracy" in metrics for metrics in clean.train_metrics_clientapp.values())
    # each user drew its own secret once and kept it; two users of one run seed have different ones
    secrets = [int(c.state.config_records["secret"]["secret"]) for c in grid.contexts.values()]
    assert len(set(secrets)) == 2


def test_the_sweep_reports_the_worst_users_epsilon_and_every_channel_with_its_interval():
    from simulations.privacy_sweep import epsilons, report

    # 2 SST-2 users with 3 shots per class: 6 training texts, all in every batch (batch-size 8), 9 generations
    config = RunConfig(tasks="sst2", min_users=2, shots_per_class=3, selection_noise=1.0, loss_clip=1.4)
    multiplier = 1.0 * 6 / (math.sqrt(6) * 1.4)
    expected = PLDAccountant().compose(SelfComposedDpEvent(GaussianDpEvent(multiplier), 9)).get_epsilon(1e-5)
    assert epsilons(config)["provider"] == pytest.approx(expected, rel=1e-5)
    assert epsilons(RunConfig(tasks="sst2", min_users=2, shots_per_class=3))["provider"] == math.inf

    row = {
        "defence": "selection-noise",
        "settings": {"selection-noise": 1.0},
        "accuracy": 0.75,
        "utility": {"loss": 0.512},
        "gain_over_start": {"gain": 0.05, "ci95": [-0.01, 0.11], "texts": 200},
        "calls": 720,
        "epsilon": {"provider": 10.6, "released_z": math.inf},
        "attacks": {
            "label-selection": {"accuracy": 0.6, "majority_baseline": 0.5, "p_value": 0.003},
            "attribute": {"accuracy": 0.55, "chance": 0.5},
            "membership": {
                "auc": 0.52,
                "auc_ci95": [0.48, 0.57],
                "tpr_at_0.1%_fpr": 0.0,
                "tpr_at_1%_fpr": 0.025,
                "tpr_at_1%_fpr_ci95": [0.0, 0.05],
                "members": 80,
                "non_members": 1000,
            },
        },
    }
    line = report([row], {"backbone": "smollm2-135m"}, 20, None).splitlines()[-3]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:8] == ["selection-noise", "std 1 nats", "10.6", "inf", "75.0", "0.512", "+5.0 [-1.0, +11.0]", "720"]
    assert cells[8] == "60.0 [50.0] (p 0.003)" and cells[9] == "55.0 [50.0]"
    assert cells[10:13] == ["0.520 [0.480, 0.570]", "0.0", "2.5 [0.0, 5.0]"]
