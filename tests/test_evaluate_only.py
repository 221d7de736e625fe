"""Zero-shot and SDT-only through the apps: one evaluation round, no training messages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cbp_fed import protocol as wire
from cbp_fed.comm import MeteredGrid
from cbp_fed.config import RunConfig
from cbp_fed.domain_training import SDTConfig, save_generator, train_generator
from cbp_fed.privacy.transcript import TranscriptWriter
from cbp_fed.privacy.utility import utility_of
from strategies import STRATEGIES

from .loopback import LoopbackGrid, delivered_test_accuracies

pytestmark = pytest.mark.usefixtures("task_identity")


@pytest.mark.parametrize("method", ["zero-shot", "sdt-only"])
def test_evaluate_only_methods_score_each_users_test_set_once(tiny, tmp_path, method):
    generator = tmp_path / "gen"
    gen, meta = train_generator(tiny, SDTConfig(domain="finance", r=16, m=8, t=2, steps=2, pool_size=16, eval_size=8))
    save_generator(gen, meta, generator)
    config = RunConfig(
        method=method, backbone="tiny-random", tasks="sst2", r=16, m=8, t=2, n_test=12, generator=str(generator)
    )
    records = []
    strategy = STRATEGIES[method](config, tiny, tmp_path / "run", records.append)
    strategy.transcript = TranscriptWriter(tmp_path / "run" / "transcript")
    loop = LoopbackGrid(3, config.to_run_config())
    grid = MeteredGrid(loop, node_key=lambda n: strategy.partition_of.get(n, n))
    result = strategy.start(grid, num_rounds=config.num_rounds)

    (record,) = records  # one round whatever num-rounds says: nothing is trained
    assert record["users_evaluated"] == 3 and record["test_examples"] == 36
    # the users' mean, recomputed from the scores they were sent and their own test labels
    assert record["test_accuracy"] == pytest.approx(*delivered_test_accuracies(loop, 1))
    assert record["calls"] == 3  # one scoring of each user's test texts
    assert result.evaluate_metrics_clientapp[1]["users"] == 3
    kinds = {t for user in grid.round_summary(1)["users"].values() for t in user["up"]}
    assert kinds == {wire.EVAL_QUERY, wire.EVAL_SCORE}
    (tmp_path / "run" / "config.json").write_text(json.dumps(config.to_run_config()))
    utility = utility_of(tmp_path / "run")  # the evaluation is in the transcript, as in a training run
    assert utility["users"] == 3 and utility["accuracy"] == pytest.approx(record["test_accuracy"])
    if method == "sdt-only":  # every user is scored with the domain's z0
        np.testing.assert_array_equal(strategy.start_vector(), gen.z0.detach().numpy())
