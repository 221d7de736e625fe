"""Prompt sources: map candidate task vectors z to soft prompts for each input.

Every source has the same call signature, so the BlackBox and the trainer never branch on method:

    source(z: (k, r), pooled: (n, d)) -> prompts: (k, n, t, d)
    source.pairs(z: (K, r), pooled: (N, d), candidate: (P,), text: (P,)) -> prompts: (P, t, d)

``pairs`` gives the prompt of chosen (candidate, text) pairs only: the BlackBox stacks every user's
candidates and texts and builds all their prompts in one call instead of one call per user.

- ``PromptGenerator`` (CBP): instance-dependent, I = pooled + A z, p = L_U(GeLU(L_D(I))).
- ``ProjectedPrompt`` (BBT): p = reshape(A' z) + p_init, the same for every input.
- ``NoPrompt`` (zero-shot): t = 0.

The random projections are fixed (seeded buffers, never trained). BBT's is scaled so that the
projection of a unit-scale z has the spread of the backbone's embedding table (the BBT recipe); the
generator's is scaled to its standardised input (see ``PromptGenerator``). Either way sigma0 of the
search means the same thing for every backbone.
"""

from __future__ import annotations

import torch
from torch import nn


def random_projection(rows: int, r: int, seed: int, scale: float) -> torch.Tensor:
    """``(rows, r)`` Gaussian, entry std ``scale / sqrt(r)``: each coordinate of ``A z`` has std ``scale``
    for z ~ N(0, I_r)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, r, generator=generator) * (scale / r**0.5)


class PromptGenerator(nn.Module):
    """CBP's generator: one soft prompt per (task vector, input) pair.

    The generator's input is the pooled input embedding, standardised with the SDT pool's statistics to
    norm ~1, plus the projected task vector: ``I = (pooled - center) / (spread sqrt(d)) + A z``. ``A: (d, r)``
    is fixed and random with entries N(0, 1/(r d)), so a unit-scale z (z ~ N(0, I_r)) moves I by about 1,
    the size of a standardised input: a CMA-ES step of sigma ~ 1 is as large as the difference between
    two inputs, an in-distribution move (raw pooled embeddings are ~5x smaller than the embedding table's
    spread, which is what scaling A to that spread got wrong). Unit-norm inputs also keep the optimiser's
    steps on L_D as small as they were on raw pooled embeddings (per-coordinate unit inputs made SDT
    diverge at lr 1e-3). ``p = L_U(GeLU(L_D(I)))``.

    Args:
        d: backbone hidden size; r: task-vector size; m: bottleneck width; t: prompt length.
        a_seed: seed of ``A``. n_tasks: SDT task vectors kept beside z0 (0 when only serving).
    Trainable (SDT only): ``down`` (L_D: d -> m), ``up`` (L_U: m -> t*d), the domain's starting vector
    ``z0: (r,)`` and the SDT tasks' offsets ``task_offsets: (n_tasks, r)`` (task i's vector is
    ``z0 + task_offsets[i]``). Buffers saved with the weights: ``center: (d,)``, ``spread: ()``.
    """

    def __init__(self, d: int, r: int = 500, m: int = 256, t: int = 10, a_seed: int = 0, n_tasks: int = 0):
        super().__init__()
        self.d, self.r, self.m, self.t = d, r, m, t
        self.a_seed = a_seed
        self.register_buffer("A", random_projection(d, r, a_seed, d**-0.5), persistent=False)
        self.register_buffer("center", torch.zeros(d))
        self.register_buffer("spread", torch.ones(()))
        self.down = nn.Linear(d, m)
        self.up = nn.Linear(m, t * d)
        self.z0 = nn.Parameter(torch.zeros(r))
        self.task_offsets = nn.Parameter(torch.zeros(n_tasks, r))

    def standardise_with(self, pooled: torch.Tensor) -> None:
        """Set ``center``/``spread`` from the pooled inputs ``(n, d)`` of the data the generator trains on
        (spread: the root-mean-square of the per-coordinate standard deviations)."""
        self.center.copy_(pooled.mean(0))
        self.spread.copy_(pooled.std(0).pow(2).mean().sqrt().clamp(min=1e-6))

    @torch.no_grad()
    def start_at(self, p_init: torch.Tensor, weight_scale: float = 0.1) -> None:
        """Make every input's prompt start around ``p_init: (t, d)`` (BBT's neutral instruction): L_U's bias
        becomes ``p_init`` and its weights are multiplied by ``weight_scale``. A randomly initialised
        generator's prompt scored below no prompt at all on the provider's held-out pool, and SDT did not
        recover in 300 steps; from here SDT learns how inputs and z should move a prompt that already
        works. How far z moves it is linear in ``weight_scale`` (``domain_training.calibrate_steering``)."""
        self.up.bias.copy_(p_init.reshape(-1))
        self.up.weight.mul_(weight_scale)

    def forward(self, z: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """z: (k, r), pooled: (n, d) -> prompts (k, n, t, d)."""
        return self._generate(self._standardised(pooled)[None] + (z @ self.A.T)[:, None])  # inputs (k, n, d)

    def pairs(self, z: torch.Tensor, pooled: torch.Tensor, candidate: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """z: (K, r), pooled: (N, d), candidate/text: (P,) row indices -> prompts (P, t, d)."""
        return self._generate(self._standardised(pooled)[text] + (z @ self.A.T)[candidate])  # inputs (P, d)

    def _standardised(self, pooled: torch.Tensor) -> torch.Tensor:
        return (pooled - self.center) / (self.spread * self.d**0.5)

    def _generate(self, inputs: torch.Tensor) -> torch.Tensor:
        """I: (..., d) -> L_U(GeLU(L_D(I))): (..., t, d)."""
        return self.up(nn.functional.gelu(self.down(inputs))).unflatten(-1, (self.t, self.d))


class ProjectedPrompt(nn.Module):
    """BBT's prompt: ``p = reshape(A' z) + p_init`` with a fixed random ``A': (t*d, r)``.

    ``p_init: (t, d)`` is the embedding of a short neutral instruction (a soft prompt of exact zeros
    is degenerate in these models, docs/method.md), so z = 0 is already a sensible prompt.
    """

    def __init__(self, p_init: torch.Tensor, r: int = 500, a_seed: int = 0, embed_std: float = 1.0):
        super().__init__()
        self.t, self.d = p_init.shape
        self.r = r
        self.register_buffer("A", random_projection(self.t * self.d, r, a_seed, embed_std), persistent=False)
        self.register_buffer("p_init", p_init.detach().float(), persistent=False)

    @classmethod
    def for_backbone(cls, lm, t: int, r: int, seed: int) -> ProjectedPrompt:
        """BBT's prompt for a loaded backbone: p_init from its embeddings, A' scaled to them, on its device."""
        return cls(instruction_embedding(lm, t), r, seed, lm.embedding_std()).to(lm.device)

    def forward(self, z: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """z: (k, r), pooled: (n, d) (only n is used) -> prompts (k, n, t, d)."""
        prompts = (z @ self.A.T).view(-1, self.t, self.d) + self.p_init  # (k, t, d)
        return prompts[:, None].expand(-1, pooled.shape[0], -1, -1)

    def pairs(self, z: torch.Tensor, pooled: torch.Tensor, candidate: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """z: (K, r), candidate: (P,) row indices (pooled and text unused) -> prompts (P, t, d)."""
        return ((z @ self.A.T).view(-1, self.t, self.d) + self.p_init)[candidate]


class NoPrompt(nn.Module):
    """Zero-shot: an empty prompt, ``(k, n, 0, d)``."""

    def __init__(self, d: int, r: int = 0):
        super().__init__()
        self.d, self.r, self.t = d, r, 0

    def forward(self, z: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        return pooled.new_zeros(z.shape[0], pooled.shape[0], 0, self.d)

    def pairs(self, z: torch.Tensor, pooled: torch.Tensor, candidate: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return pooled.new_zeros(len(candidate), 0, self.d)


BBT_INSTRUCTION = "Read the text and answer the question with one of the given answers."


def instruction_embedding(lm, t: int, text: str = BBT_INSTRUCTION) -> torch.Tensor:
    """``(t, d)`` input embeddings of the first t tokens of a neutral instruction (repeated if short)."""
    ids = lm.tokenize(text)
    return lm.embed((ids * (t // len(ids) + 1))[:t]).detach()


def prompt_change(source: nn.Module, z: torch.Tensor, pooled: torch.Tensor, sigma: float, samples: int = 20) -> float:
    """Mean relative prompt change of a search step: over ``samples`` draws eps ~ N(0, sigma^2 I_r) and the
    inputs ``pooled: (n, d)``, ``|p(z + eps) - p(z)| / |p(z)|`` (prompts flattened; z: ``(r,)``).

    At equal sigma0, the source with the smaller change explores a smaller neighbourhood: the measure
    that compares how strongly z steers CBP's generator against BBT's projected prompt."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        base = source(z[None], pooled)[0].flatten(1)  # (n, t*d)
        steps = sigma * torch.randn(samples, z.numel(), generator=generator).to(z)
        moved = source(z[None] + steps, pooled).flatten(2)  # (s, n, t*d)
    return float(((moved - base).norm(dim=2) / base.norm(dim=1)).mean())
