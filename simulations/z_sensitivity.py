"""How much one CMA-ES step in z moves the prompt, for CBP's generator vs BBT's projection.

    python -m simulations.z_sensitivity [--generator results/core/gen-commonsense] [--task boolq]

Prints |A z0| against the norm of the pooled input embedding (how much z0 steers the generator),
and, for steps eps ~ N(0, sigma^2 I), the mean relative change of the prompt |p(z0 + eps) - p(z0)| /
|p(z0)| for both prompt sources: at equal sigma0 the one with the smaller change explores a smaller
neighbourhood. No LLM forward is needed (seconds on a CPU).
"""

from __future__ import annotations

import argparse

import torch

from cbp_fed.backbone import FrozenLM
from cbp_fed.domain_training import load_generator
from cbp_fed.prompts import ProjectedPrompt
from cbp_fed.tasks import load_task, user_split


def relative_change(source, z0: torch.Tensor, pooled: torch.Tensor, sigma: float, samples: int = 20) -> float:
    """Mean over ``samples`` steps of |p(z0 + eps) - p(z0)| / |p(z0)| per input (prompts flattened)."""
    base = source(z0[None], pooled)[0].flatten(1)  # (n, t*d)
    moved = source(z0[None] + sigma * torch.randn(samples, z0.numel()), pooled).flatten(2)  # (s, n, t*d)
    return float(((moved - base).norm(dim=2) / base.norm(dim=1)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", default="results/core/gen-commonsense")
    parser.add_argument("--task", default="boolq")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    lm = FrozenLM.load("smollm2-135m")
    gen, _ = load_generator(args.generator, lm)
    split = user_split(load_task(args.task), 0, 8, n_test=0)
    pooled = lm.pooled([lm.encode(ex.passage, ex.query, args.max_tokens) for ex in split.train])
    z0 = gen.z0.detach()
    bbt = ProjectedPrompt.for_backbone(lm, gen.t, gen.r, seed=0)
    print(
        f"pooled input norm {float(pooled.norm(dim=1).mean()):.3f}, |z0| {float(z0.norm()):.3f}, "
        f"|A z0| {float((gen.A @ z0).norm()):.3f}"
    )
    with torch.no_grad():
        for sigma in (0.3, 1.0, 3.0):
            cbp = relative_change(gen, z0, pooled, sigma)
            projected = relative_change(bbt, torch.zeros(gen.r), pooled, sigma)
            print(f"sigma {sigma}: relative prompt change CBP {cbp:.3f}, BBT {projected:.3f}")


if __name__ == "__main__":
    main()
