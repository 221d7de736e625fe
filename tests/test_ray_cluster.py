"""The Ray cluster script's bookkeeping: which run it starts and how it reads the run's rounds."""

from __future__ import annotations

import json

import pytest

from simulations.local_run import ROOT
from simulations.ray_cluster import SMALL_RUN, round_lines, run_settings


def test_a_preset_run_gets_the_users_the_scale_task_and_its_own_folder(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr("simulations.scale_task.write", lambda copies, folder: written.append(copies) or "boolq.toml")
    settings = run_settings(ROOT / "simulations" / "scale-1000.toml", 50, tmp_path)
    assert settings["min-users"] == 50 and settings["tasks"] == "boolq.toml" and written == [40]
    assert settings["results-dir"] == str(tmp_path) and settings["run-name"] == "ray-cluster"
    assert settings["popsize"] == 6  # the preset's own keys are kept
    small = run_settings(None, 4, tmp_path)
    assert small["tasks"] == SMALL_RUN["tasks"] and small["min-users"] == 4 and written == [40]


def test_round_lines_give_the_framework_time_per_user(tmp_path):
    rounds = [
        {"round": 1, "users_ok": 100, "seconds": 12.0, "forward_seconds": 2.0, "calls": 7},
        {"round": 2, "users_ok": 99, "seconds": 8.5, "forward_seconds": 3.5},
    ]
    (tmp_path / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds))
    lines = round_lines(tmp_path, 100)
    assert [line["framework_ms_per_user"] for line in lines] == pytest.approx([100.0, 50.0])
    assert [line["users_ok"] for line in lines] == [100, 99] and "calls" not in lines[0]
    assert round_lines(tmp_path / "missing", 100) == []  # a run that never wrote a round
