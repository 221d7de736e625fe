"""RunFolder: round log round-trip, JSON files, plots that exist only when their keys do, a README that
documents every file and field of a run folder; `cbp-fed report` on run folders and both kinds of summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cbp_fed.cli import main
from cbp_fed.report import report
from cbp_fed.results import (
    RENAMED_SUMMARY_KEYS,
    SUMMARY_FIELDS,
    RunFolder,
    chance_accuracy,
    console_round_line,
    upgrade_summary,
)

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


# ----------------------------------------------------------------------------- self-explaining run folders
def test_figures_show_accuracy_in_percent_with_chance_and_loss_from_zero(tmp_path):
    run = RunFolder(tmp_path, "figures")
    run.log_round({"round": 1, "train_loss": 0.89, "test_accuracy": 0.7, "start_test_accuracy": 0.55})
    run.log_round({"round": 2, "train_loss": 0.88, "test_accuracy": 0.8})
    run.write_summary({"chance_test_accuracy": 0.25})
    figures = run.figures()
    accuracy = figures["accuracy"].axes[0]
    lines = {line.get_label(): list(line.get_ydata()) for line in accuracy.get_lines()}
    assert lines["test accuracy\n(users' texts pooled)"] == pytest.approx([70.0, 80.0])  # %, as the README reports it
    assert lines["chance (1 / answers)"] == pytest.approx([25.0, 25.0])
    assert lines["start (before round 1)"] == pytest.approx([55.0, 55.0])  # each round read against the start
    legend = accuracy.get_legend()
    assert legend is not None and legend.get_bbox_to_anchor().x0 > accuracy.bbox.x1  # beside the axes, not on a line
    assert figures["fitness"].axes[0].get_ylim()[0] == 0  # not zoomed onto 0.88-0.89
    run.write_summary({"chance_test_accuracy": None})  # a custom task spec: no chance line
    assert "chance (1 / answers)" not in [line.get_label() for line in run.figures()["accuracy"].axes[0].get_lines()]


def test_old_summary_keys_are_read_under_their_new_names():
    old = {"calls": 268, "wall_seconds": 761.2, "train_metrics": {"1": {"calls": 18.0}, "10": {"calls": 180.0}}}
    new = upgrade_summary(old)
    assert new["model_calls_total_all_users"] == 268 and new["seconds_wall_total"] == 761.2
    assert new["train_calls_per_user"] == 180.0  # the last round (10), not the last in text order ("1" < "10")
    assert set(RENAMED_SUMMARY_KEYS.values()) <= set(SUMMARY_FIELDS)
    assert upgrade_summary({"train_metrics": {}})["train_calls_per_user"] is None  # evaluation-only methods


def test_chance_accuracy_is_one_over_the_answers_or_none_when_a_task_cannot_be_read(tmp_path):
    assert chance_accuracy(["boolq", "arc-easy"]) == pytest.approx((1 / 2 + 1 / 4) / 2)
    spec = tmp_path / "reviews.json"  # a custom task whose data only its users hold
    fields = {"source": str(tmp_path / "absent.csv"), "template": "{text}", "label_column": "y"}
    spec.write_text(json.dumps(fields | {"label_values": ["1", "0"], "label_words": [" yes", " no"]}))
    assert chance_accuracy(["boolq", str(spec)]) is None


@pytest.fixture(scope="module")
def federated_run(tmp_path_factory):
    """A real ServerApp run (bbt, tiny backbone, 2 users x 2 rounds) over the in-process Grid."""
    from flwr.app import Context, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from cbp_fed.config import RunConfig
    from cbp_fed.server_app import app as server_app

    from .loopback import LoopbackGrid

    results = tmp_path_factory.mktemp("results")
    config = RunConfig(
        **{"backbone": "tiny-random", "tasks": "sst2", "method": "bbt", "r": 16, "popsize": 4, "steps_per_round": 2},
        **{"num_rounds": 2, "n_test": 12, "shots_per_class": 3, "min_users": 2, "seed": 3},
        **{"results_dir": str(results), "run_name": "fed"},
    ).to_run_config()
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 0, 1
    try:
        context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config)
        server_app(LoopbackGrid(2, config), context)
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
    return results / "fed"


def _documented(readme: str) -> set[str]:
    """The names in the first column of the README's tables."""
    return {line.split("`")[1] for line in readme.splitlines() if line.startswith("| `")}


def test_a_run_folders_readme_documents_every_file_and_field(federated_run):
    """Fails when the ServerApp writes a summary key, a round key or a file that the README does not explain."""
    documented = _documented((federated_run / "README.md").read_text())
    summary = json.loads((federated_run / "summary.json").read_text())
    assert set(summary) <= documented, f"undocumented summary keys: {set(summary) - documented}"
    round_keys = {key for record in RunFolder(federated_run.parent, "fed").rounds() for key in record}
    assert round_keys <= documented, f"undocumented round keys: {round_keys - documented}"
    files = {p.name + ("/" if p.is_dir() else "") for p in federated_run.iterdir()}
    assert files <= documented, f"undocumented files: {files - documented}"
    assert {"model_calls_total_all_users", "train_calls_per_user", "seconds_wall_total"} <= set(summary)
    assert not set(RENAMED_SUMMARY_KEYS) & set(summary)  # no key under its old, unit-less name


def test_report_on_a_federated_run_folder_has_its_numbers(federated_run, tmp_path):
    summary = json.loads((federated_run / "summary.json").read_text())
    assert summary["train_calls_per_user"] == 2 * 2 * 4  # rounds x steps x popsize
    assert summary["model_calls_total_all_users"] > 2 * summary["train_calls_per_user"]  # + selection, evaluation
    assert summary["chance_test_accuracy"] == 0.5  # sst2: two answers
    out = tmp_path / "table.md"
    assert main(["report", str(federated_run), "--out", str(out)]) == 0
    accuracy = f"{100 * summary['final_test_accuracy']:.1f} ± {100 * summary['final_test_accuracy_std']:.1f}"
    assert (
        f"| fed | bbt | sst2 | 3 | 2 | 2 | {accuracy} | 50.0 | 16 | {summary['model_calls_total_all_users']:,} | "
        f"{summary['bytes_up_train_payload_per_user_per_round']:,.0f} | "
        f"{summary['bytes_down_train_payload_per_user_per_round']:,.0f} | {summary['seconds_wall_total']:,.0f} |"
    ) in out.read_text()
    assert main(["report", str(federated_run / "summary.json"), "--out", str(out)]) == 0  # the file itself: same row
    assert f"| fed | bbt | sst2 | 3 | 2 | 2 | {accuracy} |" in out.read_text()


def test_report_reads_a_summary_written_before_the_renames(tmp_path):
    """A federated summary.json as the ServerApp wrote it before its keys carried units (results/ has them)."""
    folder = tmp_path / "old-run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"seed": 0, "method": "cbp"}))
    old = {
        **{"method": "cbp", "backbone": "smollm2-135m", "tasks": ["arc-easy"], "rounds": 3, "users": 4},
        **{"final_test_accuracy": 0.4635416666666667, "final_test_accuracy_std": 0.05961209969926872},
        **{"calls": 268, "tokens": 163685, "forward_seconds": 739.14, "wall_seconds": 761.18},
        **{"mean_bytes_up_per_user_round": 56251.25, "mean_bytes_down_per_user_round": 8391.0},
        "train_metrics": {"1": {"calls": 18.0}, "2": {"calls": 36.0}, "3": {"calls": 54.0}},
    }
    (folder / "summary.json").write_text(json.dumps(old))
    text = report([folder])
    assert "| old-run | cbp | arc-easy | 0 | 3 | 4 | 46.4 ± 6.0 | - | 54 | 268 | 56,251 | 8,391 | 761 |" in text


def test_report_takes_customize_and_federated_summaries_together(tmp_path):
    customize = {
        **{"task": "sst2", "method": "bbt", "budget": 8, "eval_split": "test", "majority_rate": 0.6},
        **{"test_accuracy": 0.7, "test_accuracy_calibrated": 0.65, "test_predicted_share": [3, 7], "test_size": 10},
        **{"wall_seconds": 2.0, "curve": []},
    }
    federated = {"method": "bbt", "tasks": ["sst2"], "rounds": 1, "final_test_accuracy": None}
    for name, summary in (("one", customize), ("fed", federated)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    text = report([tmp_path / "one", tmp_path / "fed"])
    assert "| sst2 | bbt | 8 | 1 | test | 70.0 | 65.0 | 60.0 | 30.0 | 10 | 2 |" in text
    assert "| fed | bbt | sst2 | - | 1 | - | - | - | - | - | - | - | - |" in text  # nobody evaluated: no numbers


@pytest.mark.parametrize("case", ["missing", "folder", "not json", "other json"])
def test_report_on_a_bad_path_exits_2_naming_it(tmp_path, capsys, case):
    path = tmp_path / "some dir" / "x.json"
    path.parent.mkdir()
    if case == "folder":
        path.mkdir()
    elif case == "not json":
        path.write_text("round,accuracy\n1,0.5\n")
    elif case == "other json":
        path.write_text(json.dumps({"machine": {}, "federation": {}}))
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")  # one line, however long the path
    assert str(path) in err
    assert {"missing": "no such file", "folder": "no summary.json", "not json": "not a JSON summary"}.get(
        case, "not a summary of cbp-fed customize or of a federated run"
    ) in err


def test_customize_folder_readme_documents_every_summary_key(tmp_path):
    out = tmp_path / "bbt"
    args = ["customize", "--task", "sst2", "--method", "bbt", "--backbone", "tiny-random", "--budget", "8"]
    assert main([*args, "--popsize", "4", "--shots", "2", "--n-test", "10", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    documented = _documented((out / "README.md").read_text())
    assert set(summary) <= documented, f"undocumented summary keys: {set(summary) - documented}"
    assert {p.name for p in out.iterdir()} <= documented
    assert "| sst2 | bbt | 8 | 1 | test |" in report([out])
