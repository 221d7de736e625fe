"""SDT on the tiny backbone, checkpoints, the one-process customisation loop and the CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import cbp_fed.customize as customize_module
from cbp_fed.backbone import FrozenLM
from cbp_fed.cli import main
from cbp_fed.customize import CustomizeConfig, customize
from cbp_fed.domain_training import (
    SDTConfig,
    calibrate_steering,
    load_generator,
    save_generator,
    steering,
    train_generator,
    warmup_cosine,
)
from cbp_fed.prompts import PromptGenerator, instruction_embedding
from cbp_fed.search import CMASearch
from cbp_fed.tasks import load_task
from cbp_fed.tasks.core import Task

SMALL = dict(r=16, m=8, t=2, steps=30, batch_size=4, pool_size=120, eval_size=40, max_tokens=48, lr=3e-3)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    gen, meta = train_generator(tiny, SDTConfig(domain="commonsense", **SMALL), progress=False)
    folder = save_generator(gen, meta, tmp_path_factory.mktemp("gen"))
    return gen, meta, folder


def test_sdt_records_what_it_did(trained):
    gen, meta, _ = trained
    assert len(meta["loss_curve"]) == 30 and meta["training"]["lr"] == 3e-3
    assert meta["domain"] == "commonsense" and meta["dims"] == {"d": 64, "r": 16, "m": 8, "t": 2}
    assert len(meta["data"]["fingerprint"]) == 64
    assert meta["sdt_tasks"] == sorted(meta["data"]["tasks"]) and gen.task_offsets.shape == (len(meta["sdt_tasks"]), 16)
    assert set(meta["task_vectors"]["tasks"]) <= set(meta["sdt_tasks"])


def _constant_task(name: str, label: int, rows) -> list:
    """A planted SDT task whose answer is always ``label``: only z can tell it from its twin."""
    task = Task(name, "general", (" positive", " negative"), (), f"always label {label}")
    return [(task, replace(ex, label=label, uid=f"{name}/{ex.uid}")) for ex in rows]


@pytest.fixture(scope="module")
def planted(tiny):
    """SDT on two tasks with the same texts and opposite constant answers: z0 cannot serve both."""
    rows = load_task("sst2").examples[:120]
    pool = _constant_task("always-positive", 0, rows) + _constant_task("always-negative", 1, rows)
    config = SDTConfig(
        domain="commonsense", **{**SMALL, "steps": 150, "eval_size": 60, "lr": 1e-2}, generalist_share=0.3
    )
    return train_generator(tiny, config, progress=False, pool=pool)


def test_task_vectors_carry_the_task(planted):
    """Each task's own vector answers its task; the shared z0 cannot (the tasks contradict each other)."""
    _, meta = planted
    tasks = meta["task_vectors"]["tasks"]
    assert set(tasks) == {"always-positive", "always-negative"}
    assert all(t["own_z"] >= 0.9 for t in tasks.values()), tasks
    assert min(t["z0"] for t in tasks.values()) <= 0.8, tasks
    gain = meta["task_vectors"]["paired_gain"]
    assert gain["mean"] - gain["ci95"] > 0.1, gain


EARLY = dict(SMALL, steps=200, pool_size=80, eval_size=40, dev_size=40, eval_every=10, patience=3, lr=1e-2)


def test_an_sdt_that_learns_shows_it_on_held_out_rows(tiny):
    """One task whose answer is always "negative": z0 must learn it, and the held-out record must say so
    against the better of zero-shot and the instruction prompt, measured on the same rows."""
    pool = _constant_task("always-negative", 1, load_task("sst2").examples[:160])
    _, meta = train_generator(tiny, SDTConfig(domain="commonsense", **EARLY), progress=False, pool=pool)
    held = meta["held_out"]
    assert held["n"] == 40 and held["z0_after"] == pytest.approx(meta["eval_accuracy"]["after"], abs=1e-4)
    assert held["z0_before"] == pytest.approx(meta["eval_accuracy"]["before"], abs=1e-4)
    assert held["z0_after"] >= 0.9 and held["z0_before"] <= 0.5, held
    best = max(held["zero_shot"], held["instruction"])
    assert held["z0_vs_best"]["mean"] == pytest.approx(held["z0_after"] - best, abs=1e-4)
    assert held["learned"] and held["z0_vs_best"]["mean"] - held["z0_vs_best"]["ci95"] > 0


def test_sdt_stops_after_patience_checks_and_keeps_its_best_dev_check(tiny):
    """Two tasks with the same texts and opposite answers: z0 stops improving on dev, training stops
    ``patience`` checks after its best, and the generator is the one of that best check."""
    import random

    from cbp_fed.domain_training import _by_task, _scores_and_labels

    rows = load_task("sst2").examples[:160]
    pool = _constant_task("a", 0, rows[:80]) + _constant_task("b", 1, rows[80:])
    config = SDTConfig(domain="commonsense", **EARLY)
    gen, meta = train_generator(tiny, config, progress=False, pool=pool)
    stopping = meta["early_stopping"]
    checks = stopping["checks"]
    assert checks[0]["step"] == 0 and stopping["steps_run"] < config.steps
    best = max(checks, key=lambda c: (c["dev_accuracy"], -c["dev_loss"]))
    assert stopping["best_step"] == best["step"] and checks[-1]["step"] - best["step"] == config.patience * 10
    shuffled = list(pool)
    random.Random(config.seed).shuffle(shuffled)  # the split train_generator makes: eval, then dev rows
    dev = _by_task(shuffled[40:80])
    losses = torch.cat([_scores_and_labels(tiny, gen, gen.z0, t, exs, 48)[1] for t, exs in dev.values()])
    assert float(losses.mean()) == pytest.approx(best["dev_loss"], abs=1e-5)


def test_what_sdt_learned_transfers_to_a_task_left_out_of_training(tiny):
    """Two tasks that share their answer ("negative" always) on different texts: trained on one, z0 answers
    the other, and ``transfer`` measures it on the left-out task's rows only."""
    rows = load_task("sst2").examples[:240]
    pool = _constant_task("negative-a", 1, rows[:160]) + _constant_task("negative-b", 1, rows[160:])
    config = SDTConfig(domain="commonsense", **{**EARLY, "transfer_task": "negative-b"})
    _, meta = train_generator(tiny, config, progress=False, pool=pool)
    assert meta["sdt_tasks"] == ["negative-a"] and "negative-b" not in meta["data"]["tasks"]
    transfer = meta["transfer"]
    assert transfer["task"] == "negative-b" and transfer["n"] == 80
    assert transfer["z0_after"] >= 0.9 and transfer["learned"], transfer
    with pytest.raises(ValueError, match="transfer_task 'nowhere' has no rows.*negative-a"):
        train_generator(tiny, SDTConfig(domain="commonsense", **{**EARLY, "transfer_task": "nowhere"}), pool=pool)


def test_early_stopping_needs_dev_rows():
    with pytest.raises(ValueError, match="dev_size"):
        SDTConfig(eval_every=10)


def test_a_search_step_moves_the_trained_generators_prompt(planted):
    """A sigma = 1 step of z changes CBP's prompt by at least half as much as it changes BBT's."""
    _, meta = planted
    assert meta["steering"]["ratio"] >= 0.5, meta["steering"]


@pytest.mark.parametrize(
    "steps, factors",  # lr / peak at steps 0, 1, 2, ..., as the generators were trained
    [
        (3, {0: 1.0, 1: 0.75, 2: 0.25}),  # warm-up of one step: the first step already at the peak
        (30, {0: 1 / 3, 1: 2 / 3, 2: 0.9890738, 15: 0.5, 29: 0.0027390523}),  # warm-up 3, then the cosine from step 0
    ],
)
def test_sdt_learning_rate_warms_up_then_decays_as_the_generators_were_trained(steps, factors):
    optimiser = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=3e-3)
    schedule = warmup_cosine(optimiser, steps)
    seen = []
    for _ in range(steps):
        seen.append(optimiser.param_groups[0]["lr"])
        optimiser.step()
        schedule.step()
    assert {s: seen[s] / 3e-3 for s in factors} == pytest.approx(factors, rel=1e-6)


def test_sdt_leaves_the_backbone_untouched(tiny, trained):
    assert not any(p.requires_grad for p in tiny.model.parameters())
    assert all(p.grad is None for p in tiny.model.parameters())


def test_checkpoint_round_trip(tiny, trained):
    gen, _, folder = trained
    loaded, meta = load_generator(folder, tiny)
    z, pooled = torch.randn(2, 16), torch.randn(3, tiny.d)
    torch.testing.assert_close(loaded(z, pooled), gen(z, pooled))
    torch.testing.assert_close(loaded.z0, gen.z0)
    torch.testing.assert_close(loaded.A, gen.A)  # A is rebuilt from its seed, not stored


def test_checkpoint_loads_into_the_same_backbone_in_bf16(trained):
    """A generator trained on fp32 weights serves the same weights loaded in bf16 (dtype=auto on a GPU)."""
    gen, _, folder = trained
    tiny_bf16 = FrozenLM.load("tiny-random", dtype="bf16")
    loaded, _ = load_generator(folder, tiny_bf16)
    z, pooled = torch.randn(2, 16), torch.randn(3, tiny_bf16.d)
    torch.testing.assert_close(loaded(z, pooled), gen(z, pooled))
    text = tiny_bf16.tokenize("Is the sky blue?")
    hidden = tiny_bf16.last_hidden(loaded(z[:1], tiny_bf16.pooled([text]))[0], [text])
    assert hidden.dtype == torch.bfloat16
    assert torch.isfinite(tiny_bf16.label_logits(hidden, tiny_bf16.label_token_ids([" yes", " no"]))).all()


def test_checkpoint_for_another_backbone_is_refused(tiny, trained):
    _, _, folder = trained
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    other = FrozenLM(
        LlamaForCausalLM(LlamaConfig(**{**tiny.model.config.to_dict(), "num_hidden_layers": 1})),
        tiny.tokenizer,
        "other",
    )
    with pytest.raises(ValueError, match="trained for backbone"):
        load_generator(folder, other)
    with pytest.raises(FileNotFoundError, match="not a generator checkpoint"):
        load_generator(folder / "missing", tiny)


class RecordedSearch(CMASearch):
    """CMA-ES that records what it was asked and told (the instances of a run, in order)."""

    runs: list[RecordedSearch] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked, self.told = [], []
        RecordedSearch.runs.append(self)

    def ask(self):
        self.asked.append(super().ask())
        return self.asked[-1]

    def tell(self, fitness):
        self.told.append(np.array(fitness, dtype=float))
        super().tell(fitness)


@pytest.mark.parametrize("method", ["zero-shot", "sdt-only", "bbt", "cbp"])
def test_every_method_runs_through_the_same_loop_and_never_keeps_worse_than_its_start(
    tiny, trained, method, monkeypatch
):
    """One loop for every method; a searching one keeps the candidate it was told was best, and the start
    unless a point scores better on dev."""
    _, _, folder = trained
    monkeypatch.setattr(customize_module, "CMASearch", RecordedSearch)
    RecordedSearch.runs.clear()
    config = CustomizeConfig(
        task="sst2",
        method=method,
        generator=str(folder),
        budget=12,
        popsize=4,
        bbt_r=16,
        bbt_t=2,
        shots_per_class=4,
        n_test=20,
        max_tokens=96,
        batch_size=4,
        checkpoints=(6,),  # not a whole number of populations of 4: evaluated after 8 calls
    )
    summary = customize(config, tiny, progress=False)
    searching = method in ("bbt", "cbp")
    assert summary["calls_used"] == (12 if searching else 0)
    assert summary["train_size"] == 8 and summary["dev_size"] == 8 and summary["test_size"] == 20
    assert [p["calls"] for p in summary["curve"]] == ([6, 12] if searching else [])
    assert [p["calls_used"] for p in summary["curve"]] == ([8, 12] if searching else [])
    json.dumps(summary)  # a summary is plain JSON
    if not searching:
        assert summary["kept"] is None and summary["test_accuracy"] == summary["start_test_accuracy"]
        return
    scored = summary["selection"]  # every point scored on dev, the start first
    assert [p["point"] for p in scored] == ["start", "mean@8", "best@8", "mean@12", "best@12"]
    assert summary["selection_calls"] == len(scored)
    best = max(scored, key=lambda p: (p["dev_accuracy"], -p["dev_loss"]))  # the first of equals: the earliest
    assert summary["kept"] == {k: best[k] for k in ("point", "dev_accuracy", "dev_loss")}
    assert summary["kept"]["dev_accuracy"] >= scored[0]["dev_accuracy"]  # never below the start on dev
    (search,) = RecordedSearch.runs
    candidates, told = np.concatenate(search.asked), np.concatenate(search.told)
    assert len(told) == 12 and np.ptp(told) > 0  # the candidates' training losses differ ...
    assert summary["best_train_loss"] == pytest.approx(told.min())  # ... the lowest one is reported ...
    np.testing.assert_array_equal(search.best, candidates[told.argmin()])  # ... and its candidate is the best


def test_customize_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        CustomizeConfig(task="nope")
    with pytest.raises(ValueError, match="unknown method"):
        CustomizeConfig(task="sst2", method="lora")
    with pytest.raises(ValueError, match="needs a generator"):
        CustomizeConfig(task="sst2", method="cbp")
    with pytest.raises(ValueError, match="outside 1..budget"):
        CustomizeConfig(task="sst2", method="bbt", budget=20, checkpoints=(40,))


def test_cli_customize_then_report(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "customize",
        "--task",
        "sst2",
        "--method",
        "bbt",
        "--backbone",
        "tiny-random",
        "--budget",
        "8",
        "--popsize",
        "4",
        "--shots",
        "2",
        "--n-test",
        "10",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "task",
        "method",
        "seed",
        "budget",
        "calls_used",
        "tokens_scored",
        "train_size",
        "dev_size",
        "test_size",
        "test_accuracy",
        "wall_seconds",
    ):
        assert key in summary
    assert main(["report", str(out / "summary.json"), "--out", str(tmp_path / "t.md")]) == 0
    assert "| sst2 | bbt | 8 | 1 |" in (tmp_path / "t.md").read_text()
    assert main(["customize", "--task", "nope", "--out", str(out)]) == 2
    assert "unknown task" in capsys.readouterr().err


def test_cli_customizes_a_users_own_csv_through_a_json_spec(tmp_path):
    rows = ["text,stars"] + [
        f"review number {i} was {'great' if i % 2 else 'awful'},{5 if i % 2 else 1}" for i in range(40)
    ]
    (tmp_path / "reviews.csv").write_text("\n".join(rows) + "\n")
    spec = {
        "source": str(tmp_path / "reviews.csv"),
        "template": "Review: {text}\nSentiment:",
        "label_column": "stars",
        "label_values": ["5", "1"],
        "label_words": [" positive", " negative"],
        "name": "reviews",
    }
    (tmp_path / "reviews.json").write_text(json.dumps(spec))
    out = tmp_path / "run"
    assert (
        main(
            [
                "customize",
                "--task",
                str(tmp_path / "reviews.json"),
                "--method",
                "zero-shot",
                "--backbone",
                "tiny-random",
                "--shots",
                "3",
                "--n-test",
                "8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"].endswith("reviews.json") and summary["train_size"] == 6 and summary["test_size"] == 8


@pytest.mark.parametrize("target", [0.25, 0.5])
def test_steering_is_calibrated_to_its_target_without_moving_the_start(tiny, target):
    """A generator started at BBT's prompt barely responds to z; calibration scales L_U's weights until a
    sigma = 1 step moves the prompt ``target`` times BBT's, while z0's prompt stays BBT's (L_U's bias)."""
    rows = load_task("sst2").examples[:32]
    ids = [tiny.encode(ex.passage, ex.query, 48) for ex in rows]
    gen = PromptGenerator(tiny.d, r=16, m=8, t=2)
    with torch.no_grad():
        gen.standardise_with(tiny.pooled(ids))
        gen.start_at(instruction_embedding(tiny, 2))
    assert steering(tiny, gen, ids)["ratio"] < 0.5 * target  # uncalibrated: z hardly steers
    calibrated = calibrate_steering(tiny, gen, ids, target)
    assert abs(calibrated["ratio"] - target) <= 0.1 * target and calibrated["weight_factor"] > 1
    assert torch.equal(gen.up.bias, instruction_embedding(tiny, 2).reshape(-1))


def test_a_pool_larger_than_the_domain_names_both_settings(tiny):
    with pytest.raises(ValueError, match=r"cannot draw .* \(pool_size 4000 \+ eval_size 200 \+ dev_size 0\): lower"):
        train_generator(tiny, SDTConfig(domain="finance", pool_size=4000, eval_size=200), progress=False)


def test_cbp_in_a_subspace_searches_only_along_the_generators_task_vectors(tiny, trained, monkeypatch):
    gen, _, folder = trained
    asked = []

    class Recorded(customize_module.SubspaceSearch):
        def ask(self):
            asked.append(super().ask())
            return asked[-1]

    monkeypatch.setattr(customize_module, "SubspaceSearch", Recorded)
    config = CustomizeConfig(
        task="sst2", generator=str(folder), subspace=2, budget=8, popsize=4, shots_per_class=2, n_test=8
    )
    summary = customize(config, tiny, progress=False)
    assert summary["search_dimensions"] == 2 and summary["calls_used"] == 8
    basis = customize_module.task_subspace(gen.task_offsets.detach().numpy(), 2)
    moves = np.concatenate(asked) - gen.z0.detach().numpy()
    u = np.linalg.lstsq(basis.T, moves.T, rcond=None)[0].T
    np.testing.assert_allclose(u @ basis, moves, atol=1e-4)  # z0 + span of the first two task directions
    with pytest.raises(ValueError, match="subspace"):
        CustomizeConfig(task="sst2", method="bbt", subspace=2)


def test_cbp_fed_sdt_reports_what_it_learned_and_where_it_stopped(tmp_path, capfd):
    from cbp_fed import cli

    out = tmp_path / "gen"
    small = ["--r", "8", "--m", "4", "--t", "2", "--steps", "6", "--batch-size", "2", "--max-tokens", "48"]
    sizes = ["--pool-size", "40", "--eval-size", "20", "--dev-size", "20", "--eval-every", "2", "--patience", "2"]
    args = ["sdt", "--domain", "medical", "--out", str(out), *small, *sizes, "--transfer-task", "pubmedqa"]
    assert cli.main([*args, "--backbone", "tiny-random"]) == 0
    printed = capfd.readouterr().err  # the command prints to stderr
    meta = json.loads((out / "generator.json").read_text())
    assert meta["held_out"]["n"] == 20 and meta["early_stopping"]["checks"][0]["step"] == 0
    assert meta["transfer"]["task"] == "pubmedqa" and "pubmedqa" not in meta["sdt_tasks"]
    assert "z0 on 20 held-out pool rows" in printed and "rows of pubmedqa, left out of training" in printed
