"""User-side defences against a curious provider, each a run-config option (all off by default).

- ``dp-clip`` / ``dp-noise`` / ``dp-delta``: the Gaussian mechanism on the uploaded z. The shift of
  the customised z from the round's public start vector is clipped to L2 norm C (``dp-clip``) and
  Gaussian noise of std ``dp-noise`` x C is added to every coordinate; the user keeps and later sends
  (evaluate.query) only that released vector, so the provider never sees the clean one. Neighbouring
  datasets: any two training sets of one user (local DP), so the L2 sensitivity is 2C. Composition
  over R released rounds is exact in Gaussian DP (Dong, Roth and Su 2022): R mechanisms of
  mu = 2 / dp-noise compose to mu * sqrt(R), and ``epsilon`` converts mu-GDP to (epsilon, delta)
  on the exact Gaussian privacy curve (Balle and Wang 2018) with Google's ``dp-accounting``.
  Flower's ``LocalDpMod`` does not fit this protocol: it acts on every train.* reply (it would also
  noise the candidates of train.begin and train.step, which must stay exact for CMA-ES), it measures
  the update against the single ArrayRecord of the incoming message (at train.finish: the scores),
  and its calibration is the classic sqrt(2 ln(1.25/delta)) bound, valid for one release with
  epsilon < 1 and loose beside the exact curve used here. The guarantee covers the released z only:
  the candidates of every generation are drawn around the clean search mean and are not protected by
  it (the label attack reads them).
- ``decoy-texts``: the user mixes that many of its own held-out (dev) texts per training text into
  the texts it sends, at seeded random positions, and ignores their scores; the provider cannot tell
  which of the texts it scores are training examples.
- ``decoy-candidates``: that many extra candidates per real one, drawn from the same search
  distribution, at seeded random positions in each population; their scores are ignored, so the
  selection the provider may read off consecutive populations is diluted.
- ``selection-noise``: Gaussian noise of that std (nats) added to each candidate's fitness before
  CMA-ES is told: a noisy ranking, hence a noisy selection.

Light imports only (numpy, math): the ClientApp uses this module; ``epsilon`` imports
``dp_accounting`` (and with it scipy, about 1 s) when called, which only the privacy sweep does.
"""

from __future__ import annotations

import math

import numpy as np


def gaussian_release(z: np.ndarray, anchor: np.ndarray, clip: float, noise: float, seed) -> np.ndarray:
    """``anchor + clip_C(z - anchor) + N(0, (noise * C)^2 I)``: ``z``, ``anchor`` ``(r,)`` -> ``(r,)`` float32.

    ``seed``: anything ``np.random.default_rng`` takes (the user passes (seed, partition, round)).
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


def epsilon(noise: float, releases: int, delta: float) -> float:
    """The smallest epsilon with (epsilon, delta)-DP for ``releases`` >= 1 rounds at ``dp-noise = noise``
    (sensitivity 2C, std ``noise`` x C per release); inf without noise.

    R Gaussian releases compose exactly (Gaussian DP) to one release at std / sqrt(R), whose exact
    epsilon dp-accounting's ``get_epsilon_gaussian`` finds. Not its accountants (measured at delta
    1e-5): ``PLDAccountant``, which composes by itself, agrees to 1e-9 at noise 0.2 to 4 but at noise
    0.05 reads 0.1% high and takes 56 s (150 s over 3 releases); ``RdpAccountant`` is 2-8% loose."""
    from dp_accounting.gaussian_mechanism import get_epsilon_gaussian  # scipy: only the sweep calls this

    if releases < 1:
        raise ValueError(f"releases must be >= 1, got {releases}")
    return float(get_epsilon_gaussian(noise / 2 / math.sqrt(releases), delta))


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
