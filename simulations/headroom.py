"""How much can any soft prompt help here? White-box prompt tuning on the user task itself.

    python -m simulations.headroom --tasks arc-easy piqa --steps 150 --lrs 1e-3 1e-2

A black-box search can only find prompts that gradient descent with full access could also find. So
before asking whether CBP beats zero-shot on a task, this measures the ceiling: the generator (started at
BBT's instruction prompt, as SDT starts it) trained by back-propagation on the task's user-side rows
(every row except the effectiveness table's test rows for ``--seed``), with z fixed at z0 (no noise: plain
prompt tuning through the generator), then scored on those same test rows. Rows: zero-shot, the
instruction prompt (the untrained start), and the tuned prompt per learning rate, each with its Wilson
95% interval and the paired difference against zero-shot.

Writes ``<out>/headroom.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from cbp_fed.backbone import FrozenLM
from cbp_fed.domain_training import SDTConfig, _correct, train_generator
from cbp_fed.prompts import PromptGenerator, instruction_embedding
from cbp_fed.tasks import load_task, server_user_partition, user_split

from .effectiveness import wilson


def paired(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Mean of the per-row difference ``a - b`` (bool rows) with a 95% normal interval."""
    diff = a.float() - b.float()
    return {"mean": round(float(diff.mean()), 4), "ci95": round(1.96 * float(diff.std()) / len(diff) ** 0.5, 4)}


def row(name: str, correct: torch.Tensor, zero: torch.Tensor) -> dict:
    n, hits = len(correct), int(correct.sum())
    return {
        "prompt": name,
        "test_accuracy": hits / n,
        "n_test": n,
        "ci95": wilson(hits, n),
        "vs_zero_shot": paired(correct, zero),
    }


def headroom(lm: FrozenLM, task_name: str, args) -> list[dict]:
    task = load_task(task_name)
    test = user_split(task, args.seed, args.shots, n_test=args.n_test).test
    held = {ex.uid for ex in test}
    _, user_rows = server_user_partition(task)
    pool = [(task, ex) for ex in user_rows if ex.uid not in held]
    zero = _correct(lm, None, None, task, test, args.max_tokens)
    start = PromptGenerator(lm.d, args.r, args.m, args.t).to(lm.device)
    start.start_at(instruction_embedding(lm, args.t))
    untrained = _correct(lm, start, start.z0, task, test, args.max_tokens)
    rows = [row("zero-shot", zero, zero), row("instruction (untrained start)", untrained, zero)]
    for lr in args.lrs:
        config = SDTConfig(
            domain=task.domain,
            r=args.r,
            m=args.m,
            t=args.t,
            steps=args.steps,
            lr=lr,
            eval_size=args.eval_size,
            max_tokens=args.max_tokens,
            z_noise=0.0,
            generalist_share=1.0,
            seed=args.seed,
        )
        gen, meta = train_generator(lm, config, progress=False, pool=pool)
        tuned = row(f"tuned, lr {lr:g}", _correct(lm, gen, gen.z0, task, test, args.max_tokens), zero)
        tuned.update(train_rows=meta["data"]["train_examples"], steps=args.steps, seconds=meta["training"]["seconds"])
        curve = meta["loss_curve"]
        tuned["loss_first_last_20"] = [sum(curve[:20]) / len(curve[:20]), sum(curve[-20:]) / len(curve[-20:])]
        rows.append(tuned)
        print(json.dumps({"task": task_name, **tuned}), flush=True)
    return [{"task": task_name, **r} for r in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["arc-easy", "piqa"])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 1e-2])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval-size", type=int, default=0, help="rows of the training pool SDT holds out for itself")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shots", type=int, default=8, help="as in simulations.effectiveness (fixes the test rows)")
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--r", type=int, default=500)
    parser.add_argument("--m", type=int, default=256)
    parser.add_argument("--t", type=int, default=10)
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default="results/effectiveness/headroom")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = FrozenLM.load(args.backbone, args.dtype, "auto")
    rows = [r for name in args.tasks for r in headroom(lm, name, args)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "headroom.json").write_text(json.dumps(rows, indent=1) + "\n")
    for r in rows:
        lo, hi = r["ci95"]
        d = r["vs_zero_shot"]
        print(
            f"{r['task']:10s} {r['prompt']:30s} {100 * r['test_accuracy']:5.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
            f"  vs zero-shot {100 * d['mean']:+.1f} ± {100 * d['ci95']:.1f}"
        )


if __name__ == "__main__":
    main()
