"""Output read from a log or a pipe keeps its content: tables are not cut to 80 columns, and a model load
is one line, not transformers' progress bars."""

from __future__ import annotations

import json

import rich
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cbp_fed import cli
from cbp_fed.backbone import FrozenLM
from cbp_fed.console import keep_lines_whole
from cbp_fed.tasks import task_names
from simulations.local_run import print_rounds

ROUND = {
    "users_ok": 300,
    "users_failed": 0,
    "train_loss": 0.6931,
    "test_accuracy": 0.8125,
    "test_accuracy_std": 0.05,
    "dev_accuracy_before": 0.5,
    "dev_accuracy": 0.625,
    "bytes_up_per_user": 41692.0,
    "bytes_down_per_user": 4802.0,
    "seconds": 83.4,
    "own_best_test_accuracy": 0.7031,
}


def test_the_rounds_table_keeps_every_cell_when_stdout_is_a_pipe(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    rounds = [{"round": 1, "start_test_accuracy": 0.5, "start_users": 300, **ROUND}, {"round": 2, **ROUND}]
    (tmp_path / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds))
    print_rounds(tmp_path)
    out = capsys.readouterr().out
    assert "…" not in out
    for cell in (
        "dev acc: kept before -> now",
        "down KB/user",
        "seconds",
        "0.812 ± 0.050",
        "0.500 -> 0.625",
        "40.7",
        "0.703",
    ):
        assert cell in out, f"{cell!r} was cut or wrapped:\n{out}"


def test_cbp_fed_tasks_lists_every_task_whole_in_a_pipe(capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert cli.main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 2}
    assert set(task_names()) <= set(rows)
    assert "commonsense" in rows["arc-easy"] and "user" in rows["arc-easy"] and "4 options" in rows["arc-easy"]
    assert "SDT" in rows["bioasq"] and "label words ' positive' / ' negative'" in rows["drug-reviews-other"]


def test_a_finished_progress_line_is_not_cut_in_a_pipe(capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(rich, "_console", None)  # a fresh global console on this test's (piped) stdout
    keep_lines_whole()
    columns = (TextColumn("bbt /a/long/path/to/the/task/spec/of/this/user/reviews.toml seed 0"), BarColumn())
    columns += (TextColumn("{task.completed}/{task.total} calls, best batch loss 0.186"), TimeElapsedColumn())
    with Progress(*columns) as bar:
        bar.add_task("search", total=60, completed=60)
    out = capsys.readouterr().out
    assert "…" not in out and "60/60 calls, best batch loss 0.186 0:00:00" in out, out


def test_a_model_load_is_one_line_without_progress_bars(tiny, capfd):
    capfd.readouterr()
    FrozenLM.load("tiny-random")
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "\r" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("loaded backbone tiny-random (float32 on cpu)"), err
