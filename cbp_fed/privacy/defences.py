"""User-side defences against a curious provider, each a run-config option (all off by default).

- ``dp-clip`` / ``dp-noise`` / ``dp-delta``: the Gaussian mechanism on the uploaded z. The shift of
  the customised z from the round's public start vector is clipped to L2 norm C (``dp-clip``) and
  Gaussian noise of std ``dp-noise`` x C is added to every coordinate; the user keeps and later sends
  (evaluate.query) only that released vector, so the provider never sees the clean one. Its
  sensitivity, 2C, holds for any two training sets of one user. Flower's ``LocalDpMod`` does not fit
  this protocol: it acts on every train.* reply (it would also noise the candidates of train.begin and
  train.step, which must stay exact for CMA-ES), it measures the update against the single ArrayRecord
  of the incoming message (at train.finish: the scores), and its calibration is the classic
  sqrt(2 ln(1.25/delta)) bound, valid for one release with epsilon < 1. The release covers z only:
  the candidates of every generation are drawn around the clean search mean (the label attack reads them).
- ``selection-noise`` with ``loss-clip``: the label mechanism. Each text's cross-entropy is capped at
  ``loss-clip`` nats, and Gaussian noise of std ``selection-noise`` is added to each candidate's
  fitness before CMA-ES is told and to each point's dev loss before the user keeps one, so every
  message after a generation is a function of noisy fitness only. ``accounting.LabelChannel`` turns the
  two settings into an (epsilon, delta) bound on what the provider learns of any one label, composed
  with the z release in one accountant. Without ``loss-clip`` the noise has no bound behind it.
- ``decoy-texts``: the user mixes that many of its own held-out (dev) texts per training text into
  the texts it sends, at random positions, and ignores their scores; the provider cannot tell
  which of the texts it scores are training examples.
- ``decoy-candidates``: that many extra candidates per real one, drawn from the same search
  distribution, at random positions in each population; their scores are ignored, so the
  selection the provider may read off consecutive populations is diluted.

Every random draw of a defence is seeded by the user's secret (``User.private_seed``), never by the
run seed alone: the run config is public, and a provider that could repeat the draws would subtract
the noise and find the decoys.

Light imports only (numpy, the search module): the ClientApp uses this module.
"""

from __future__ import annotations

import numpy as np

from ..search import fitness


def noisy_fitness(scores: np.ndarray, labels: np.ndarray, loss: str, clip: float, noise: float, rng) -> np.ndarray:
    """The label mechanism: each candidate's fitness ``(k,)`` from its scores ``(k, n, C)`` and the
    labels ``(n,)``, each text's loss capped at ``clip`` nats (0: uncapped), plus N(0, noise^2) drawn
    from ``rng`` (a ``np.random.Generator``; noise 0: none). One label moves it by at most clip / n per
    candidate: ``accounting.LabelChannel`` turns that into epsilon."""
    values = fitness(scores, labels, loss, clip=clip)
    return values + rng.normal(0.0, noise, size=values.shape) if noise else values


def gaussian_release(z: np.ndarray, anchor: np.ndarray, clip: float, noise: float, seed) -> np.ndarray:
    """``anchor + clip_C(z - anchor) + N(0, (noise * C)^2 I)``: ``z``, ``anchor`` ``(r,)`` -> ``(r,)`` float32.

    ``seed``: anything ``np.random.default_rng`` takes (the user passes its secret, partition and round).
    ``clip = 0`` returns ``z`` unchanged; ``noise = 0`` only clips."""
    z = np.asarray(z, dtype=np.float64)
    if not clip:
        return z.astype(np.float32)
    anchor = np.asarray(anchor, dtype=np.float64)
    shift = z - anchor
    norm = float(np.linalg.norm(shift))
    if norm > clip:
        shift *= clip / norm
    released = anchor + shift
    if noise:
        released += np.random.default_rng(seed).normal(0.0, noise * clip, size=z.shape)
    return released.astype(np.float32)


def decoy_positions(n_real: int, n_decoy: int, seed) -> tuple[np.ndarray, np.ndarray]:
    """A seeded shuffle of ``n_real`` real and ``n_decoy`` decoy items: ``(order, real)`` where
    ``order[j]`` is the source of wire position j (``< n_real``: real item ``order[j]``; else decoy
    ``order[j] - n_real``) and ``real`` ``(n_real,)`` holds the wire positions of the real items in order."""
    if not n_decoy:  # no decoys: the real items in order (what a run without the defence sends)
        return np.arange(n_real), np.arange(n_real)
    order = np.random.default_rng(seed).permutation(n_real + n_decoy)
    real = np.empty(n_real, dtype=np.int64)
    for position, source in enumerate(order):
        if source < n_real:
            real[source] = position
    return order, real
