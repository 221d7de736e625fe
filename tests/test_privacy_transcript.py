"""The provider's transcript and the user-side defences, through the real apps on the loopback grid:
the transcript holds exactly what crossed the wire (round trip, schema version), and each defence
changes what is on the wire as it claims (clipped + noised z, decoy texts, decoy candidates, noisy
selection), and draw their randomness from the user's secret, not the public run seed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cbp_fed import protocol as wire
from cbp_fed.client_app import User
from cbp_fed.config import RunConfig
from cbp_fed.privacy import defences
from cbp_fed.privacy.transcript import VERSION, Transcript, TranscriptWriter, text_hash
from cbp_fed.privacy.utility import utility_of
from cbp_fed.prompts import PromptGenerator
from cbp_fed.protocol import SELECT_POINTS
from cbp_fed.search import CMASearch
from cbp_fed.service import BlackBox, Query
from strategies import CBPStrategy

from .loopback import LoopbackGrid

pytestmark = pytest.mark.usefixtures("task_identity")

R, K, POP = 8, 2, 4
SMALL = dict(
    backbone="tiny-random", tasks="sst2", r=R, m=8, t=2, popsize=POP, steps_per_round=K, n_test=6, shots_per_class=3
)


def run_rounds(tiny, tmp_path, rounds=2, users=2, **defence):
    """A recorded CBP run on the loopback grid, its config.json beside the transcript as in a run
    folder; returns (strategy, grid, transcript folder, Flower's Result)."""
    config = RunConfig(**SMALL, num_rounds=rounds, **defence)
    torch.manual_seed(0)  # the generator's layers: the same model in every run of a test
    gen = PromptGenerator(tiny.d, r=R, m=8, t=2, a_seed=0)
    strategy = CBPStrategy.from_config(
        config, BlackBox(tiny, gen, max_tokens=96), np.zeros(R, np.float32), domain="general"
    )
    strategy.transcript = TranscriptWriter(tmp_path / "transcript")
    grid = LoopbackGrid(users, config.to_run_config())
    result = strategy.start(grid, num_rounds=rounds)
    (tmp_path / "config.json").write_text(json.dumps(config.to_run_config()))
    return strategy, grid, tmp_path / "transcript", result


def test_transcript_round_trip_holds_what_crossed_the_wire(tiny, tmp_path):
    strategy, grid, folder, _ = run_rounds(tiny, tmp_path)
    schema = json.loads((folder / "schema.json").read_text())
    assert schema["version"] == VERSION and "candidates" in schema["npz"]
    transcript = Transcript(tmp_path)
    assert transcript.users() == [0, 1]
    views = transcript.rounds(0)
    assert [v.round for v in views] == [1, 2]
    user = User(grid.contexts[1000])
    for view in views:
        assert view.candidates.shape == (K, POP, R) and view.scores.shape == (K, POP, 6, 2)
        assert view.batches.shape == (K, 6) and view.eval_scores.shape == (6, 2)
        train, dev, blank = (
            [text_hash(ex.passage, ex.query) for ex in rows]
            for rows in (user.split.train, user.split.dev, user.content_free_rows())
        )
        # the dev texts ride along for the selection of the kept z, the content-free ones for the user's own options
        assert view.train_hashes == train + dev + blank and len(blank) == 3
        assert (view.batches < len(train)).all() and view.select_batch.tolist() == list(range(6, 12))
        assert view.select_z.shape == (SELECT_POINTS, R) and view.select_scores.shape == (SELECT_POINTS, 6, 2)
        assert any(np.array_equal(view.final_z, point) for point in view.select_z)  # the kept z is one of them
        assert view.eval_hashes == [text_hash(ex.passage, ex.query) for ex in user.split.test]
        assert view.label_words == [" positive", " negative"] and view.task == "sst2"
    # the user's own options: no-prompt scores of its train, dev and content-free texts and of its test texts, once
    first = views[0].plain
    assert first["plain_train_batch"].tolist() == list(range(len(view.train_hashes)))
    assert first["plain_train_scores"].shape == (len(view.train_hashes), 2)
    assert first["plain_eval_batch"].tolist() == list(range(len(view.eval_hashes)))
    assert first["plain_eval_scores"].shape == (len(view.eval_hashes), 2) and views[1].plain is None
    np.testing.assert_array_equal(views[-1].final_z, strategy.user_z[0])
    np.testing.assert_array_equal(views[-1].eval_z, grid.contexts[1000].state.array_records["z"]["z"].numpy())
    np.testing.assert_array_equal(transcript.final_z(0), strategy.user_z[0])
    passage, query = transcript.text(0, views[0].train_hashes[0])
    assert passage + query == user.split.train[0].text
    assert np.isnan(views[0].bytes).all()  # the loopback grid is not metered
    (folder / "schema.json").write_text(json.dumps({**schema, "version": VERSION + 1}))
    with pytest.raises(ValueError, match="version"):
        Transcript(tmp_path)


def test_each_recorded_step_is_its_candidates_scored_on_the_texts_at_its_batch_positions(tiny, tmp_path):
    """Value for value: the recorded scores of a step (and of the selection) are what the BlackBox returns for
    its recorded points on the recorded texts at its recorded positions (mini-batches of 2 of the 6 training
    texts, so the positions matter)."""
    strategy, _, _, _ = run_rounds(tiny, tmp_path, batch_size=2)
    transcript, box = Transcript(tmp_path), strategy.blackbox
    train_batches = []
    for p in transcript.users():
        for view in transcript.rounds(p):
            assert len(view.steps()) == K
            train_batches += [batch.tolist() for _, batch, _ in view.steps()]
            for z, batch, scores in view.steps() + [(view.select_z, view.select_batch, view.select_scores)]:
                passages, queries = zip(*(transcript.text(p, view.train_hashes[i]) for i in batch))
                (rescored,) = box.score([Query(z, passages, queries, view.label_words)])
                np.testing.assert_allclose(scores, rescored, rtol=1e-5, atol=1e-5)
    assert all(len(b) == 2 for b in train_batches) and any(b != [0, 1] for b in train_batches)


def test_dp_release_is_clipped_and_noised_and_is_all_the_provider_gets(tiny, tmp_path):
    clip = 0.5
    strategy, grid, _, _ = run_rounds(tiny, tmp_path, rounds=1, users=1, dp_clip=clip, sigma0=3.0, select_on_dev=False)
    transcript = Transcript(tmp_path)
    view = transcript.rounds(0)[0]
    clean = grid.contexts[1000].state.config_records["search"]
    mean = CMASearch.from_bytes(clean["blob"]).result
    assert np.linalg.norm(mean - view.z_start) > clip  # the search moved further than the clip ...
    np.testing.assert_allclose(np.linalg.norm(view.final_z - view.z_start), clip, rtol=1e-5)  # ... the upload did not
    np.testing.assert_allclose(view.eval_z, view.final_z)  # evaluation sends the release, never the clean z
    _, grid, _, _ = run_rounds(
        tiny, tmp_path / "noised", rounds=1, users=1, dp_clip=clip, dp_noise=2.0, sigma0=3.0, select_on_dev=False
    )
    noised = Transcript(tmp_path / "noised").rounds(0)[0].final_z
    # the same search (the noise is added after it), so the difference is exactly the user's Gaussian draw
    # of std dp-noise x dp-clip = 1.0, seeded by its secret (partition 0, round 1), not by the public run seed
    secret = int(grid.contexts[1000].state.config_records["secret"]["secret"])
    expected = np.random.default_rng([secret, 0, 1, 6]).normal(0.0, 2.0 * clip, size=R)
    np.testing.assert_allclose(noised - view.final_z, expected, atol=1e-5)
    public = np.random.default_rng([0, 0, 1, 6]).normal(0.0, 2.0 * clip, size=R)
    assert not np.allclose(noised - view.final_z, public, atol=0.1)  # what a provider knowing the seed would subtract


def test_decoy_texts_and_candidates_are_on_the_wire_and_ignored_by_the_user(tiny, tmp_path):
    _, grid, _, _ = run_rounds(tiny, tmp_path, rounds=1, users=1, decoy_texts=1.0, decoy_candidates=0.5)
    view = Transcript(tmp_path).rounds(0)[0]
    user = User(grid.contexts[1000])
    train = {text_hash(ex.passage, ex.query) for ex in user.split.train}
    dev = {text_hash(ex.passage, ex.query) for ex in user.split.dev}
    blank = {text_hash(ex.passage, ex.query) for ex in user.content_free_rows()}
    assert len(view.train_hashes) == 15 and set(view.train_hashes) == train | dev | blank  # 6 training, 6 decoys
    assert view.train_hashes[:6] != [text_hash(ex.passage, ex.query) for ex in user.split.train]  # mixed in
    assert view.candidates.shape == (K, POP + 2, R) and view.scores.shape == (K, POP + 2, 12, 2)  # 4 + 2 decoys,
    # each scored on its batch: the 6 training texts and the 6 decoys
    # the user told CMA-ES only its real candidates (popsize per generation), on its training texts only
    search = CMASearch.from_bytes(grid.contexts[1000].state.config_records["search"]["blob"])
    assert search.calls == K * POP


def test_selection_noise_changes_the_told_ranking():
    """The noise comes from each user's own secret, so one noisy user can keep the quiet ranking by chance;
    of five noisy users, at least one moves its mean elsewhere."""

    def next_population(config) -> tuple[np.ndarray, np.ndarray]:
        grid = LoopbackGrid(1, config)
        reply = grid.send_and_receive([wire_message(wire.start(1, np.zeros(R), "run"), wire.BEGIN)])[0]
        first = wire.read_array(reply.content, "query", "z", 2)
        scores = np.random.default_rng(0).normal(size=(POP, 6, 2))
        reply = grid.send_and_receive([wire_message(wire.scores(scores), wire.STEP)])[0]
        return first, wire.read_array(reply.content, "query", "z", 2)

    quiet_first, quiet_next = next_population(RunConfig(**SMALL).to_run_config())
    noisy = [next_population(RunConfig(**SMALL, selection_noise=5.0).to_run_config()) for _ in range(5)]
    for first, _ in noisy:
        np.testing.assert_array_equal(first, quiet_first)
    assert any(not np.allclose(following, quiet_next) for _, following in noisy)  # a different ranking moved it


def wire_message(content, kind):
    from flwr.app import Message

    return Message(content, dst_node_id=1000, message_type=kind, group_id="1")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("dp-noise", 1.0, "needs dp-clip > 0"),
        ("dp-delta", 0.0, "must be in \\(0, 1\\)"),
        ("decoy-texts", 1.5, "must be in \\[0, 1\\]"),
        ("decoy-candidates", -0.1, "must be in \\[0, 4\\]"),
        ("selection-noise", -1.0, "must be >= 0"),
        ("loss-clip", -1.0, "must be >= 0"),
    ],
)
def test_bad_defence_settings_are_named(key, value, message):
    with pytest.raises(ValueError, match=f"'{key}'.*{message}"):
        RunConfig.from_run_config({key: value})


def test_gaussian_release_clips_the_shift_from_the_anchor():
    z, anchor = np.array([3.0, 4.0]), np.zeros(2)
    np.testing.assert_allclose(defences.gaussian_release(z, anchor, 1.0, 0.0, 0), [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(defences.gaussian_release(z, anchor, 10.0, 0.0, 0), z)
    draws = np.stack([defences.gaussian_release(np.zeros(2), anchor, 1.0, 3.0, s) for s in range(4000)])
    assert draws.std() == pytest.approx(3.0, rel=0.05)


def test_utility_from_the_transcript_matches_what_the_users_reported(tiny, tmp_path):
    _, grid, _, result = run_rounds(tiny, tmp_path, rounds=1, users=3)
    utility = utility_of(tmp_path)
    assert utility["users"] == 3
    assert utility["accuracy"] == pytest.approx(result.evaluate_metrics_clientapp[1]["accuracy"])
    tests = [[ex.label for ex in User(context).split.test] for context in grid.contexts.values()]
    majority = np.mean([np.bincount(labels).max() / len(labels) for labels in tests])  # each user's own test labels
    assert math.log(2) / 2 < utility["loss"] < 5 and utility["constant_accuracy"] == pytest.approx(majority)
