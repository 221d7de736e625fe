"""The domain prior on hand-made vectors: numpy's median and Flower's trim_mean equal their definitions."""

from __future__ import annotations

import numpy as np

from strategies.cbp import domain_prior


def sort_trimmed_mean(vectors: np.ndarray, trim: float) -> np.ndarray:
    """The definition: per coordinate, sort, cut floor(trim * u) from each end, average the rest."""
    cut = int(trim * len(vectors))
    return np.sort(vectors, axis=0)[cut : len(vectors) - cut].mean(axis=0)


def test_the_median_and_trimmed_prior_match_their_definitions():
    vectors = np.array([[0.0, 5.0], [1.0, -4.0], [2.0, 3.0], [3.0, 2.0], [100.0, 1.0]])
    np.testing.assert_array_equal(domain_prior(vectors, "median"), [2.0, 2.0])
    np.testing.assert_array_equal(domain_prior(vectors, "trimmed-mean", trim=0.2), [2.0, 2.0])  # cut 1 per end
    np.testing.assert_array_equal(domain_prior(vectors, "trimmed-mean", trim=0.0), vectors.mean(0).astype(np.float32))
    rng = np.random.default_rng(0)
    for users in (1, 2, 5, 7, 20):
        vectors = rng.normal(size=(users, 16)).astype(np.float32)
        for trim in (0.0, 0.1, 0.25, 0.49):
            expected = sort_trimmed_mean(vectors.astype(np.float64), trim).astype(np.float32)
            np.testing.assert_allclose(domain_prior(vectors, "trimmed-mean", trim), expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(
            domain_prior(vectors, "median"), np.median(vectors.astype(np.float64), 0).astype(np.float32)
        )
