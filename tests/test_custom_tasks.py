"""Custom tasks (a user's own data through a JSON/TOML spec) and `cbp-fed customize`'s answers to bad input.

Every bad input must end in exit code 2 with one `error:` line naming the file, key, row or value and
what is allowed, before any model call and without writing the run folder.
"""

from __future__ import annotations

import json
import re

import datasets
import pytest
import torch
from safetensors.torch import save_file

from cbp_fed import cli
from cbp_fed.backbone import FrozenLM, describe
from cbp_fed.customize import CustomizeConfig, customize, pieces
from cbp_fed.domain_training import CHECKPOINT_VERSION, load_generator
from cbp_fed.prompts import PromptGenerator
from cbp_fed.service import BlackBox, Limits
from cbp_fed.tasks import (
    CustomTaskConfig,
    load_custom_task,
    load_task,
    load_task_spec,
    server_user_partition,
    user_split,
)
from cbp_fed.tasks.custom import CustomTask

LONG = " ".join(f"word{i}" for i in range(400))  # far over 64 tokens


# --- loading: the formats, the templates, labels and options ------------------------------------------------


@pytest.fixture
def sentiment_csv(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text(
        "text,sentiment\nGreat quarter for the bank.,positive\nShares fell sharply.,negative\nRevenue up.,positive\n"
    )
    return path


def csv_config(path, **changes):
    fields = dict(
        source=str(path),
        template="Headline: {text}\nSentiment:",
        label_column="sentiment",
        label_values=("positive", "negative"),
        label_words=(" positive", " negative"),
        name="fin-sentiment",
        domain="finance",
    )
    return CustomTaskConfig(**{**fields, **changes})


def test_custom_task_from_csv(sentiment_csv):
    task = load_custom_task(csv_config(sentiment_csv))
    assert task.name == "fin-sentiment" and task.domain == "finance"
    assert [e.label for e in task.examples] == [0, 1, 0]
    assert task.examples[1].query == "Headline: Shares fell sharply.\nSentiment:"
    assert [e.uid for e in task.examples] == ["fin-sentiment/0", "fin-sentiment/1", "fin-sentiment/2"]


def test_csv_cells_are_read_as_written(tmp_path):
    """ "NA" is a text, not a missing value, and integer labels stay "1" (not 1.0) beside an empty cell."""
    path = tmp_path / "na.csv"
    path.write_text("text,label,note\nNA,1,\nfine,0,x\n")
    task = load_custom_task(
        CustomTaskConfig(
            source=str(path),
            passage_template="{note}",
            template="Text: {text}\nAnswer:",
            label_column="label",
            label_values=("1", "0"),
            label_words=(" yes", " no"),
        )
    )
    assert [(e.passage, e.query, e.label) for e in task.examples] == [
        ("", "Text: NA\nAnswer:", 0),
        ("x", "Text: fine\nAnswer:", 1),
    ]


def test_custom_task_from_jsonl_with_passage_and_integer_labels(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [
        {"doc": "Rates rose.", "q": "Did rates rise?", "y": 1},
        {"doc": "Rates fell.", "q": "Did rates rise?", "y": 0},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = CustomTaskConfig(
        source=str(path),
        passage_template="{doc}\n",
        template="Question: {q}\nAnswer:",
        label_column="y",
        label_values=(1, 0),
        label_words=(" yes", " no"),
    )
    task = load_custom_task(config)
    assert [(e.passage, e.label) for e in task.examples] == [("Rates rose.\n", 0), ("Rates fell.\n", 1)]
    assert task.examples[0].text == "Rates rose.\nQuestion: Did rates rise?\nAnswer:"
    assert task.name == "custom" and task.domain == "custom"


def test_custom_task_errors_name_the_problem(sentiment_csv, tmp_path):
    with pytest.raises(ValueError, match=r"reviews\.csv row 1: label 'negative'.*not one of label_values"):
        load_custom_task(csv_config(sentiment_csv, label_values=("positive", "neutral")))
    with pytest.raises(ValueError, match=r"reviews\.csv has no column 'headline' \(named by `template`\)"):
        load_custom_task(csv_config(sentiment_csv, template="{headline}\nSentiment:"))
    with pytest.raises(ValueError, match=r"no column 'score' \(named by `label_column`\); its columns: 'text'"):
        load_custom_task(csv_config(sentiment_csv, label_column="score"))
    with pytest.raises(ValueError, match="2 words and 3 values"):
        csv_config(sentiment_csv, label_values=("positive", "negative", "neutral"))
    with pytest.raises(FileNotFoundError, match="missing.csv does not exist"):
        load_custom_task(csv_config(tmp_path / "missing.csv"))
    with pytest.raises(ValueError, match="not a format string"):
        csv_config(sentiment_csv, template="{text\nSentiment:")
    with pytest.raises(ValueError, match="every {} must name a column"):
        csv_config(sentiment_csv, template="{}\nSentiment:")
    with pytest.raises(ValueError, match="label_words must be non-empty strings"):
        csv_config(sentiment_csv, label_words=(" positive", 3))


def test_missing_text_names_its_row_and_column(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text('{"text": "ok", "sentiment": "positive"}\n{"text": null, "sentiment": "negative"}\n')
    with pytest.raises(ValueError, match=r"gaps\.jsonl row 1: column 'text' \(named by `template`\) is empty \(None\)"):
        load_custom_task(csv_config(path))
    nan = tmp_path / "nan.parquet"
    rows = {"text": ["ok", "fine"], "score": [0.5, float("nan")], "sentiment": ["positive", "negative"]}
    datasets.Dataset.from_dict(rows).to_parquet(nan)
    with pytest.raises(
        ValueError, match=r"nan\.parquet row 1: column 'score' \(named by `template`\) is empty \(nan\)"
    ):
        load_custom_task(csv_config(nan, template="Headline: {text} ({score})\nSentiment:"))


def test_custom_hub_task_without_network_says_so(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hugging Face Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RuntimeError, match="needs network access or a local file"):
        load_custom_task(csv_config("takala/financial_phrasebank", hub_config="sentences_allagree"))


@pytest.fixture
def quiz_csv(tmp_path):
    path = tmp_path / "quiz.csv"
    path.write_text(
        "question,first,second,third,gold,key\n"
        "What falls when interest rates rise?,bond prices,rain,the moon,bond prices,0\n"
        "Who sets the policy rate?,a baker,the central bank,a ship,the central bank,1\n"
    )
    return path


def quiz_config(path, **changes):
    fields = dict(
        source=str(path),
        template="Question: {question}\nAnswer:",
        label_column="gold",
        option_columns=("first", "second", "third"),
        name="quiz",
        domain="finance",
    )
    return CustomTaskConfig(**{**fields, **changes})


def test_custom_option_task_from_csv(quiz_csv):
    task = load_custom_task(quiz_config(quiz_csv, length_norm=True))
    assert task.scoring == "options" and task.length_norm and task.label_words == (" A", " B", " C")
    assert [e.label for e in task.examples] == [0, 1]
    assert task.examples[1].options == (" a baker", " the central bank", " a ship")
    assert task.examples[1].query == "Question: Who sets the policy rate?\nAnswer:"
    by_index = load_custom_task(quiz_config(quiz_csv, label_column="key", label_values=(0, 1, 2)))
    assert [e.label for e in by_index.examples] == [0, 1] and not by_index.length_norm


def test_custom_option_task_through_a_toml_spec(quiz_csv, tmp_path):
    spec = tmp_path / "quiz.toml"
    spec.write_text(
        f'source = "{quiz_csv}"\ntemplate = "Question: {{question}}\\nAnswer:"\nlabel_column = "gold"\n'
        'option_columns = ["first", "second", "third"]\nlength_norm = true\nname = "quiz-spec"\n'
    )
    task = load_task_spec(str(spec))
    assert task.scoring == "options" and task.length_norm and task.examples[0].options[0] == " bond prices"


def test_custom_option_task_errors_name_the_column_or_row(quiz_csv, tmp_path):
    with pytest.raises(ValueError, match=r"quiz\.csv has no column 'fourth' \(named by `option_columns`\)"):
        load_custom_task(quiz_config(quiz_csv, option_columns=("first", "fourth")))
    with pytest.raises(ValueError, match=r"row 1: label 'the central bank' in column 'gold' matches 0 of the options"):
        load_custom_task(quiz_config(quiz_csv, option_columns=("first", "third")))
    with pytest.raises(ValueError, match="3 option_columns need as many label_words"):
        quiz_config(quiz_csv, label_words=(" yes", " no"))
    with pytest.raises(ValueError, match="2 or more distinct option_columns"):
        quiz_config(quiz_csv, option_columns=("first", "first"))
    with pytest.raises(ValueError, match="length_norm applies to option scoring only"):
        quiz_config(quiz_csv, option_columns=(), label_values=("a", "b"), label_words=(" a", " b"), length_norm=True)
    gaps = tmp_path / "gaps.csv"
    gaps.write_text("question,first,second,gold\nQ?,yes,,yes\n")
    with pytest.raises(ValueError, match=r"gaps\.csv row 0: column 'second' \(named by `option_columns`\) is empty"):
        load_custom_task(quiz_config(gaps, option_columns=("first", "second")))


# --- the user's own split files, and whose rows they are ------------------------------------------------------


def reviews(n: int, start: int = 0, text: str = "") -> str:
    """A CSV of rows start..start+n-1 of alternating bad (1 star) and good (5 stars) reviews; `text`
    replaces the first row's review."""
    rows = [[f"review {i} was {'great' if i % 2 else 'awful'}", "5" if i % 2 else "1"] for i in range(start, start + n)]
    rows[0][0] = text or rows[0][0]
    return "text,stars\n" + "".join(f"{review},{stars}\n" for review, stars in rows)


SPEC = {
    "template": "Review: {text}\nSentiment:",
    "label_column": "stars",
    "label_values": ["5", "1"],
    "label_words": [" positive", " negative"],
    "name": "reviews",
}


def write_spec(folder, name="reviews.json", **fields):
    """A spec file in `folder` (JSON, or TOML by its suffix) with SPEC's keys and `fields`."""
    keys = {**SPEC, **fields}
    path = folder / name
    if name.endswith(".toml"):
        path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in keys.items()))
    else:
        path.write_text(json.dumps(keys))
    return path


def test_own_train_and_test_files_are_used_as_given_relative_to_the_spec(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text(reviews(40))
    (data / "test.csv").write_text(reviews(7, start=100))
    spec = write_spec(data, "reviews.toml", train="train.csv", test="test.csv")
    monkeypatch.chdir(tmp_path)  # relative paths follow the spec, not the working folder
    task = load_task_spec(str(spec))
    assert isinstance(task, CustomTask) and len(task.examples) == 47
    assert task.test_uids == {f"reviews/test/{i}" for i in range(7)}
    split = user_split(task, seed=0, shots_per_class=4, n_test=300)
    assert {e.uid for e in split.test} == task.test_uids  # the whole test file, nothing else
    assert all(e.uid.startswith("reviews/train/") for e in split.train + split.dev)
    assert (len(split.train), len(split.dev)) == (8, 8)
    assert len(user_split(task, seed=0, shots_per_class=4, n_test=5).test) == 5  # n_test samples a larger file


def test_own_dev_file_is_the_dev_split(tmp_path):
    for name, (n, start) in {"train": (10, 0), "dev": (5, 50), "test": (6, 100)}.items():
        (tmp_path / f"{name}.csv").write_text(reviews(n, start))
    task = load_task_spec(str(write_spec(tmp_path, train="train.csv", dev="dev.csv", test="test.csv")))
    split = user_split(task, seed=1, shots_per_class=4)
    assert {e.uid for e in split.dev} == task.dev_uids == {f"reviews/dev/{i}" for i in range(5)}
    assert len(split.train) == 8 and all(e.uid.startswith("reviews/train/") for e in split.train)
    assert len(user_split(task, seed=1, shots_per_class=4, n_dev=2).dev) == 2


def test_every_row_of_a_custom_task_is_user_side(tmp_path):
    (tmp_path / "reviews.csv").write_text(reviews(40))
    task = load_task_spec(str(write_spec(tmp_path, source="reviews.csv")))
    server, user = server_user_partition(task)
    assert server == () and len(user) == 40  # ~30% would be the provider's under the uid hash
    split = user_split(task, seed=0, shots_per_class=5, n_test=300)
    assert len(split.train) + len(split.dev) + len(split.test) == 40
    assert server_user_partition(load_task("rte"))[0]  # registered tasks keep the provider's share


def test_pieces_keep_each_query_within_the_service_limits(sentiment_csv):
    rows = list(load_custom_task(csv_config(sentiment_csv)).examples) * 5  # 15 rows
    cut = pieces(rows, Limits(max_texts=4, max_total_chars=60))
    assert [row for piece in cut for row in piece] == rows
    assert all(len(piece) <= 4 and sum(len(r.text) for r in piece) <= 60 for piece in cut if len(piece) > 1)


# --- cbp-fed customize: exit code 2, one line naming the problem, nothing written -----------------------------


@pytest.fixture
def cli_run(tiny, monkeypatch, capsys, tmp_path):
    """Run `cbp-fed customize` (tiny backbone, zero-shot unless given) -> (exit code, stderr, calls).

    The backbone is the session's tiny one and BlackBox.score records its calls, so a test can tell
    whether the model was ever asked."""
    monkeypatch.setattr(FrozenLM, "load", staticmethod(lambda *args, **kwargs: tiny))
    calls = []
    score = BlackBox.score
    monkeypatch.setattr(BlackBox, "score", lambda self, queries: calls.append(len(queries)) or score(self, queries))

    def run(spec, *options):
        out = tmp_path / "out"
        args = ["customize", "--task", str(spec), "--backbone", "tiny-random", "--out", str(out), *options]
        if "--method" not in options:
            args += ["--method", "zero-shot"]
        code = cli.main(args)
        err = capsys.readouterr().err.strip()
        assert code == 0 or not out.exists()
        return code, err, calls

    return run


BAD_INPUTS = {
    "empty file": ({"source": "reviews.csv"}, {"reviews.csv": b""}, r"reviews\.csv is empty"),
    "not UTF-8": (
        {"source": "reviews.csv"},
        {"reviews.csv": "text,stars\ncafé au lait,5\n".encode("latin-1")},
        r"custom task file .*reviews\.csv is not UTF-8 text \(byte 0xe9 on line 2\); save it as UTF-8",
    ),
    "broken JSON line": (
        {"source": "reviews.jsonl"},
        {"reviews.jsonl": b'{"text": "fine", "stars": 5}\n{"text": "oops", "stars": 1\n'},
        r"cannot read custom task file .*reviews\.jsonl as jsonl: ArrowInvalid: JSON parse error",
    ),
    "CSV row with an extra field": (
        {"source": "reviews.csv"},
        {"reviews.csv": b"text,stars\nfine,5\nbad, really bad,1\n"},
        r"cannot read custom task file .*reviews\.csv as csv: .*Expected 2 fields in line 3, saw 3",
    ),
    "header only": ({"source": "reviews.csv"}, {"reviews.csv": b"text,stars\n"}, r"reviews\.csv has no rows"),
    "missing file": ({"source": "nowhere.csv"}, {}, r"custom task file .*nowhere\.csv does not exist"),
    "unknown column": (
        {"source": "reviews.csv", "template": "Review: {body}\nSentiment:"},
        {"reviews.csv": reviews(20).encode()},
        r"reviews\.csv has no column 'body' \(named by `template`\); its columns: 'text', 'stars'",
    ),
    "label outside label_values": (
        {"source": "reviews.csv"},
        {"reviews.csv": (reviews(20) + "meh,3\n").encode()},
        r"reviews\.csv row 20: label 3 in column 'stars' is not one of label_values \('5', '1'\)",
    ),
    "blank text": (
        {"source": "reviews.csv"},
        {"reviews.csv": (reviews(20) + ",5\n").encode()},
        r"reviews\.csv row 20: column 'text' \(named by `template`\) is empty \(''\)",
    ),
    "empty test file": (
        {"train": "train.csv", "test": "test.csv"},
        {"train.csv": reviews(20).encode(), "test.csv": b"text,stars\n"},
        r"custom task test file .*test\.csv has no rows",
    ),
    "source and train": (
        {"source": "a.csv", "train": "b.csv"},
        {},
        r"spec .*reviews\.json: custom task 'reviews': give either `source` .* or `train`",
    ),
    "test file beside source": (
        {"source": "a.csv", "test": "b.csv"},
        {},
        r"`dev` and `test` files go with a `train` file, not with `source`",
    ),
    "length_norm as text": ({"source": "a.csv", "length_norm": "false"}, {}, r"length_norm must be true or false"),
    "unknown key": (
        {"source": "a.csv", "tempalte": "x"},
        {},
        r"spec .*reviews\.json: unknown key\(s\) tempalte; keys:",
    ),
    "list as text": ({"source": "a.csv", "label_values": "5,1"}, {}, r"label_values must be a list, got '5,1'"),
    "bad split file type": ({"train": "train.tsv"}, {}, r"`train` file .*train\.tsv must be one of \.csv, \.jsonl"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_custom_task_input_exits_2_naming_it(case, cli_run, tmp_path):
    fields, files, message = BAD_INPUTS[case]
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    code, err, calls = cli_run(write_spec(tmp_path, **fields))
    assert code == 2 and calls == []
    assert err.startswith("error:") and "\n" not in err  # one line, and nothing else: no datasets noise
    assert re.search(message, err), err


@pytest.mark.parametrize("suffix, text", [(".json", '{"source": "a.csv",\n'), (".toml", 'source = "a.csv\n')])
def test_a_broken_spec_file_is_named(suffix, text, cli_run, tmp_path):
    spec = tmp_path / f"reviews{suffix}"
    spec.write_text(text)
    code, err, _ = cli_run(spec)
    assert code == 2 and f"custom task spec {spec} is not valid UTF-8 {suffix[1:].upper()}" in err


def test_over_long_test_row_is_refused_before_any_model_call(cli_run, tmp_path):
    (tmp_path / "train.csv").write_text(reviews(20))
    (tmp_path / "test.csv").write_text(reviews(5, start=100, text=LONG))
    code, err, calls = cli_run(
        write_spec(tmp_path, train="train.csv", test="test.csv"), "--max-tokens", "64", "--shots", "2"
    )
    assert code == 2 and calls == [] and "\n" not in err
    assert "test row reviews/test/0: query of" in err and "exceeds max_tokens=64" in err
    assert "move long text into the spec's `passage_template`" in err


def test_long_text_in_passage_template_runs_and_threads_are_set(cli_run, tmp_path, monkeypatch):
    """The README's shape: the review in passage_template (cut to fit), a short query."""
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    (tmp_path / "train.csv").write_text(reviews(20, text=LONG))
    (tmp_path / "test.csv").write_text(reviews(5, start=100, text=LONG))
    spec = write_spec(
        tmp_path,
        "reviews.toml",
        train="train.csv",
        test="test.csv",
        passage_template="Review: {text}\n",
        template="Sentiment:",
    )
    code, _, calls = cli_run(spec, "--max-tokens", "64", "--shots", "2", "--threads", "1")
    assert code == 0 and calls and threads == [1]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["test_size"] == 5 and summary["train_size"] == 4


def test_eval_split_empty_is_refused(tiny, tmp_path):
    (tmp_path / "reviews.csv").write_text(reviews(8))
    config = CustomizeConfig(
        task=str(write_spec(tmp_path, source="reviews.csv")), method="zero-shot", shots_per_class=2
    )
    with pytest.raises(ValueError, match=r"no test rows are left after 4 train and 4 dev rows"):
        customize(config, tiny, progress=False)


# --- generator checkpoints --------------------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tiny, tmp_path):
    """A loadable checkpoint folder for the tiny backbone (untrained weights, the description's keys)."""
    gen = PromptGenerator(tiny.d, r=8, m=4, t=2, a_seed=0, n_tasks=1)
    save_file({k: v.contiguous() for k, v in gen.state_dict().items()}, tmp_path / "generator.safetensors")
    meta = {
        "version": CHECKPOINT_VERSION,
        "backbone": describe(tiny),
        "dims": {"d": tiny.d, "r": 8, "m": 4, "t": 2},
        "projection": {"a_seed": 0},
        "sdt_tasks": ["a"],
        "domain": "commonsense",
        "data": {"fingerprint": "0" * 64},
        "training": {"z_noise": 0.5},
    }
    (tmp_path / "generator.json").write_text(json.dumps(meta))
    return tmp_path


def test_damaged_checkpoint_files_are_named(tiny, checkpoint):
    assert load_generator(checkpoint, tiny)[1]["domain"] == "commonsense"
    weights = checkpoint / "generator.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"generator checkpoint file .*generator\.safetensors is damaged"):
        load_generator(checkpoint, tiny)
    meta = checkpoint / "generator.json"
    meta.write_text(json.dumps({"version": CHECKPOINT_VERSION, "dims": {}}))
    with pytest.raises(ValueError, match=r"generator\.json is damaged: it lacks backbone, projection"):
        load_generator(checkpoint, tiny)


def test_cli_names_a_corrupted_generator_json(cli_run, checkpoint, tmp_path):
    (tmp_path / "reviews.csv").write_text(reviews(40))
    (checkpoint / "generator.json").write_text('{"version": 2,\n')
    code, err, calls = cli_run(
        write_spec(tmp_path, source="reviews.csv"), "--method", "cbp", "--generator", str(checkpoint), "--shots", "2"
    )
    assert code == 2 and calls == []
    assert f"generator checkpoint file {checkpoint / 'generator.json'} is damaged: not valid JSON" in err
