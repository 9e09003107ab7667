"""LSH banding: how many bands of how many signature rows (Beam-free).

Two documents at Jaccard similarity ``s`` share all ``r`` rows of one band
with probability ``s^r``, so with ``b`` bands they become a candidate pair with
probability ``P(s) = 1 - (1 - s^r)^b``, an S-curve in ``s``. Two rules place
that curve:

``datasketch``
    datasketch ``MinHashLSH``'s optimum: the ``(b, r)`` that minimises the
    area under ``P`` below the threshold (false positives) plus the area
    above ``P`` over it (false negatives), weighted equally. At threshold 0.8
    and 128 permutations that is 9 x 13, whose curve is centred near 0.84: a
    pair at exactly J = 0.8 becomes a candidate with probability ~0.40. Right
    for a pipeline that trusts its signatures (``verify: signature | none``),
    where every false candidate costs precision.

``recall``
    The ``(b, r)`` whose expected miss rate at the threshold, ``(1 -
    t^r)^b``, is at most ``max_miss_rate``, and that among those has the
    smallest false-positive area below the threshold (ties: fewer signature
    values used, then fewer bands). At threshold 0.8, 128 permutations and 1%
    that is 16 x 6: 99.2% of the pairs at J = 0.8 become candidates, those at
    J >= 0.85 at 99.95%. The price is more candidates below the threshold
    (half of the pairs at J = 0.6), which exact verification removes; it
    checks a pair of shingle-hash sets in microseconds. ``r = 1, b =
    num_perm`` always meets a bound above ``(1 - t)^num_perm``, so a rule
    exists for every threshold the config allows.

The choice depends on ``(threshold, num_perm, max_miss_rate)`` only and is
computed in a fixed way (a fixed-grid Simpson rule, no adaptive quadrature),
so a job resolves to the same bands on every machine.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from corpusmill.transforms.dedup import minhash

__all__ = [
    "BANDING_RULES",
    "Banding",
    "candidate_probability",
    "choose_banding",
    "midpoint",
    "recall_bands",
]

BANDING_RULES = ("recall", "datasketch")

# Points of the Simpson rule over [0, threshold]; odd, so the panels pair up.
_GRID_POINTS = 2049


def candidate_probability(similarity, bands: int, rows: int):
    """Probability that a pair at Jaccard ``similarity`` shares at least one band.

    Args:
        similarity: Jaccard similarity (a float or a numpy array) in [0, 1].
        bands: Number of bands.
        rows: Signature values per band.

    Returns:
        ``1 - (1 - similarity^rows)^bands``, of the same shape.
    """
    return 1.0 - (1.0 - np.power(similarity, rows)) ** bands


def midpoint(bands: int, rows: int) -> float:
    """The similarity at which a pair becomes a candidate with probability 1/2 (the S-curve's centre)."""
    return float((1.0 - 0.5 ** (1.0 / bands)) ** (1.0 / rows))


def _false_positive_area(threshold: float, bands: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Integral of the candidate probability over [0, threshold], for each (bands, rows), by Simpson's rule."""
    grid = np.linspace(0.0, threshold, _GRID_POINTS)
    weights = np.ones(_GRID_POINTS)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    step = threshold / (_GRID_POINTS - 1)
    probability = candidate_probability(grid[np.newaxis, :], bands[:, np.newaxis], rows[:, np.newaxis])
    return probability @ weights * (step / 3.0)


@functools.lru_cache(maxsize=64)
def recall_bands(threshold: float, num_perm: int, max_miss_rate: float) -> tuple[int, int]:
    """The banding with the fewest false candidates that misses at most ``max_miss_rate`` at J = ``threshold``.

    Args:
        threshold: Jaccard threshold, in (0, 1].
        num_perm: Signature length; ``bands * rows <= num_perm``.
        max_miss_rate: Bound on ``(1 - threshold^rows)^bands``, in (0, 1).

    Returns:
        ``(bands, rows)``.

    Raises:
        ValueError: On arguments out of range, or when no banding of
            ``num_perm`` values meets the bound (only for a threshold so low
            that even ``num_perm`` one-row bands miss too many).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    if not 0.0 < max_miss_rate < 1.0:
        raise ValueError(f"max_miss_rate must be in (0, 1), got {max_miss_rate}")
    rows = np.arange(1, num_perm + 1)
    # With r rows, a pair at the threshold shares one band with probability t^r; the
    # fewest bands that bring the miss rate under the bound follow in closed form.
    share = np.power(threshold, rows.astype(np.float64))
    with np.errstate(divide="ignore", over="ignore"):
        needed = np.where(share >= 1.0, 1.0, np.ceil(math.log(max_miss_rate) / np.log1p(-share) - 1e-12))
        needed = np.maximum(needed, 1.0)
        feasible = needed * rows <= num_perm  # compared as floats: the count may be astronomically large
    if not feasible.any():
        raise ValueError(f"no banding of {num_perm} permutations misses at most {max_miss_rate:g} of the pairs "
                         f"at Jaccard {threshold:g}")
    bands, rows = needed[feasible].astype(np.int64), rows[feasible]
    # More bands than the fewest needed only add false candidates (the area grows
    # with b), so the fewest per row count is the only candidate for that count.
    area = _false_positive_area(threshold, bands, rows)
    best = min(range(bands.size), key=lambda i: (round(float(area[i]), 12), int(bands[i] * rows[i]), int(bands[i])))
    return int(bands[best]), int(rows[best])


@dataclasses.dataclass(frozen=True)
class Banding:
    """The resolved banding of a job and what it promises.

    Attributes:
        rule: ``recall``, ``datasketch`` or ``explicit`` (bands and rows given).
        bands: Number of bands.
        rows: Signature values per band.
        threshold: The Jaccard threshold of the job.
    """

    rule: str
    bands: int
    rows: int
    threshold: float

    @property
    def expected_recall_at_threshold(self) -> float:
        """Share of the pairs at J = threshold that become candidates: ``1 - (1 - t^r)^b``."""
        return float(candidate_probability(self.threshold, self.bands, self.rows))

    @property
    def candidate_midpoint(self) -> float:
        """The similarity at which half of the pairs become candidates."""
        return midpoint(self.bands, self.rows)


def choose_banding(rule: str, threshold: float, num_perm: int, max_miss_rate: float,
                   bands: int = 0, rows: int = 0) -> Banding:
    """The banding of a job: explicit ``bands`` and ``rows``, or the named rule's choice.

    Args:
        rule: ``explicit`` (takes ``bands`` and ``rows``), ``recall`` or ``datasketch``.
        threshold: Jaccard threshold, in (0, 1].
        num_perm: Signature length.
        max_miss_rate: The ``recall`` rule's bound on the miss rate at the threshold.
        bands: Explicit bands (rule ``explicit`` only).
        rows: Explicit rows per band (rule ``explicit`` only).

    Returns:
        The ``Banding``.
    """
    if rule == "explicit":
        if bands < 1 or rows < 1 or bands * rows > num_perm:
            raise ValueError(f"explicit bands x rows must be positive and use at most {num_perm} values, "
                             f"got {bands} x {rows}")
        return Banding(rule, bands, rows, threshold)
    if rule == "recall":
        return Banding(rule, *recall_bands(threshold, num_perm, max_miss_rate), threshold)
    if rule == "datasketch":
        # datasketch's optimiser refuses a threshold of 1.0, which the config allows.
        return Banding(rule, *minhash.lsh_params(min(threshold, 0.99), num_perm), threshold)
    raise ValueError(f"unknown banding rule {rule!r}; allowed: explicit, {', '.join(BANDING_RULES)}")
