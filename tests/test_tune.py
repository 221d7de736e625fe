"""`cbp-fed tune` on the tiny backbone: validation, dev-only trials, test scored once, resume, refusal."""

from __future__ import annotations

import json

import optuna
import pytest

import cbp_fed.tune as tune_module
from cbp_fed.cli import main
from cbp_fed.customize import CustomizeConfig, customize
from cbp_fed.prompts import NoPrompt
from cbp_fed.service import BlackBox
from cbp_fed.tasks import load_task, user_split
from cbp_fed.tune import TuneConfig, tune

SMALL = dict(
    task="sst2",
    domain="commonsense",
    startup_trials=2,
    sigma0=(0.3, 2.0),
    popsize=(2, 4),
    m=(4, 8),
    t=(1, 2),
    lr=(1e-3, 3e-3),
    r=16,
    sdt_steps=2,
    sdt_batch_size=2,
    sdt_pool_size=20,
    budget=8,
    shots=2,
    n_dev=6,
    n_test=8,
    max_tokens=32,
    backbone="tiny-random",
)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"task": "nope"}, "unknown task 'nope'"),
        ({"domain": "law"}, "unknown domain 'law'"),
        ({"trials": 0}, "--trials must be >= 1"),
        ({"n_dev": 0}, "--n-dev must be >= 1"),
        ({"sigma0": (2.0, 0.5)}, "--sigma0 takes LOW HIGH"),
        ({"popsize": (1, 4)}, "--popsize takes LOW HIGH with 2 <= LOW"),
        ({"popsize": (4, 40), "budget": 20}, "largest popsize .40. exceeds the budget"),
        ({"m": (8, 8)}, "--m takes distinct positive choices"),
        ({"lr": ()}, "--lr takes distinct positive choices"),
        ({"t": (1.5,)}, "whole numbers"),
    ],
)
def test_config_errors_name_the_setting(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        TuneConfig(**{**SMALL, "out": str(tmp_path), **bad})


def test_customize_on_dev_never_scores_a_test_row(tiny, monkeypatch):
    config = CustomizeConfig(
        task="sst2",
        method="bbt",
        budget=8,
        popsize=4,
        bbt_r=16,
        bbt_t=2,
        shots_per_class=2,
        n_test=8,
        n_dev=6,
        select_on_dev=False,
    )
    split = user_split(load_task("sst2"), 0, 2, n_dev=6, n_test=8)
    scored, answers, unprompted, original = [], [], [], BlackBox.score

    def spy(box, queries):
        scores = original(box, queries)
        if isinstance(box.source, NoPrompt):  # the user's own options, scored without a prompt
            unprompted.extend(queries)
        else:
            scored.extend(queries)
            answers.extend(scores)
        return scores

    monkeypatch.setattr(BlackBox, "score", spy)
    summary = customize(CustomizeConfig(**{**config.__dict__, "eval_split": "dev"}), tiny, progress=False)
    texts = {text for query in scored for text in zip(query.passages, query.queries)}
    own = {text for query in unprompted for text in zip(query.passages, query.queries)}
    assert not (texts | own) & {(ex.passage, ex.query) for ex in split.test}
    assert {(ex.passage, ex.query) for ex in split.dev} <= texts
    # the reported dev accuracies: the start's and the final z's scores on the dev texts, against their labels
    dev_texts = [(ex.passage, ex.query) for ex in split.dev]
    dev = [s[0] for q, s in zip(scored, answers) if list(zip(q.passages, q.queries)) == dev_texts]
    labels = [ex.label for ex in split.dev]
    assert len(dev) == 2 and summary["start_dev_accuracy"] == (dev[0].argmax(1) == labels).mean()
    assert "test_accuracy" not in summary and summary["dev_accuracy"] == (dev[1].argmax(1) == labels).mean()
    assert summary["dev_size"] == 6
    assert summary["eval_split"] == "dev" and len(summary["dev_predicted_share"]) == 2
    default = customize(config, tiny, progress=False)  # the default still reports test, and dev beside it
    assert default["eval_split"] == "test" and default["dev_accuracy"] == summary["dev_accuracy"]
    assert "test_accuracy" in default and "dev_accuracy_calibrated" not in default
    with pytest.raises(ValueError, match="unknown eval_split"):
        CustomizeConfig(task="sst2", eval_split="train")
    with pytest.raises(ValueError, match="cannot also select on dev"):
        CustomizeConfig(**{**config.__dict__, "eval_split": "dev", "select_on_dev": True})


def test_study_runs_tests_once_resumes_and_refuses_other_settings(tiny, tmp_path, monkeypatch, capsys):
    evaluated, summaries = [], []

    def spy(config, lm, progress):
        evaluated.append(config.eval_split)
        summaries.append(customize(config, lm, progress))
        return summaries[-1]

    monkeypatch.setattr(tune_module, "customize", spy)
    out = tmp_path / "study"
    report = tune(TuneConfig(**SMALL, out=str(out), trials=3), tiny, progress=False)
    assert evaluated == ["dev"] * 3 + ["test"]
    saved = json.loads((out / "tune.json").read_text())
    assert saved["completed_trials"] == 3 and len(saved["trials"]) == 3 and len(saved["test_evaluations"]) == 1
    best, dev = saved["best"], [summary["dev_accuracy"] for summary in summaries[:3]]
    assert best["trial"] == dev.index(max(dev)) and best["dev_accuracy"] == max(dev)  # the earliest of the best
    assert best["dev_accuracy_rerun"] == best["dev_accuracy"]  # the test run reproduced the best trial
    assert best["test_accuracy"] == summaries[3]["test_accuracy"] and summaries[3]["eval_split"] == "test"
    assert best["test_size"] == 8 and set(best["params"]) == set(report["best"]["params"])
    assert (out / "tune.md").read_text().count("| ") > 3 and (out / "tune.png").stat().st_size > 0
    generators = {trial["generator"] for trial in saved["trials"]}
    assert {p.name for p in (out / "generators").iterdir()} == generators  # one SDT per (m, t, lr)

    # An interrupted run leaves a RUNNING trial; the rerun marks it failed and adds exactly one trial.
    optuna.load_study(study_name=tune_module.STUDY_NAME, storage=f"sqlite:///{out / 'study.db'}").ask()
    evaluated.clear()
    tune(TuneConfig(**SMALL, out=str(out), trials=4), tiny, progress=False)
    saved = json.loads((out / "tune.json").read_text())
    states = [trial["state"] for trial in saved["trials"]]
    assert states == ["COMPLETE"] * 3 + ["FAIL", "COMPLETE"] and saved["completed_trials"] == 4
    new_dev = summaries[4]["dev_accuracy"]  # trial 4 (3 was interrupted) replaces the best only if strictly better
    best_changed = new_dev > max(dev)
    assert saved["best"]["trial"] == (4 if best_changed else dev.index(max(dev)))
    assert evaluated == ["dev"] + ["test"] * best_changed
    assert len(saved["test_evaluations"]) == 1 + best_changed

    evaluated.clear()  # nothing left to do: no trial, and test is not scored again
    tune(TuneConfig(**SMALL, out=str(out), trials=4), tiny, progress=False)
    assert evaluated == []

    with pytest.raises(ValueError, match=r"other fixed settings: budget 8 \(study\) vs 12 \(now\)"):
        tune(TuneConfig(**{**SMALL, "budget": 12}, out=str(out), trials=4), tiny, progress=False)
    assert main(["tune", "--task", "sst2", "--out", str(out), "--backbone", "tiny-random"]) == 2
    assert "other fixed settings" in capsys.readouterr().err
