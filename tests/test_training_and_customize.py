"""SDT on the tiny backbone, checkpoints, the one-process customisation loop and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cbp_fed.backbone import FrozenLM
from cbp_fed.cli import main
from cbp_fed.customize import CustomizeConfig, customize
from cbp_fed.domain_training import SDTConfig, load_generator, save_generator, train_generator

SMALL = dict(r=16, m=8, t=2, steps=30, batch_size=4, pool_size=120, eval_size=40, max_tokens=48, lr=3e-3)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    gen, meta = train_generator(tiny, SDTConfig(domain="commonsense", **SMALL), progress=False)
    folder = save_generator(gen, meta, tmp_path_factory.mktemp("gen"))
    return gen, meta, folder


def test_sdt_lowers_the_loss_and_records_what_it_did(trained):
    _, meta, _ = trained
    curve = meta["loss_curve"]
    assert len(curve) == 30 and np.mean(curve[-10:]) < np.mean(curve[:10])
    assert meta["domain"] == "commonsense" and meta["dims"] == {"d": 64, "r": 16, "m": 8, "t": 2}
    assert len(meta["data"]["fingerprint"]) == 64 and meta["training"]["lr"] == 3e-3


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


@pytest.mark.parametrize("method", ["zero-shot", "sdt-only", "bbt", "cbp"])
def test_every_method_runs_through_the_same_loop(tiny, trained, method):
    _, _, folder = trained
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
        checkpoints=(8,),
    )
    summary = customize(config, tiny, progress=False)
    searching = method in ("bbt", "cbp")
    assert summary["calls_used"] == (12 if searching else 0)
    assert summary["train_size"] == 8 and summary["dev_size"] == 8 and summary["test_size"] == 20
    assert 0 <= summary["test_accuracy"] <= 1 and 0.5 <= summary["majority_rate"] <= 1
    assert len(summary["curve"]) == (1 if searching else 0)
    assert summary["tokens_scored"] > 0 and summary["wall_seconds"] > 0
    json.dumps(summary)  # a summary is plain JSON


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
