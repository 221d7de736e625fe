"""Attacks that would catch a broken attack: on a planted case with known leakage each beats chance by
a clear margin; on a null case (labels or membership independent of everything the provider saw) it
does not. Then every attack end to end on a recorded run of the real apps on the tiny backbone."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from cbp_fed import cli
from cbp_fed.config import RunConfig
from cbp_fed.privacy.attacks import run_attack
from cbp_fed.privacy.attacks.attribute import probe_accuracy
from cbp_fed.privacy.attacks.common import Shadows, ground_truth, roc_metrics
from cbp_fed.privacy.attacks.label_selection import infer_labels, score_predictions
from cbp_fed.privacy.attacks.membership import bootstrap_intervals, logit_confidence, offline_lira_scores
from cbp_fed.privacy.transcript import Transcript, TranscriptWriter, text_hash
from cbp_fed.prompts import ProjectedPrompt
from cbp_fed.search import CMASearch, SearchConfig, fitness
from cbp_fed.service import BlackBox
from strategies import BBTStrategy

from .loopback import LoopbackGrid


# ----------------------------------------------------------------------------- label inference
def synthetic_run(folder: Path, null: bool, seed: int, users=10, n=16, r=32, popsize=6, steps=3, rounds=3) -> dict:
    """Users running the real CMA-ES against a linear 'model' (scores = z . W_j,c + noise), recorded
    by the real writer. Planted: the user tells CE of its true labels. Null: it tells random numbers,
    so nothing the provider sees depends on the labels. Returns the truth {user: {hash: label}}."""
    writer = TranscriptWriter(folder / "transcript")
    rng = np.random.default_rng(seed)
    searches = [
        CMASearch(np.zeros(r), SearchConfig(popsize, 1.0, rounds * steps * popsize), seed * 1000 + u)
        for u in range(users)
    ]
    weights = rng.normal(size=(users, n, 2, r)) / np.sqrt(r)
    labels = rng.integers(0, 2, (users, n))
    queries = [[f"user {u} text {j}" for j in range(n)] for u in range(users)]
    for round in range(1, rounds + 1):
        writer.begin_round(round, np.zeros(r))
        for u, search in enumerate(searches):
            texts = {
                "passages": [""] * n,
                "queries": queries[u],
                "label-words": [" a", " b"],
                "task": "t",
                "domain": "d",
            }
            for g in range(steps):
                z = search.ask()
                writer.query(u, "train", texts if g == 0 else None, z, list(range(n)))
                scores = np.einsum("kr,ncr->knc", z, weights[u]) + 0.1 * rng.normal(size=(popsize, n, 2))
                writer.scores(u, scores)
                search.tell(rng.normal(size=popsize) if null else fitness(scores, labels[u]))
            writer.final(u, search.result)
        writer.end_round()
    return {u: {text_hash("", q): int(y) for q, y in zip(queries[u], labels[u])} for u in range(users)}


@pytest.mark.parametrize("seed", [0, 1])
def test_label_inference_reads_labels_off_the_selection_and_nothing_off_noise(tmp_path, seed):
    results = {}
    for null in (False, True):
        truth = synthetic_run(tmp_path / str(null), null, seed)
        transcript = Transcript(tmp_path / str(null))
        predictions = {p: infer_labels(transcript, p) for p in transcript.users()}
        results[null] = score_predictions(predictions, truth)
        assert results[null]["texts"] == 160
    planted, null = results[False], results[True]
    assert planted["accuracy"] > planted["majority_baseline"] + 0.3 and planted["p_value"] < 1e-10
    assert null["accuracy"] < null["majority_baseline"] + 0.08 and null["p_value"] > 1e-3


# ----------------------------------------------------------------------------- membership
def lira_case(planted: bool, seed: int, n=2000, references=3, effect=1.0):
    """Per-example difficulty mu_i; each OUT reference's statistic is mu_i + noise; the target's is
    mu_i + effect for members (only when ``planted``) + noise. Half the examples are members."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 2, n)
    reference = difficulty[:, None] + rng.normal(size=(n, references))
    members = rng.random(n) < 0.5
    target = difficulty + effect * (members if planted else 0) + rng.normal(size=n)
    return target, reference, members


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_offline_lira_detects_planted_membership_and_not_independent_membership(seed):
    target, reference, members = lira_case(True, seed)
    scores = offline_lira_scores(target, reference)
    planted = roc_metrics(scores, members)
    null = roc_metrics(offline_lira_scores(*lira_case(False, seed)[:2]), lira_case(False, seed)[2])
    # with the difficulty removed, members score `effect` higher against a spread of sqrt(1 + 1/3) per side:
    # AUC Phi(1 / sqrt(2 (1 + 1/3))) = 0.73; the raw target, whose difficulty spreads by 2, reads ~0.64
    assert 0.69 < planted["auc"] < 0.77 and planted["tpr_at_1%_fpr"] > 0.03
    assert roc_metrics(target, members)["auc"] < planted["auc"] - 0.05
    assert abs(null["auc"] - 0.5) < 0.04 and null["tpr_at_1%_fpr"] < 0.03
    users = [np.arange(i, 2000, 20) for i in range(20)]  # 20 "users" of 100 challenges each
    ci = bootstrap_intervals([scores[u] for u in users], [members[u] for u in users], draws=200, seed=seed)
    low, high = ci["auc_ci95"]
    assert low < planted["auc"] < high and high - low < 0.1
    assert ci["tpr_at_0.1%_fpr_ci95"][0] <= planted["tpr_at_0.1%_fpr"] <= ci["tpr_at_0.1%_fpr_ci95"][1]


def test_roc_metrics_and_logit_confidence_on_known_values():
    perfect = roc_metrics(np.array([3.0, 2.0, 1.0, 0.0]), np.array([True, True, False, False]))
    assert perfect["auc"] == 1.0 and perfect["tpr_at_0.1%_fpr"] == 1.0
    assert roc_metrics(np.array([0.0, 1.0]), np.array([True, False]))["auc"] == 0.0
    phi = logit_confidence(np.array([[0.0, np.log(3.0)]]), np.array([1]))  # p = 0.75 -> log 3
    np.testing.assert_allclose(phi, [np.log(3.0)])


# ----------------------------------------------------------------------------- attribute
@pytest.mark.parametrize("seed", [0, 1])
def test_attribute_probe_reads_a_planted_attribute_and_not_an_independent_one(seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2, 32))

    def users(count):
        y = rng.integers(0, 2, count)
        return centres[y] * 0.5 + rng.normal(size=(count, 32)), y

    shadow_z, shadow_y = users(60)
    target_z, target_y = users(200)
    planted = probe_accuracy(shadow_z, shadow_y, target_z, target_y, 2)
    null = probe_accuracy(shadow_z, shadow_y, target_z, rng.integers(0, 2, 200), 2)
    assert planted["accuracy"] > planted["chance"] + 0.25 and planted["p_value"] < 1e-6
    assert null["accuracy"] < null["chance"] + 0.08


# ----------------------------------------------------------------------------- end to end
def recorded_run(tiny, folder: Path, users=3, **defence) -> Path:
    """A BBT run of the real apps on the loopback grid with the transcript on, in a run folder."""
    config = RunConfig(
        method="bbt",
        backbone="tiny-random",
        tasks="sst2",
        r=8,
        t=2,
        popsize=4,
        steps_per_round=2,
        num_rounds=2,
        n_test=6,
        shots_per_class=3,
        min_users=users,
        max_tokens=96,
        record_transcript=True,
        **defence,
    )
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config.to_run_config()))
    box = BlackBox(tiny, ProjectedPrompt.for_backbone(tiny, config.t, config.r, config.seed), max_tokens=96)
    strategy = BBTStrategy.from_config(config, box, np.zeros(config.r, np.float32))
    strategy.transcript = TranscriptWriter(folder / "transcript")
    strategy.start(LoopbackGrid(users, config.to_run_config()), num_rounds=config.num_rounds)
    return folder


@pytest.mark.usefixtures("task_identity")
def test_every_attack_runs_on_a_recorded_run_and_exposure_sees_the_decoys(tiny, tmp_path):
    run = recorded_run(tiny, tmp_path / "run", decoy_texts=1.0)
    results = run_attack(run, "all", shadows=2, references=1, non_members=5)
    assert set(results) == {"label-selection", "membership", "attribute", "exposure"}
    for name in results:
        assert json.loads((run / "privacy" / f"{name}.json").read_text())["attack"] == name
    assert (run / "privacy" / "membership_roc.png").stat().st_size > 0
    # label selection's accuracy is its predictions' agreement with the users' training labels, counted here
    transcript, truth = (
        Transcript(run),
        ground_truth(RunConfig.from_run_config(json.loads((run / "config.json").read_text())), [0, 1, 2]),
    )
    agree = [
        infer_labels(transcript, p)[sha]["label"] == label for p in range(3) for sha, label in truth[p].train.items()
    ]
    assert results["label-selection"]["texts"] == len(agree) == 3 * 6
    assert results["label-selection"]["accuracy"] == pytest.approx(np.mean(agree))
    # every training row is a member challenge, and 5 rows of the task outside each user's training set are not
    assert results["membership"]["members"] == 3 * 6 and results["membership"]["non_members"] == 3 * 5
    assert results["membership"]["references"] == 2  # the start vector and one shadow
    low, high = results["membership"]["auc_ci95"]
    assert low <= results["membership"]["auc"] <= high
    # its references and challenges are seeded: a rerun scores the same
    assert run_attack(run, "membership", references=1, non_members=5)["auc"] == results["membership"]["auc"]
    assert results["attribute"]["attribute"] == "label-skew" and results["attribute"]["users"] == 3
    exposure = results["exposure"]["mean"]
    assert exposure["training_rows_seen"] == 1.0 and exposure["dev_rows_seen"] == 1.0  # decoys are dev rows
    assert exposure["scored_texts_that_are_training_rows"] == 0.5 and exposure["test_rows_seen"] == 1.0
    with pytest.raises(ValueError, match="unknown attack"):
        run_attack(run, "telepathy")
    (run / "privacy" / "exposure.json").unlink()
    assert cli.main(["attack", "--run", str(run), "--attack", "exposure"]) == 0  # the command line writes it again
    assert json.loads((run / "privacy" / "exposure.json").read_text())["mean"] == exposure


@pytest.mark.usefixtures("task_identity")
def test_the_shadow_cache_serves_a_shadow_only_when_nothing_it_depends_on_changed(tiny, tmp_path, monkeypatch):
    run = recorded_run(tiny, tmp_path / "run")
    shadows = Shadows(run, np.zeros(8, np.float32), tiny, cache=tmp_path / "shadows")
    rows, words = shadows.public_rows("sst2")[:4], shadows.label_words("sst2")
    z = shadows.train(rows, words, seed=1)
    assert len(list((tmp_path / "shadows").glob("*.npy"))) == 1
    trained = []
    monkeypatch.setattr(Shadows, "_train", lambda self, *args: trained.append(args) or np.ones(8, np.float32))
    assert np.array_equal(shadows.train(rows, words, seed=1), z) and not trained  # served from the cache
    shadows.train(rows, words, seed=2)
    shadows.train(rows[:3], words, seed=1)
    shadows.config = dataclasses.replace(shadows.config, selection_noise=0.5)
    shadows.train(rows, words, seed=1)
    assert len(trained) == 3  # another seed, other rows, another defence: each trained afresh
