"""Triangular row blocks of the full-covariance kernels: their layout and the work thresholds.

The precision Cholesky factor and the scatter of a full covariance are triangular or symmetric, so
the kernels of :mod:`online_gmm._log_prob` and :mod:`online_gmm._scatter` form their products in
row blocks that skip the zero (or mirrored) columns; this module says where the blocks lie, when a
chunk holds enough work for them (``_TRI_MIN_WORK``, ``ONE_PASS_FLOATS``), and lends the kernels
views on their scratch buffers (:func:`_scratch`).
"""

from __future__ import annotations

import functools
import math

import numpy as np

# --------------------------------------------------------------------------------------------------
# triangular blocks (full covariances)
# --------------------------------------------------------------------------------------------------
# The precision Cholesky factor U_k is upper triangular, so row d of U_k^T touches only features
# 0..d, and a scatter matrix is symmetric. Splitting the features into row blocks of about
# ``_TRI_BLOCK`` lets each block's product skip the zero (or mirrored) columns beyond it: for nb
# equal blocks the products do (nb + 1) / (2 nb) of the dense work (0.6 at D=50), while every
# product stays one large GEMM over all components.
_TRI_BLOCK = 4
_MAX_BLOCKS = 16
#: rows x components x features^2 below which one dense block is cheaper (per-call overhead)
_TRI_MIN_WORK = 1 << 20
#: a chunk whose K x D x rows products fit in this many floats keeps all blocks' products together:
#: one reduction (E-step) and one multiplication (scatter) for all blocks instead of one per block,
#: which is most of the per-call cost at partial_fit batch sizes
ONE_PASS_FLOATS = 1 << 17


@functools.lru_cache(maxsize=64)
def _tri_blocks(d: int) -> tuple[tuple[int, int], ...]:
    """Row blocks ``(lo, hi)`` covering ``range(d)``, about ``_TRI_BLOCK`` features each."""
    nb = max(1, min(_MAX_BLOCKS, d // _TRI_BLOCK))
    edges = np.linspace(0, d, nb + 1).round().astype(int)
    return tuple((int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:]))


def _use_blocks(n: int, k_comp: int, d: int) -> bool:
    """Whether ``n`` rows are enough work for the triangular blocks to pay their extra calls."""
    return n * k_comp * d * d >= _TRI_MIN_WORK


@functools.lru_cache(maxsize=64)
def _block_gather(k_comp: int, d: int) -> tuple[np.ndarray, tuple[tuple[int, int, int], ...]]:
    """Flat indices of every triangular block's entries in a (K, D, D + 1) array, and per block
    ``(lo, hi, offset)`` into the gathered vector: one ``take`` builds all blocks. A block's rows
    are feature-major, (feature, component), so that consecutive blocks' products stack into one
    (D, K, rows) array."""
    idx = np.arange(k_comp * d * (d + 1)).reshape(k_comp, d, d + 1)
    parts, layout, off = [], [], 0
    for lo, hi in _tri_blocks(d):
        part = idx[:, lo:hi, : hi + 1].transpose(1, 0, 2).ravel()
        parts.append(part)
        layout.append((lo, hi, off))
        off += part.size
    return np.concatenate(parts), tuple(layout)


@functools.lru_cache(maxsize=64)
def _scatter_layout(k_comp: int, d: int
                    ) -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, int, int], ...], int]:
    """Where the full scatter's triangular block products land in one flat accumulator.

    Block ``(lo, hi)`` contributes the product ``(hi + 1, (hi - lo) * K)`` of rows ``:hi + 1`` of
    ``[1; z]`` with ``r_k z_j`` for the block's features ``j`` (columns feature-major: (feature,
    component)): its row 0 holds the first moments ``sum_i r_ik z_ij``, rows ``1..hi`` rows ``:hi``
    of columns ``lo:hi`` of every ``P_k = sum_i r_ik z_i z_i^T``. Returns the flat index, for every
    entry of the symmetric (K, D, D) result, of the accumulator element holding it (an entry below
    the diagonal reads its mirror, so the result is exactly symmetric), the flat index of every
    first moment (K, D), per block ``(lo, hi, offset)``, and the accumulator's size. One ``take``
    then assembles all components.
    """
    layout, off = [], 0
    index = np.empty((k_comp, d, d), dtype=np.intp)
    first = np.empty((k_comp, d), dtype=np.intp)
    k = np.arange(k_comp)[:, None, None]
    for lo, hi in _tri_blocks(d):
        width = (hi - lo) * k_comp
        rows = np.arange(hi)[None, :, None]
        cols = np.arange(lo, hi)[None, None, :]
        index[:, :hi, lo:hi] = off + (rows + 1) * width + (cols - lo) * k_comp + k
        first[:, lo:hi] = off + (cols[0] - lo) * k_comp + k[:, :, 0]
        layout.append((lo, hi, off))
        off += (hi + 1) * width
    upper = np.triu(np.ones((d, d), dtype=bool))
    index = np.where(upper, index, np.swapaxes(index, 1, 2))
    return index.reshape(-1), first.reshape(-1), tuple(layout), off


def _scratch(buf: np.ndarray | None, shape: tuple) -> np.ndarray:
    """A view of ``shape`` on the caller's reusable buffer (its flat memory), or a fresh array."""
    size = math.prod(shape)
    if buf is not None and buf.size >= size and buf.flags.c_contiguous:
        return buf.reshape(-1)[:size].reshape(shape)
    return np.empty(shape)
