"""A fitted linear projection of the lexical sketch: PCA on a sample (Beam-free).

The lexical embedder's sparse random projection keeps TF-IDF cosines only to
about ``1/sqrt(dim)``, too coarse for nearest neighbours at 256 dimensions
(recall@10 against exact TF-IDF kNN 0.27 on linux-doc). Projecting to a
wide sketch first (``LexicalConfig.sketch_dim``, 4096) and then onto the
sketch's top principal components keeps the directions the corpus actually
varies in: at the same 256 output dimensions, recall doubles (0.51 fitted on
half the corpus, 0.58 on all of it), and a forced 16-partition graph keeps
more of the exact one (recall@10 0.84 -> 0.97 at nprobe 3).

``Projection.fit`` runs once, on one worker, over the sketches of a sample
(``LexicalEmbedder.raw``); the result is a small dense matrix (4 MiB at 4096 x
256 float32) that every worker applies inside the embedding kernel. The fit
takes the covariance by BLAS (a float32 product, kept in float64) and its top
eigenvectors by seeded randomised subspace iteration in float64
(``numpy.linalg.eigh`` of the whole covariance where the sketch is narrow),
with each component's sign fixed so that its largest-magnitude coefficient is
positive; the same sample and seed give the same bytes with the same numpy
and BLAS. The BLAS calls run on one thread (``threadpoolctl``): OpenBLAS's
results depend on its thread count (on this 2-core machine a fit on 2 threads
and one on 1 thread gave different components), so without the limit the
embeddings would depend on the worker's core count; on a shared machine one
thread is also the faster (the 16,384-row fit of linux-doc x4 took 13-17 s on
1 thread and 18-21 s on 2 beside other work). ``fingerprint`` names the
bytes, so a manifest records which projection made the vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xxhash
from threadpoolctl import threadpool_limits

__all__ = ["OVERSAMPLE", "POWER_ITERATIONS", "Projection"]

# The subspace iteration tracks dim + OVERSAMPLE directions through
# POWER_ITERATIONS multiplications by the covariance: on linux-doc, 99% of the
# variance the exact top-256 components keep.
OVERSAMPLE = 128
POWER_ITERATIONS = 4


def _orthonormal(columns: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the columns' span, by the eigenvectors of their Gram matrix.

    Used instead of ``numpy.linalg.qr``: OpenBLAS's threaded QR of a 4096 x 384
    matrix took 0.15 s alone and up to 4 s beside other work on a shared
    machine; a small Gram matrix's eigh does not. Directions the columns do not
    span (a sample of fewer rows than columns) come out as zero columns.
    """
    values, vectors = np.linalg.eigh(columns.T @ columns)  # ascending
    spanned = values > max(values[-1], 0.0) * 1e-12
    scale = np.where(spanned, 1.0 / np.sqrt(np.where(spanned, values, 1.0)), 0.0)
    return columns @ (vectors * scale)


@dataclass(frozen=True, eq=False)
class Projection:
    """Centred PCA from ``sketch_dim`` to ``dim`` coordinates: ``(x - mean) @ components``.

    Attributes:
        mean: float32 (sketch_dim,), the sample's mean sketch.
        components: float32 (sketch_dim, dim), orthonormal columns (zero
            where the sample could not support one), by explained variance
            descending.
        explained_variance_ratio: Share of the sample's variance the
            components keep (float, for the manifest).
        sample_rows: Sketches the projection was fitted on.
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: float
    sample_rows: int

    def __post_init__(self):
        if self.mean.dtype != np.float32 or self.components.dtype != np.float32:
            raise ValueError("mean and components must be float32")
        if self.components.ndim != 2 or self.mean.shape != (self.components.shape[0],):
            raise ValueError(f"mean {self.mean.shape} and components {self.components.shape} do not align")

    @property
    def sketch_dim(self) -> int:
        return self.components.shape[0]

    @property
    def dim(self) -> int:
        return self.components.shape[1]

    @classmethod
    def fit(cls, raw_vectors: np.ndarray, dim: int, seed: int = 0) -> "Projection":
        """Fits the projection on sketches of a sample.

        Args:
            raw_vectors: float (rows, sketch_dim) sketches (``LexicalEmbedder.raw``)
                of a sample of the corpus; zero rows (texts without words) are
                left out. Thousands of rows give components that generalise;
                with fewer rows than ``dim``, the components the sample cannot
                support are zero (or, for a sketch of at most ``dim +
                OVERSAMPLE`` columns, directions it did not vary in).
            dim: Output coordinates, 1..sketch_dim.
            seed: Seeds the random start of the subspace iteration.

        Returns:
            The projection.

        Raises:
            ValueError: Without two nonzero rows, or for a ``dim`` out of range.
        """
        x = np.asarray(raw_vectors, dtype=np.float32)
        if x.ndim != 2 or not 1 <= dim <= x.shape[1]:
            raise ValueError(f"dim={dim} needs 1..{x.shape[1] if x.ndim == 2 else '?'} sketch columns")
        nonzero = np.any(x != 0.0, axis=1)
        if not nonzero.all():  # a copy of the sample (256 MiB at 16,384 x 4096) only when needed
            x = x[nonzero]
        if x.shape[0] < 2:
            raise ValueError("fitting a projection needs at least two sketches with words")
        with threadpool_limits(limits=1, user_api="blas"):
            return cls._fit(x, dim, seed)

    @classmethod
    def _fit(cls, x: np.ndarray, dim: int, seed: int) -> "Projection":
        mean = x.mean(axis=0, dtype=np.float64)
        # The sketches are float32 already: centring and the covariance product
        # in float32 take half the memory (256 MiB at 16,384 x 4096) and half the
        # time, within 1e-6 of float64; the eigenvectors are found in float64.
        centred = x - mean.astype(np.float32)
        covariance = (centred.T @ centred).astype(np.float64)
        del centred
        total = float(np.trace(covariance))
        width = covariance.shape[0]
        if dim + OVERSAMPLE >= width:
            values, vectors = np.linalg.eigh(covariance)  # ascending
            values, top = values[::-1][:dim], vectors[:, ::-1][:, :dim]
        else:
            # Randomised subspace iteration (Halko, Martinsson and Tropp 2011,
            # algorithm 4.4) instead of a full eigh: 1.4 s instead of 8 s at
            # 4096 x 4096, and the same kNN recall on linux-doc (0.583).
            rng = np.random.default_rng(seed)
            basis = _orthonormal(covariance @ rng.standard_normal((width, dim + OVERSAMPLE)))
            for _ in range(POWER_ITERATIONS):
                basis = _orthonormal(covariance @ basis)
            basis = _orthonormal(basis)  # a second pass: orthonormal to ~1e-15, not ~cond² * 1e-16
            values, vectors = np.linalg.eigh(basis.T @ covariance @ basis)
            values, top = values[::-1][:dim], basis @ vectors[:, ::-1][:, :dim]
        # eigh may return either sign; fix it so the bytes do not depend on the solver's choice.
        pivot = np.argmax(np.abs(top), axis=0)
        top = top * np.where(top[pivot, np.arange(dim)] < 0, -1.0, 1.0)
        kept = float(np.clip(values, 0, None).sum() / total) if total > 0 else 1.0
        return cls(mean.astype(np.float32), np.ascontiguousarray(top, dtype=np.float32), kept, int(x.shape[0]))

    @property
    def fingerprint(self) -> str:
        """xxh3-64 of the mean and components: names this projection in a manifest."""
        digest = xxhash.xxh3_64_hexdigest(self.mean.tobytes() + self.components.tobytes())
        return f"pca:{self.sketch_dim}x{self.dim}:{digest}:rows={self.sample_rows}"
