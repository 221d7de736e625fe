"""Prompt sources: map candidate task vectors z to soft prompts for each input.

Every source has the same call signature, so the BlackBox and the trainer never branch on method:

    source(z: (k, r), pooled: (n, d)) -> prompts: (k, n, t, d)
    source.pairs(z: (K, r), pooled: (N, d), candidate: (P,), text: (P,)) -> prompts: (P, t, d)

``pairs`` gives the prompt of chosen (candidate, text) pairs only: the BlackBox stacks every user's
candidates and texts and builds all their prompts in one call instead of one call per user.

- ``PromptGenerator`` (CBP): instance-dependent, I = pooled + A z, p = L_U(GeLU(L_D(I))).
- ``ProjectedPrompt`` (BBT): p = reshape(A' z) + p_init, the same for every input.
- ``NoPrompt`` (zero-shot): t = 0.

The random projections are fixed (seeded buffers, never trained) and scaled so that the projection
of a unit-scale z has the spread of the backbone's embedding table (the BBT recipe): sigma0 of the
search then means the same thing for every backbone.
"""

from __future__ import annotations

import torch
from torch import nn


def random_projection(rows: int, r: int, seed: int, embed_std: float) -> torch.Tensor:
    """``(rows, r)`` Gaussian, entry std ``embed_std / sqrt(r)``: ``A z`` has the embedding spread for z ~ N(0, I)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, r, generator=generator) * (embed_std / r**0.5)


class PromptGenerator(nn.Module):
    """CBP's generator: one soft prompt per (task vector, input) pair.

    Args:
        d: backbone hidden size; r: task-vector size; m: bottleneck width; t: prompt length.
        a_seed, embed_std: define the fixed projection ``A: (d, r)``.
    Trainable (SDT only): ``down`` (L_D: d -> m), ``up`` (L_U: m -> t*d) and the domain's
    starting vector ``z0: (r,)``.
    """

    def __init__(self, d: int, r: int = 500, m: int = 256, t: int = 10, a_seed: int = 0, embed_std: float = 1.0):
        super().__init__()
        self.d, self.r, self.m, self.t = d, r, m, t
        self.a_seed, self.embed_std = a_seed, embed_std
        self.register_buffer("A", random_projection(d, r, a_seed, embed_std), persistent=False)
        self.down = nn.Linear(d, m)
        self.up = nn.Linear(m, t * d)
        self.z0 = nn.Parameter(torch.zeros(r))

    def forward(self, z: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """z: (k, r), pooled: (n, d) -> prompts (k, n, t, d)."""
        return self._generate(pooled[None] + (z @ self.A.T)[:, None])  # inputs (k, n, d)

    def pairs(self, z: torch.Tensor, pooled: torch.Tensor, candidate: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """z: (K, r), pooled: (N, d), candidate/text: (P,) row indices -> prompts (P, t, d)."""
        return self._generate(pooled[text] + (z @ self.A.T)[candidate])  # inputs (P, d)

    def _generate(self, inputs: torch.Tensor) -> torch.Tensor:
        """I: (..., d) -> L_U(GeLU(L_D(I))): (..., t, d)."""
        return self.up(nn.functional.gelu(self.down(inputs))).unflatten(-1, (self.t, self.d))


class ProjectedPrompt(nn.Module):
    """BBT's prompt: ``p = reshape(A' z) + p_init`` with a fixed random ``A': (t*d, r)``.

    ``p_init: (t, d)`` is the embedding of a short neutral instruction (a soft prompt of exact zeros
    is degenerate in these models, DATA.md), so z = 0 is already a sensible prompt.
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
