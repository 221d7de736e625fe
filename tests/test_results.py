"""RunFolder: round log round-trip, JSON files, plots that exist only when their keys do."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cbp_fed.results import RunFolder, console_round_line

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG_SIGNATURE)


def test_rounds_are_appended_and_read_back(tmp_path):
    run = RunFolder(tmp_path, "demo")
    assert run.path == tmp_path / "demo" and run.path.is_dir()
    assert run.rounds() == []
    records = [{"round": r, "train_loss": 1.0 / r, "per_type": {"train.begin": r}} for r in (1, 2, 3)]
    for record in records:
        run.log_round(record)
    assert run.rounds() == records
    assert len((run.path / "rounds.jsonl").read_text().splitlines()) == 3
    assert RunFolder(tmp_path, "demo").rounds() == records  # reopening resumes the same log


def test_numpy_values_are_logged_as_plain_numbers(tmp_path):
    run = RunFolder(tmp_path, "np")
    run.log_round({"round": np.int64(1), "test_accuracy": np.float32(0.5), "z": np.zeros(2)})
    assert run.rounds() == [{"round": 1, "test_accuracy": 0.5, "z": [0.0, 0.0]}]


def test_log_round_needs_a_round_and_rounds_names_a_bad_line(tmp_path):
    run = RunFolder(tmp_path, "bad")
    with pytest.raises(ValueError, match="needs a 'round' key"):
        run.log_round({"train_loss": 1.0})
    run.log_round({"round": 1})
    with (run.path / "rounds.jsonl").open("a") as file:
        file.write('{"round": 2, "trai\n')
    with pytest.raises(ValueError, match=r"rounds.jsonl:2 is not a JSON line"):
        run.rounds()


def test_config_and_summary_round_trip_with_sorted_keys(tmp_path):
    run = RunFolder(tmp_path, "json")
    config = {"strategy": "cbp", "alpha": 0.5, "num-rounds": 3}
    summary = {"final_accuracy": 0.8, "bytes": {"up": 10, "down": 20}}
    run.write_config(config)
    run.write_summary(summary)
    text = (run.path / "config.json").read_text()
    assert json.loads(text) == config and text.index('"alpha"') < text.index('"num-rounds"') < text.index('"strategy"')
    assert json.loads((run.path / "summary.json").read_text()) == summary
    assert not list(run.path.glob("*.tmp"))


def test_default_run_names_are_timestamps_and_never_collide(tmp_path):
    first, second = RunFolder(tmp_path), RunFolder(tmp_path)
    assert first.path != second.path and first.path.name[:8].isdigit()
    with pytest.raises(ValueError, match="single folder name"):
        RunFolder(tmp_path, "../escape")


def test_plots_exist_for_present_keys(tmp_path):
    run = RunFolder(tmp_path, "plots")
    for r in range(1, 5):
        record = {"round": r, "train_loss": 1.0 / r, "bytes_up_per_user": 2048 * r, "bytes_down_per_user": 4096}
        if r % 2 == 0:  # accuracy only on evaluation rounds
            record |= {"test_accuracy": 0.5 + 0.1 * r, "test_accuracy_std": 0.05}
        run.log_round(record)
    paths = run.plot()
    assert sorted(p.name for p in paths) == ["accuracy.png", "bytes.png", "fitness.png"]
    assert all(_is_png(p) for p in paths)


def test_plots_whose_keys_never_appear_are_skipped(tmp_path):
    run = RunFolder(tmp_path, "sparse")
    run.log_round({"round": 1, "bytes_down_per_user": 100})
    run.log_round({"round": 2, "test_accuracy": 0.6})  # no std: no band, still a plot
    run.log_round({"round": 3, "test_accuracy": None, "test_accuracy_std": None})  # nobody could be evaluated
    assert sorted(p.name for p in run.plot()) == ["accuracy.png", "bytes.png"]
    assert not (run.path / "fitness.png").exists()
    assert RunFolder(tmp_path, "empty").plot() == []


def test_plot_names_a_value_that_is_not_a_number(tmp_path):
    run = RunFolder(tmp_path, "typed")
    run.log_round({"round": 1, "bytes_up_per_user": {"payload_bytes": 1.0}})
    with pytest.raises(ValueError, match="round 1: 'bytes_up_per_user' must be a number"):
        run.plot()


def test_console_round_line():
    full = {
        "round": 3,
        "users_ok": 10,
        "users_failed": 1,
        "train_loss": 0.43214,
        "test_accuracy": 0.8125,
        "test_accuracy_std": 0.04,
        "bytes_up_per_user": 1536,
        "bytes_down_per_user": 4608,
        "seconds": 12.34,
    }
    assert console_round_line(full) == (
        "round 3 | users 10 ok, 1 failed | loss 0.4321 | acc 0.8125 ± 0.0400 | up 1.5 KiB, down 4.5 KiB per user"
        " | 12.3 s"
    )
    assert console_round_line({"round": 1, "users_ok": 2}) == "round 1 | users 2 ok, 0 failed"
    everyone_failed = {"round": 2, "users_ok": 0, "users_failed": 3, "test_accuracy": None, "test_accuracy_std": None}
    assert console_round_line(everyone_failed) == "round 2 | users 0 ok, 3 failed"
