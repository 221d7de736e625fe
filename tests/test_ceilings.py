"""White-box ceilings: what each space trains, early stopping that keeps the best dev state."""

from __future__ import annotations

import pytest
import torch

from cbp_fed.ceilings import CeilingConfig, evaluate, prompt_space, train_ceiling
from cbp_fed.prompts import PromptGenerator
from cbp_fed.tasks import load_task

TASK = load_task("sst2")
TRAIN, DEV = list(TASK.examples[:64]), list(TASK.examples[100:124])


def test_the_z_ceiling_moves_z_alone_and_the_generator_stays_frozen(tiny):
    generator = PromptGenerator(tiny.d, r=8, m=4, t=2, n_tasks=0).to(tiny.device).requires_grad_(False)
    weights = {k: v.clone() for k, v in generator.state_dict().items()}
    source, z, trainable = prompt_space(tiny, "z", TRAIN, generator, (8, 4, 2), 48)
    before = z.detach().clone()
    report = train_ceiling(tiny, source, z, trainable, TASK, TRAIN, DEV, CeilingConfig("z", 1e-1, 6, 4, 2, 10, 48))
    assert report["steps"] == 6 and len(report["dev_curve"]) == 4  # step 0, 2, 4, 6
    assert all(torch.equal(weights[k], v) for k, v in generator.state_dict().items())
    assert not z.requires_grad and (report["best_step"] == 0) == torch.equal(z.detach(), before)


def test_early_stopping_keeps_the_best_dev_state_not_the_last(tiny):
    """A learning rate that wrecks the prompt: the state left in place scores on dev as the best checked."""
    source, z, trainable = prompt_space(tiny, "bbt", TRAIN, dims=(8, 4, 2), max_tokens=48)
    config = CeilingConfig("bbt", lr=50.0, steps=40, batch_size=4, eval_every=2, patience=2, max_tokens=48)
    report = train_ceiling(tiny, source, z, trainable, TASK, TRAIN, DEV, config)
    best = max(report["dev_curve"], key=lambda c: (c["dev_accuracy"], -c["dev_loss"]))
    loss, correct = evaluate(tiny, source, z, TASK, DEV, 48)
    assert float(correct.float().mean()) == best["dev_accuracy"] and loss == pytest.approx(best["dev_loss"], rel=1e-4)
    assert report["steps"] < 40  # stopped after 2 checks without a gain


def test_a_ceiling_config_names_its_bad_setting():
    with pytest.raises(ValueError, match="unknown ceiling space 'lora'"):
        CeilingConfig("lora")
    with pytest.raises(ValueError, match="patience must be >= 1"):
        CeilingConfig(patience=0)
