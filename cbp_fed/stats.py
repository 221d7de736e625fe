"""The two intervals every reported number carries: Wilson's for an accuracy, a normal one for a paired mean."""

from __future__ import annotations

import math

import numpy as np


def wilson(correct: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a binomial proportion ``correct / n`` ((nan, nan) for n = 0)."""
    if n == 0:
        return (math.nan, math.nan)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def paired(differences) -> dict:
    """Mean of per-row (or per-user) differences ``(n,)`` and the half-width of its normal 95% interval,
    ``1.96 * sd / sqrt(n)`` with the sample sd (nan below two differences): ``{"mean", "ci95"}``."""
    diff = np.asarray(differences, dtype=float)
    if not len(diff):
        return {"mean": math.nan, "ci95": math.nan}
    half = 1.96 * float(diff.std(ddof=1)) / math.sqrt(len(diff)) if len(diff) > 1 else math.nan
    return {"mean": float(diff.mean()), "ci95": half}


def paired_bits(a: str, b: str) -> dict:
    """``paired`` over two methods' per-row correctness on the same rows, as 0/1 strings (``customize.as_bits``):
    the difference ``a - b`` row by row."""
    return paired([int(x) - int(y) for x, y in zip(a, b, strict=True)])
