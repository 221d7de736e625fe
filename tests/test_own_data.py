"""A user's own data file as `cbp-fed customize --task`: it runs on a spec inferred from its columns (printed
and kept with the run), or fails in one line saying how to describe it and where the README shows how."""

from __future__ import annotations

import json
import tomllib

import pytest

from cbp_fed import cli
from cbp_fed.backbone import FrozenLM
from cbp_fed.service import BlackBox
from cbp_fed.tasks import load_task_spec
from cbp_fed.tasks.infer import infer_spec

README_SECTION = 'README, "Your own data"'


def reviews_csv(path, header="text,sentiment", labels=("negative", "positive"), n=40):
    """``n`` reviews, alternately awful (``labels[0]``) and great (``labels[1]``), under ``header`` (text
    column first, label second)."""
    rows = [f"review {i} was {'great' if i % 2 else 'awful'},{labels[i % 2]}\n" for i in range(n)]
    path.write_text(header + "\n" + "".join(rows))
    return path


@pytest.fixture
def customize(tiny, monkeypatch, capsys, tmp_path):
    """`cbp-fed customize --task TASK ...` (zero-shot, tiny backbone) -> (exit code, stderr, model calls)."""
    monkeypatch.setattr(FrozenLM, "load", staticmethod(lambda *args, **kwargs: tiny))
    monkeypatch.setattr(cli, "console", cli.make_console(stderr=True))
    calls = []
    score = BlackBox.score
    monkeypatch.setattr(BlackBox, "score", lambda self, queries: calls.append(len(queries)) or score(self, queries))

    def run(task, *options):
        out = tmp_path / "out"
        args = ["customize", "--task", str(task), "--method", "zero-shot", "--shots", "2", "--out", str(out)]
        code = cli.main([*args, "--backbone", "tiny-random", *options])
        return code, capsys.readouterr().err.strip(), calls

    return run


def test_a_csv_as_task_runs_on_an_inferred_spec_that_is_printed_and_kept(customize, tmp_path):
    data = reviews_csv(tmp_path / "reviews.csv")
    code, err, calls = customize(data)
    assert code == 0 and calls, err
    assert 'label_column = "sentiment"' in err and 'label_values = ["negative", "positive"]' in err
    assert README_SECTION in err
    kept = (tmp_path / "out" / "task.toml").read_text()
    assert kept in err  # the spec printed is the spec kept
    spec = tomllib.loads(kept)
    assert spec["passage_template"] == "Text: {text}\n" and spec["template"] == "Sentiment:"
    assert spec["label_words"] == [" negative", " positive"] and spec["source"] == str(data.resolve())
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["task"] == str(data) and summary["test_size"] > 0


def test_the_columns_can_be_named_on_the_command_line(customize, tmp_path):
    data = reviews_csv(tmp_path / "feedback.csv", header="comment,mood", labels=("sad", "happy"))
    code, err, _ = customize(data, "--text-column", "comment", "--label-column", "mood")
    assert code == 0, err
    spec = tomllib.loads((tmp_path / "out" / "task.toml").read_text())
    assert spec["passage_template"] == "Comment: {comment}\n" and spec["template"] == "Mood:"
    assert spec["label_words"] == [" happy", " sad"]


def test_labels_that_are_numbers_need_a_word_each(customize, tmp_path):
    data = reviews_csv(tmp_path / "stars.csv", header="review,stars", labels=("1", "5"))
    code, err, calls = customize(data)
    assert code == 2 and calls == [] and len(err.splitlines()) == 1
    assert "holds 1, 5, not words" in err and '--label-words "word1, word2" (in that order)' in err
    code, err, calls = customize(data, "--label-words", "awful, great")
    assert code == 0 and calls, err
    spec = tomllib.loads((tmp_path / "out" / "task.toml").read_text())
    assert spec["label_values"] == ["1", "5"] and spec["label_words"] == [" awful", " great"]


def test_a_file_whose_task_cannot_be_inferred_fails_in_one_line_saying_how_to_describe_it(customize, tmp_path):
    data = tmp_path / "notes.csv"
    data.write_text("id,note\n" + "".join(f"{i},note number {i}\n" for i in range(30)))  # no label to be found
    code, err, calls = customize(data)
    assert code == 2 and calls == [] and len(err.splitlines()) == 1 and not (tmp_path / "out").exists()
    assert err.startswith("error: cannot infer a task from") and "--label-column" in err and README_SECTION in err


def test_a_named_column_that_is_not_there_is_refused_with_the_columns(customize, tmp_path):
    code, err, _ = customize(reviews_csv(tmp_path / "reviews.csv"), "--label-column", "rating")
    assert code == 2 and "no column 'rating'" in err and "'text', 'sentiment'" in err and README_SECTION in err


def test_inference_picks_the_only_few_valued_column_as_the_label(tmp_path):
    data = tmp_path / "mail.csv"
    rows = "".join(
        f"{i},message {i} about the {'offer' if i % 3 else 'meeting'},{'spam' if i % 3 else 'ham'}\n" for i in range(30)
    )
    data.write_text("id,message,kind\n" + rows)
    spec = infer_spec(str(data))
    assert spec["label_column"] == "kind" and spec["passage_template"] == "Message: {message}\n"
    assert spec["template"] == "Kind:" and spec["label_values"] == ["ham", "spam"]


def test_a_data_file_named_by_a_run_config_says_how_to_describe_it(tmp_path):
    data = reviews_csv(tmp_path / "reviews.csv")
    with pytest.raises(ValueError, match=r"is a data file: a run names a task spec file .*Your own data"):
        load_task_spec(str(data))
