"""How each covariance type sums the raw moments of a whole E-step pass (:data:`PASS_SUMS`).

The kernels' half of :class:`~online_gmm._pass_sums.PassAccumulator`: for full, diag and spherical,
a chunk's raw moments about the shared centre, the check for a correction that would cancel, the
guarded finish of such a chunk (:mod:`online_gmm._scatter`) and the scatter of the summed moments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from online_gmm._blocks import _scatter_layout, _tri_blocks, _use_blocks
from online_gmm._scatter import (
    _CANCEL,
    _finish_diag,
    _finish_full,
    _finish_spherical,
    _full_sums,
)

__all__ = ["PASS_SUMS", "PassSums", "sums_means"]


# --------------------------------------------------------------------------------------------------
# raw moments of a whole E-step pass (full, diag, spherical)
# --------------------------------------------------------------------------------------------------
# The Scorer's chunks are all centred on the same centre c, so their raw moments about c add up
# over a pass: n_k, the first moments s_k = sum_i r_ik z_i and the second moments P_k (full: the
# flat block layout of _full_sums; diag: (K, D); spherical: the trace, (K,)). The correction
# S = P - s s^T / n is then made once per pass, not once per chunk followed by Chan's merge. Each
# chunk is checked first (``low``): one whose correction would cancel digits is finished on its
# own, guarded (``finish``), and merged by Chan's formula instead. The others cannot make the
# pass's correction cancel: S_jj(pass) = sum_c (S_jj(c) + n_c (mu_c - mu)^2) >= _CANCEL P_jj(pass).
_TINY = np.finfo(float).tiny


def sums_means(s, nk):
    """``s / n_k`` per component: the means about the centre from summed first moments. A
    component of zero weight has ``s`` exactly zero (every term is), so its mean is the centre."""
    return s / np.maximum(nk, _TINY)[:, None]


def _per_root_weight(s, nk):
    """``s / sqrt(n_k)`` per component, so that ``s s^T / n`` is ``v v^T`` (exactly symmetric).
    A component of zero weight has ``s`` exactly zero (every term is), so it gives zero."""
    return s / np.sqrt(np.maximum(nk, _TINY))[:, None]


@functools.lru_cache(maxsize=64)
def _diag_index(k_comp: int, d: int) -> np.ndarray:
    """Flat positions, in the layout of :func:`_scatter_layout`, of every P_k's diagonal (K, D)."""
    index = _scatter_layout(k_comp, d)[0].reshape(k_comp, d * d)
    return np.ascontiguousarray(index[:, :: d + 1])


def _sums_full(z, rt, squares, xt1, buf, out):
    k_comp, n = rt.shape
    d = z.shape[1]
    if xt1 is None or not _use_blocks(n, k_comp, d):
        return None
    _, first, _, size = _scatter_layout(k_comp, d)
    if out is None or out.size != size:
        out = np.empty(size)
    bmax = max(hi - lo for lo, hi in _tri_blocks(d))
    if buf is None or not buf.flags.c_contiguous or buf.size < k_comp * bmax * n:
        buf = np.empty(k_comp * bmax * n)
    _full_sums(xt1, rt, out, buf)
    return out.take(first).reshape(k_comp, d), out


def _low_full(p, s, nk):
    # S_jj < _CANCEL P_jj, i.e. (1 - _CANCEL) P_jj < s_j^2 / n (a zero-weight component has
    # P = s = 0 and is never low)
    raw = p.take(_diag_index(*s.shape))
    v = _per_root_weight(s, nk)
    return raw * (1.0 - _CANCEL) < v * v


def _scatter_sums_full(p, s, nk):
    k_comp, d = s.shape
    out = p.take(_scatter_layout(k_comp, d)[0]).reshape(k_comp, d, d)
    v = _per_root_weight(s, nk)
    out -= v[:, :, None] * v[:, None, :]
    return out


def _sums_diag(z, rt, squares, xt1, buf, out):
    if squares is None:
        return None
    return rt @ z, rt @ squares


def _low_diag(p, s, nk):
    v = _per_root_weight(s, nk)
    return p * (1.0 - _CANCEL) < v * v


def _scatter_sums_diag(p, s, nk):
    v = _per_root_weight(s, nk)
    return np.maximum(p - v * v, 0.0)


def _sums_spherical(z, rt, squares, xt1, buf, out):
    if squares is None or squares.ndim != 1:
        return None
    return rt @ z, rt @ squares


def _low_spherical(p, s, nk):
    v = _per_root_weight(s, nk)
    return p * (1.0 - _CANCEL) < np.einsum("kd,kd->k", v, v)


def _scatter_sums_spherical(p, s, nk):
    v = _per_root_weight(s, nk)
    return np.maximum(p - np.einsum("kd,kd->k", v, v), 0.0)


@dataclass(frozen=True)
class PassSums:
    """How one covariance type sums raw moments over an E-step pass (see above).

    ``sums(z, rt, squares, xt1, buf, out)``
        ``(s, P)`` of one chunk: first moments (K, D) and raw second moments about the chunk's
        origin, from the centred chunk ``z`` (rows, D), the responsibilities ``rt`` (K, rows)
        and what the kernel's ``log_prob`` left (``squares``; ``xt1``, [1; z] transposed), with
        scratch ``buf`` and, for full, ``out`` to write P into; None where the chunk has no such
        form (too small for full's blocks, or the kernel left nothing to reuse).
    ``low(P, s, nk)``
        the (component, feature) entries whose correction would cancel (diag of P: (K, D);
        spherical: (K,)).
    ``finish(P, nk, means, z, resp)``
        the guarded scatter of one chunk, for a chunk with ``low`` entries.
    ``scatter(P, s, nk)``
        the scatter of summed moments: P - s s^T / n.
    """

    sums: Callable
    low: Callable
    finish: Callable
    scatter: Callable


PASS_SUMS = {
    "full": PassSums(_sums_full, _low_full, _finish_full, _scatter_sums_full),
    "diag": PassSums(_sums_diag, _low_diag, _finish_diag, _scatter_sums_diag),
    "spherical": PassSums(_sums_spherical, _low_spherical, _finish_spherical,
                          _scatter_sums_spherical),
}
