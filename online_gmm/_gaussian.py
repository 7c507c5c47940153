"""Per-covariance-type Gaussian kernels.

Every covariance type supplies the same small set of functions, gathered in a :class:`Kernel` and
chosen by one lookup in :data:`KERNELS` on ``covariance_type``:

``scatter_shape(K, D)``
    shape of the centred scatter kept by :class:`~online_gmm._suffstats.SufficientStatistics`;
``chunk_scatter(Xc, resp, nk, means, buf, squares)``
    centred scatter of one chunk of data about the chunk's own responsibility-weighted means
    (``squares``: the squares ``log_prob`` left for the same chunk, diag and spherical only);
``chan_term(wa, wb, w, delta)``
    the cross term Chan's formula adds to the summed scatters when two statistics merge;
``covariances(scatter, nk, reg_covar)``
    covariances from scatter (the M-step), with ``reg_covar`` on the diagonal;
``precision_cholesky(cov)`` / ``precision_cholesky_from_precisions(prec)`` / ``precisions(prec_chol)``
    conversions in scikit-learn's conventions: the precision Cholesky factor ``U`` satisfies
    ``precision = U @ U.T`` and ``U`` is upper triangular;
``log_det(prec_chol, D)``
    log-determinant of the precision Cholesky factor, per component;
``prepare(means, prec_chol)`` and ``log_prob(X, prep, out, buf)``
    the log-density of every sample under every component, through the precision Cholesky factor;
    it leaves the chunk centred on ``prep["c"]`` in ``buf["centred"]`` (and, for diag and
    spherical, its squares in ``buf["squares"]``) so that the statistics of the same chunk need
    no second pass over the raw data;
``n_parameters(K, D)``
    free covariance parameters, for BIC/AIC.

:data:`PASS_SUMS` adds, for full, diag and spherical, how a whole E-step pass sums its chunks' raw
moments about the shared centre and corrects them once (:class:`PassSums`, used by
:class:`~online_gmm._pass_sums.PassAccumulator`).

The data is always shifted by a centre ``c`` (the mean of the component means) before products are
formed, so that data offset by 1e8 loses no precision in the expansions used for the log-densities
of tied, diag and spherical covariances and for the full, diag and spherical scatters (whose
remaining cancellation, a component tight in some feature relative to its distance from ``c``, is
caught by a guard that recomputes just those entries centred on the component's own mean; a
feature constant over the chunk, which cancels completely, has exactly zero scatter and is set so).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["Kernel", "KERNELS", "PASS_SUMS", "PassSums", "ROW_LAYOUT", "get_kernel", "CHOLESKY_ERROR",
           "LOG_2PI"]

LOG_2PI = float(np.log(2.0 * np.pi))

CHOLESKY_ERROR = (
    "Fitting the mixture model failed because some components have ill-defined empirical "
    "covariance (for instance caused by singleton or collapsed samples). Try to decrease the "
    "number of components, increase reg_covar, or scale the input data."
)

#: relative cancellation beyond which a shifted-moment scatter is recomputed directly
_CANCEL = 1e-6


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


# --------------------------------------------------------------------------------------------------
# scatter of one chunk, centred on the chunk's own means
# --------------------------------------------------------------------------------------------------
def _scratch(buf: np.ndarray | None, shape: tuple) -> np.ndarray:
    """A view of ``shape`` on the caller's reusable buffer (its flat memory), or a fresh array."""
    size = math.prod(shape)
    if buf is not None and buf.size >= size and buf.flags.c_contiguous:
        return buf.reshape(-1)[:size].reshape(shape)
    return np.empty(shape)


def _symmetrize(m: np.ndarray) -> np.ndarray:
    m += np.swapaxes(m, -1, -2)
    m *= 0.5
    return m


def _constant_features(Xc: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Among the features marked in ``low`` (K, D), those with one value on every row of the chunk.

    Their shifted sums cancel completely (no spread at all), yet their scatter, and their cross
    scatter with every other feature, is exactly zero: the caller sets it so. Without this, one
    constant column would send every component through the guard's recomputation.
    """
    cols = np.flatnonzero(low.any(axis=0))
    if cols.size == 0:
        return cols
    sub = Xc[:, cols]
    return cols[sub.max(axis=0) == sub.min(axis=0)]


#: floats of the guards' (pairs, rows) scratch: pairs are taken in groups within it (when every
#: feature of many components cancels, all pairs at once could take hundreds of MiB)
_PAIR_FLOATS = 1 << 20


def _pair_groups(n_pairs: int, n_rows: int) -> list[slice]:
    """Slices of at most ``_PAIR_FLOATS // n_rows`` pairs covering ``range(n_pairs)``."""
    step = max(1, _PAIR_FLOATS // max(1, n_rows))
    return [slice(a, min(n_pairs, a + step)) for a in range(0, n_pairs, step)]


def _rescatter_rows_full(out: np.ndarray, Xc: np.ndarray, resp: np.ndarray, means: np.ndarray,
                         low: np.ndarray) -> None:
    """Recompute, centred on the component's own mean, the rows and columns of the full scatter
    whose diagonal entry cancelled (``low``, shape (K, D)), in place.

    Row j of S_k is sum_i r_ik (x_ij - mu_kj) (x_i - mu_k)^T = a^T X - s mu_k^T with
    a = r_k (x_j - mu_kj) and s = sum_i a_i (zero up to rounding), as in the exact path; the
    cancelled pairs share (pairs, rows) @ (rows, D) products, in groups of bounded scratch
    (_pair_groups). The other entries keep the
    shifted sums' precision (their diagonal entries did not cancel), so a component that is tight
    in one feature only (a pure binary code, say) costs one row, not a whole recomputation.
    """
    ks, js = np.nonzero(low)                          # the cancelled (component, feature) pairs
    rows = np.empty((ks.size, Xc.shape[1]))
    for p in _pair_groups(ks.size, Xc.shape[0]):
        a = Xc.T[js[p]] - means[ks[p], js[p]][:, None]    # (pairs, rows)
        a *= resp.T[ks[p]]
        np.matmul(a, Xc, out=rows[p])
        rows[p] -= a.sum(axis=1)[:, None] * means[ks[p]]
    for k in np.unique(ks):
        sel = ks == k
        j, r = js[sel], rows[sel]
        sk = out[k]                                   # (D, D) view
        sk[j, :] = r
        sk[:, j] = r.T
        block = r[:, j]                               # both entries recomputed: one value
        sk[np.ix_(j, j)] = 0.5 * (block + block.T)


def _rescatter_diag(out: np.ndarray, Xc: np.ndarray, resp: np.ndarray, means: np.ndarray,
                    low: np.ndarray) -> None:
    """Recompute the cancelled entries (``low``, shape (K, D)) of the diag scatter, centred on the
    component's own mean, in place."""
    ks, js = np.nonzero(low)                          # the cancelled (component, feature) pairs
    for p in _pair_groups(ks.size, Xc.shape[0]):
        k, j = ks[p], js[p]
        dz = Xc.T[j] - means[k, j][:, None]           # (pairs, rows)
        out[k, j] = np.einsum("pn,pn->p", resp.T[k] * dz, dz)


#: floats of one feature block of r_k x^T in the full scatter: rows per pass follow from it, which
#: bounds the scratch memory (2^18: a Scorer chunk in one pass, measured fastest at K=16, D=50)
_SCATTER_ROWS_FLOATS = 1 << 18


def _full_sums(xt1: np.ndarray, rt: np.ndarray, out: np.ndarray, buf: np.ndarray,
               add: bool = False) -> np.ndarray:
    """Raw moments about the chunk's origin of one pass of rows, in the flat layout of
    :func:`_scatter_layout`: first moments ``sum_i r_ik z_i`` and the upper block triangle of
    ``P_k = sum_i r_ik z_i z_i^T``.

    Parameters
    ----------
    xt1 : ndarray of shape (D + 1, rows)
        ``[1; z]``: a row of ones over the centred data, transposed (rows contiguous).
    rt : ndarray of shape (K, rows)
        Responsibilities (times sample weights), component-major.
    out : ndarray of shape (size,)
        The accumulator, written (``add=False``) or added to.
    buf : ndarray
        Scratch of at least ``K * D * rows`` floats (all blocks' ``r_k z_j`` at once, when the
        chunk is small: see ``ONE_PASS_FLOATS``) or ``K * bmax * rows`` (one block at a time).
    """
    d, n = xt1.shape[0] - 1, xt1.shape[1]
    k_comp = rt.shape[0]
    _, _, layout, _ = _scatter_layout(k_comp, d)
    one_pass = k_comp * d * n <= ONE_PASS_FLOATS and buf.size >= k_comp * d * n
    r = rt[None]
    if one_pass:                                   # r_k z^T of every block in one multiplication
        a_all = buf.reshape(-1)[: d * k_comp * n].reshape(d, k_comp, n)
        np.multiply(xt1[1:, None, :], r, out=a_all)
    for lo, hi, off in layout:
        if one_pass:
            a = a_all[lo:hi]
        else:
            a = buf.reshape(-1)[: (hi - lo) * k_comp * n].reshape(hi - lo, k_comp, n)
            np.multiply(xt1[1 + lo: 1 + hi, None, :], r, out=a)
        acc = out[off: off + (hi + 1) * (hi - lo) * k_comp].reshape(hi + 1, (hi - lo) * k_comp)
        if add:
            acc += xt1[: hi + 1] @ a.reshape(-1, n).T
        else:
            np.matmul(xt1[: hi + 1], a.reshape(-1, n).T, out=acc)      # (hi + 1, b * K)
    return out


def _finish_full(total: np.ndarray, nk: np.ndarray, means: np.ndarray, Xc: np.ndarray,
                 resp: np.ndarray) -> np.ndarray:
    """The centred scatter of one chunk from its raw moments (:func:`_full_sums`), guarded.

    S_k = P_k - n_k mu_k mu_k^T. The correction cancels digits only for a component far from the
    centre relative to its spread: the diagonal of P_k bounds every entry's rounding error
    (|P_jl| <= sqrt(P_jj P_ll)), so where a diagonal entry S_jj keeps less than _CANCEL of P_jj,
    row and column j of S_k are recomputed centred on the component's own mean
    (_rescatter_rows_full; a feature constant over the chunk is set to zero instead). Every other
    entry's error stays below ~1e-10 sqrt(S_jj S_ll), the order of the sums' own rounding.
    """
    k_comp, d = means.shape
    index, _, _, _ = _scatter_layout(k_comp, d)
    out = total.take(index).reshape(k_comp, d, d)      # the upper triangle, mirrored
    raw = np.diagonal(out, axis1=1, axis2=2) * _CANCEL
    v = np.sqrt(nk)[:, None] * means                   # n_k mu mu^T as v v^T: exactly symmetric
    out -= v[:, :, None] * v[:, None, :]
    low = (np.diagonal(out, axis1=1, axis2=2) < raw) & (nk > 0)[:, None]
    if low.any():
        const = _constant_features(Xc, low)
        out[:, const, :] = 0.0                         # constant over the chunk: no scatter
        out[:, :, const] = 0.0
        low[:, const] = False
        if low.any():
            _rescatter_rows_full(out, Xc, resp, means, low)
    return out


def _chunk_scatter_full(Xc: np.ndarray, resp: np.ndarray, nk: np.ndarray, means: np.ndarray,
                        buf: np.ndarray | None = None, squares: np.ndarray | None = None
                        ) -> np.ndarray:
    # Shifted sums, as for diag: P_k = sum_i r_ik x_i x_i^T about the chunk's origin (from_resp
    # passes the chunk centred, on its column mean or on the kernel's centre), then
    # S_k = P_k - n_k mu_k mu_k^T, guarded (_finish_full). Relative to centring on every component
    # (A_k = r_k (X - mu_k)) this saves one elementwise pass over K x D x rows, a fifth of the
    # scatter's time at K=16, D=50.
    # Only the upper block triangle is formed (see _tri_blocks), then mirrored. Per feature
    # block, r_k x^T is built feature-major, shape (b, K, rows), so the multiplication runs along
    # the rows; all components share one (hi + 1, rows) @ (rows, b*K) product. Passes over row
    # ranges bound the scratch memory; the sums are additive over them.
    n, d = Xc.shape
    k_comp = resp.shape[1]
    if not _use_blocks(n, k_comp, d):
        # a few rows: the exact path costs little, and the shifted sums of a chunk with little
        # spread (one row: none) would cancel and send most components through the guard anyway
        return _scatter_centred_full(Xc, resp, nk, means, buf)
    bmax = max(hi - lo for lo, hi in _tri_blocks(d))
    one_pass = k_comp * d * n <= ONE_PASS_FLOATS
    step = n if one_pass else max(1, min(n, _SCATTER_ROWS_FLOATS // (k_comp * bmax)))
    need = ((k_comp * d if one_pass else k_comp * bmax) + d + 1) * step
    if buf is None or not buf.flags.c_contiguous or buf.size < need:
        buf = np.empty(need)
    flat = buf.reshape(-1)
    rt = np.ascontiguousarray(resp.T)
    total = np.empty(_scatter_layout(k_comp, d)[3])
    for lo_r in range(0, n, step):
        m = min(n, lo_r + step) - lo_r
        xt1 = flat[: (d + 1) * m].reshape(d + 1, m)    # [1; x]^T of this pass's rows
        xt1[0] = 1.0
        np.copyto(xt1[1:], Xc[lo_r: lo_r + m].T)
        _full_sums(xt1, rt[:, lo_r: lo_r + m], total, flat[(d + 1) * m:], add=lo_r > 0)
    return _finish_full(total, nk, means, Xc, resp)


def _scatter_centred_full(Xc: np.ndarray, resp: np.ndarray, nk: np.ndarray, means: np.ndarray,
                        buf: np.ndarray | None = None, squares: np.ndarray | None = None
                        ) -> np.ndarray:
    # The exact path (chunks too small for the shifted sums of _chunk_scatter_full):
    # S_k = sum_i r_ik (x_i - mu_k)(x_i - mu_k)^T = A_k^T X - s_k mu_k^T, with A_k = r_k (X - mu_k)
    # centred on mu_k and s_k = sum_i A_ik (zero up to rounding). s_k comes out of the same product
    # as a column of the data augmented by ones: from A, its error scales with the spread of the
    # data about mu_k, not with how far mu_k is from the centre (a tight component far away).
    # Only the lower block triangle of A_k^T X is formed (see _tri_blocks), then mirrored. Per
    # feature block, A is built component-major, shape (K, b, rows), so the elementwise passes run
    # along the rows, the block's scratch stays in cache, and all components share one
    # (K*b, rows) @ (rows, 1 + hi) product. Row blocks of data bound the scratch memory; the sums
    # are additive over them.
    n, d = Xc.shape
    k_comp = resp.shape[1]
    blocks = _tri_blocks(d) if _use_blocks(n, k_comp, d) else ((0, d),)
    bmax = max(hi - lo for lo, hi in blocks)
    width = k_comp * bmax + 2 * d + 1                      # floats per row: A's block, x^T, [1 | x]
    step = max(1, min(n, _SCATTER_ROWS_FLOATS // (k_comp * bmax)))
    if buf is None or not buf.flags.c_contiguous or buf.size < width * step:
        buf = np.empty(width * step)
    rt = resp.T
    low = np.zeros((k_comp, d, d))
    s = np.zeros((k_comp, d))
    flat = buf.reshape(-1)
    for lo_r in range(0, n, step):
        hi_r = min(n, lo_r + step)
        m = hi_r - lo_r
        x = Xc[lo_r:hi_r]
        xt = flat[: d * m].reshape(d, m)
        np.copyto(xt, x.T)
        x1 = flat[d * m: (2 * d + 1) * m].reshape(m, d + 1)
        x1[:, 0] = 1.0
        x1[:, 1:] = x
        a_flat = flat[(2 * d + 1) * m:]
        r = rt[:, None, lo_r:hi_r]
        for lo, hi in blocks:
            a = a_flat[: k_comp * (hi - lo) * m].reshape(k_comp, hi - lo, m)
            np.subtract(xt[None, lo:hi], means[:, lo:hi, None], out=a)
            a *= r
            prod = (a.reshape(-1, m) @ x1[:, : hi + 1]).reshape(k_comp, hi - lo, hi + 1)
            s[:, lo:hi] += prod[:, :, 0]
            low[:, lo:hi, :hi] += prod[:, :, 1:]
    # mirror: the strictly lower blocks once each way, the diagonal blocks (formed whole) halved
    out = low + np.swapaxes(low, 1, 2)
    for lo, hi in blocks:
        out[:, lo:hi, lo:hi] *= 0.5
    corr = s[:, :, None] * means[:, None, :]
    corr += np.swapaxes(corr, 1, 2).copy()
    corr *= 0.5
    out -= corr
    return out


def _chunk_scatter_tied(Xc, resp, nk, means, buf=None, squares=None):
    # sum_k S_k = X^T (sum_k A_k) - sum_k mu_k s_k^T: one (D, n) @ (n, D) product per chunk,
    # where sum_k A_k = w * X - R M (w the row sums of the responsibilities).
    n, d = Xc.shape
    a = _scratch(buf, (n, d))
    np.matmul(resp, means, out=a)
    np.subtract(a, Xc * resp.sum(axis=1)[:, None], out=a)      # -(sum_k A_k)
    out = np.matmul(Xc.T, a)
    np.negative(out, out=out)
    s = resp.T @ Xc - nk[:, None] * means                      # s_k, zero up to rounding
    out -= means.T @ s
    return _symmetrize(out)


def _chunk_scatter_diag(Xc, resp, nk, means, buf=None, squares=None):
    # Shifted moments about the origin of the chunk as given (from_resp centres every chunk, on its
    # column mean or on the kernel's centre, so no further shift pass is needed), then corrected
    # and guarded per component (_finish_diag).
    n, d = Xc.shape
    z = np.square(Xc, out=_scratch(buf, (n, d))) if squares is None else squares
    return _finish_diag(resp.T @ z, nk, means, Xc, resp)


def _finish_diag(raw, nk, means, Xc, resp):
    # S = P - n mu^2 from the raw sums P = sum_i r_ik x_i^2 (K, D); entries whose correction
    # cancels most of their digits (a component tight in that feature relative to its distance
    # from the centre) are recomputed centred on the component's own mean (_rescatter_diag; a
    # feature constant over the chunk is set to zero).
    out = raw - nk[:, None] * means * means
    low = (out < _CANCEL * raw) & (nk > 0)[:, None]
    if low.any():
        const = _constant_features(Xc, low)
        out[:, const] = 0.0                           # constant over the chunk: no scatter
        low[:, const] = False
        if low.any():
            _rescatter_diag(out, Xc, resp, means, low)
    np.maximum(out, 0.0, out=out)
    return out


def _chunk_scatter_spherical(Xc, resp, nk, means, buf=None, squares=None):
    # the trace of the diag scatter; with the squared norms of the rows (``squares``, shape (n,))
    # one (K, n) @ (n,) product gives the raw sums, corrected and guarded as for diag
    if squares is None:
        return _chunk_scatter_diag(Xc, resp, nk, means, buf).sum(axis=1)
    return _finish_spherical(resp.T @ squares, nk, means, Xc, resp)


def _finish_spherical(raw, nk, means, Xc, resp):
    # S = P - n ||mu||^2 from the raw sums P = sum_i r_ik ||x_i||^2 (K,), guarded as for diag
    out = raw - nk * np.einsum("kd,kd->k", means, means)
    bad = (out < _CANCEL * raw) & (nk > 0)
    for k in np.flatnonzero(bad):
        dz = Xc - means[k]
        out[k] = resp[:, k] @ np.einsum("nd,nd->n", dz, dz)
    np.maximum(out, 0.0, out=out)
    return out


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


# --------------------------------------------------------------------------------------------------
# Chan's cross term: scatter(a + b) = scatter(a) + scatter(b) + term
# --------------------------------------------------------------------------------------------------
def _coef(wa, wb, w):
    return np.divide(wa * wb, w, out=np.zeros_like(w), where=w > 0)


def _chan_full(wa, wb, w, delta):
    c = _coef(wa, wb, w)
    return c[:, None, None] * delta[:, :, None] * delta[:, None, :]


def _chan_tied(wa, wb, w, delta):
    c = _coef(wa, wb, w)
    return (c[:, None] * delta).T @ delta


def _chan_diag(wa, wb, w, delta):
    return _coef(wa, wb, w)[:, None] * delta * delta


def _chan_spherical(wa, wb, w, delta):
    return _coef(wa, wb, w) * np.einsum("kd,kd->k", delta, delta)


# --------------------------------------------------------------------------------------------------
# M-step: covariances from scatter
# --------------------------------------------------------------------------------------------------
def _safe_nk(nk):
    return nk + 10 * np.finfo(float).eps


def _cov_full(scatter, nk, reg_covar):
    cov = scatter / _safe_nk(nk)[:, None, None]
    d = cov.shape[-1]
    cov.reshape(len(nk), -1)[:, :: d + 1] += reg_covar
    return cov


def _cov_tied(scatter, nk, reg_covar):
    cov = scatter / _safe_nk(nk).sum()
    cov.flat[:: cov.shape[0] + 1] += reg_covar
    return cov


def _cov_diag(scatter, nk, reg_covar):
    return scatter / _safe_nk(nk)[:, None] + reg_covar


# --------------------------------------------------------------------------------------------------
# precision Cholesky factors
# --------------------------------------------------------------------------------------------------
def _prec_chol_unchecked(cov: np.ndarray) -> np.ndarray:
    # LAPACK potrf + trtri: the same factor as cholesky + solve_triangular(L, I), without the
    # wrappers' checks (a few microseconds instead of ~50 per matrix: partial_fit does K per batch).
    # The caller checks finiteness (potrf does not fail on NaN).
    potrf, trtri = _lapack()
    l, info = potrf(cov, lower=1, clean=1)
    if info != 0:
        raise ValueError(CHOLESKY_ERROR)
    inv, info = trtri(l, lower=1)
    if info != 0:
        raise ValueError(CHOLESKY_ERROR)
    return inv.T


@functools.cache
def _lapack() -> tuple[Callable, Callable]:
    """LAPACK's dpotrf and dtrtri, imported on first use (a job's start-up does not pay for scipy)."""
    from scipy.linalg import lapack

    return lapack.dpotrf, lapack.dtrtri


def _prec_chol_matrix(cov: np.ndarray) -> np.ndarray:
    out = _prec_chol_unchecked(cov)
    if not np.isfinite(out).all():
        raise ValueError(CHOLESKY_ERROR)
    return out


def _prec_chol_full(cov):
    out = np.empty_like(cov)
    for k in range(cov.shape[0]):
        out[k] = _prec_chol_unchecked(cov[k])
    if not np.isfinite(out).all():
        raise ValueError(CHOLESKY_ERROR)
    return out


def _prec_chol_tied(cov):
    return _prec_chol_matrix(cov)


def _prec_chol_diag(cov):
    if np.any(np.less_equal(cov, 0.0)) or not np.all(np.isfinite(cov)):
        raise ValueError(CHOLESKY_ERROR)
    return 1.0 / np.sqrt(cov)


def _from_prec_matrix(prec: np.ndarray) -> np.ndarray:
    # U upper triangular with U U^T = P: flip, Cholesky, flip back.
    from scipy import linalg

    try:
        l = linalg.cholesky(prec[::-1, ::-1], lower=True, check_finite=False)
    except linalg.LinAlgError:
        raise ValueError("precisions_init must be symmetric positive-definite") from None
    return l[::-1, ::-1].copy()


def _from_prec_full(prec):
    return np.stack([_from_prec_matrix(p) for p in prec])


def _from_prec_tied(prec):
    return _from_prec_matrix(prec)


def _from_prec_diag(prec):
    return np.sqrt(prec)


def _precisions_full(pc):
    return pc @ np.swapaxes(pc, -1, -2)


def _precisions_tied(pc):
    return pc @ pc.T


def _precisions_diag(pc):
    return pc * pc


def _logdet_full(pc, d):
    return np.log(np.diagonal(pc, axis1=-2, axis2=-1)).sum(axis=-1)


def _logdet_tied(pc, d):
    return np.log(np.diag(pc)).sum()


def _logdet_diag(pc, d):
    return np.log(pc).sum(axis=1)


def _logdet_spherical(pc, d):
    return d * np.log(pc)


# --------------------------------------------------------------------------------------------------
# log-density: prepare once per parameter set, evaluate per chunk into caller's buffers
# --------------------------------------------------------------------------------------------------
# ``log_prob`` fills ``out`` of shape (n, K) through its transpose ``out.T`` of shape (K, n): the
# Scorer passes the transpose of a component-major (K, rows) buffer, so every per-component pass
# (sums over features, the log-sum-exp over components) runs along contiguous rows. Any (n, K)
# array works as ``out``. ``buf`` holds "xc" (>= n, D; n * (D + 1) floats avoid an allocation for
# full), "y" (>= n * K * D floats) and "zero" (>= n zeros).
def _centre(means):
    return np.add.reduce(means, axis=0) / means.shape[0]      # the mean, without np.mean's overhead


def _const(logdet, d):
    return logdet - 0.5 * d * LOG_2PI


def _prepare_full(means, pc):
    k_comp, d = means.shape
    c = _centre(means)
    # "uT": row k*D + e is row e of U_k^T; "bcol": U_k^T (mu_k - c), so U_k^T (x - mu_k) =
    # uT (x - c) - bcol (read as they are by one-row evaluators)
    u_t = np.ascontiguousarray(np.transpose(pc, (1, 0, 2)).reshape(d, k_comp * d).T)
    b_all = np.einsum("kd,kde->ke", means - c, pc)
    # per row block of U^T (lower triangular): [-b | the block's nonzero columns], one product
    # with the data augmented by a leading column of ones
    aug = np.empty((k_comp, d, d + 1))
    aug[:, :, 0] = -b_all
    aug[:, :, 1:] = u_t.reshape(k_comp, d, d)
    gather, layout = _block_gather(k_comp, d)
    flat = aug.reshape(-1).take(gather)
    blocks = tuple((lo, hi, flat[off: off + k_comp * (hi - lo) * (hi + 1)].reshape(-1, hi + 1))
                   for lo, hi, off in layout)
    bmax = max(hi - lo for lo, hi, _ in blocks)
    logdet = _logdet_full(pc, d)
    return {"c": c, "blocks": blocks, "bmax": bmax, "aug": aug.reshape(k_comp * d, d + 1),
            "uT": u_t, "bcol": b_all.reshape(-1, 1),
            "logdet": logdet, "const": _const(logdet, d), "K": k_comp, "D": d,
            "row_floats": k_comp * (bmax + 1), "stat_floats": k_comp * bmax + 2 * d + 1,
            "one_pass_row_floats": k_comp * d}


def _log_prob_full(X, prep, out, buf):
    n = X.shape[0]
    k_comp, d = prep["K"], prep["D"]
    # the chunk centred and transposed, with a leading row of ones: (D + 1, n), contiguous, so
    # each block's product reads rows 0..hi of it without a copy
    xt1 = _scratch(buf["xc"], (d + 1, n))
    xt1[0] = 1.0
    np.subtract(X.T, prep["c"][:, None], out=xt1[1:])
    buf["centred"], buf["centred1"] = xt1[1:].T, xt1
    out_t = out.T
    if not _use_blocks(n, k_comp, d):
        # one dense block: [-b | U^T] for all components, fewer calls for a few rows
        y = np.matmul(prep["aug"], xt1, out=_scratch(buf["y"], (k_comp * d, n)))
        y3 = y.reshape(k_comp, d, n)
        np.einsum("kdn,kdn->kn", y3, y3, out=out_t)
        return _finish(out, prep)
    blocks, bmax = prep["blocks"], prep["bmax"]
    if k_comp * d * n <= ONE_PASS_FLOATS and buf["y"].size >= k_comp * d * n:
        # every block's rows of U^T (x - mu) in one (D, K, n) array, squared and summed at once
        y = _scratch(buf["y"], (d, k_comp, n))
        for lo, hi, ub in blocks:
            np.matmul(ub, xt1[: hi + 1], out=y[lo:hi].reshape(-1, n))
        np.einsum("dkn,dkn->kn", y, y, out=out_t)
        return _finish(out, prep)
    flat = _scratch(buf["y"], (k_comp * (bmax + 1) * n,))
    tmp = flat[k_comp * bmax * n:].reshape(k_comp, n)
    for j, (lo, hi, ub) in enumerate(blocks):
        y = np.matmul(ub, xt1[: hi + 1], out=flat[: k_comp * (hi - lo) * n].reshape(-1, n))
        y3 = y.reshape(hi - lo, k_comp, n)
        # one pass for the squares and their sum (square then sum is two)
        np.einsum("bkn,bkn->kn", y3, y3, out=out_t if j == 0 else tmp)
        if j:
            out_t += tmp
    return _finish(out, prep)


def _prepare_tied(means, pc):
    k_comp, d = means.shape
    c = _centre(means)
    b = (means - c) @ pc
    logdet = np.full(k_comp, _logdet_tied(pc, d))
    return {"c": c, "uT": np.ascontiguousarray(pc.T), "b2": -2.0 * b,
            "bbcol": np.einsum("kd,kd->k", b, b)[:, None].copy(), "logdet": logdet,
            "const": _const(logdet, d), "K": k_comp, "D": d, "row_floats": 2 * d + k_comp}


def _log_prob_tied(X, prep, out, buf):
    n = X.shape[0]
    d = prep["D"]
    xc = np.subtract(X, prep["c"], out=_scratch(buf["xc"], (n, d)))
    buf["centred"] = xc
    y = np.matmul(prep["uT"], xc.T, out=_scratch(buf["y"], (d, n)))            # (D, n)
    out_t = out.T
    np.matmul(prep["b2"], y, out=out_t)
    np.square(y, out=y)
    out_t += y.sum(axis=0)
    out_t += prep["bbcol"]
    np.maximum(out_t, buf["zero"][:n], out=out_t)     # see _log_prob_separable
    return _finish(out, prep)


def _prepare_separable(means, prec, logdet):
    # diag and spherical: (x-m)^T P (x-m) = [x, x^2] . [-2 m p, p] + m p m, one product per chunk
    k_comp, d = means.shape
    c = _centre(means)
    mc = means - c
    w = np.ascontiguousarray(np.hstack([-2.0 * mc * prec, prec]))           # (K, 2D)
    mpm = np.einsum("kd,kd->k", mc * mc, prec)[:, None]
    return {"c": c, "w": w, "w1h": -0.5 * w[:, :d], "w2h": -0.5 * w[:, d:], "mpmcol": mpm.copy(),
            "mpmh": -0.5 * mpm,
            "logdet": logdet, "const": _const(logdet, d), "K": k_comp, "D": d,
            "row_floats": 2 * d + k_comp,
            # a few thousand rows per chunk whatever the width: the (K, D) @ (D, n) products are
            # thin, and fewer, longer ones measured 5-10% faster per EM iteration at K=16, D=50
            # (not a power of two: 4096 rows measured slower, strides of 32 KiB alias in cache)
            "min_rows": 4500}


def _prepare_diag(means, pc):
    return _prepare_separable(means, pc * pc, _logdet_diag(pc, means.shape[1]))


def _prepare_spherical(means, pc):
    k_comp, d = means.shape
    prec = np.repeat((pc * pc)[:, None], d, axis=1)
    prep = _prepare_separable(means, prec, _logdet_spherical(pc, d))
    prep["ph"] = -0.5 * (pc * pc)[:, None]                                   # (K, 1)
    return prep


def _log_prob_separable(X, prep, out, buf):
    # two products on contiguous (n, D) blocks, x - c and (x - c)^2 (writing them side by side into
    # one (n, 2D) array costs two strided passes), with -1/2 folded into the factors ("w1h", "w2h",
    # "mpmh": exact, a power of two) and the constant added once; the clamp of the Mahalanobis
    # distance at zero becomes a clamp of the log-density at the constant
    n = X.shape[0]
    d, k_comp = prep["D"], prep["K"]
    scratch = _scratch(buf["y"], (n * (2 * d + k_comp),))
    xc = scratch[: n * d].reshape(n, d)
    x2 = scratch[n * d: 2 * n * d].reshape(n, d)
    tmp = scratch[2 * n * d:].reshape(k_comp, n)
    np.subtract(X, prep["c"], out=xc)
    np.square(xc, out=x2)
    buf["centred"], buf["squares"] = xc, x2
    out_t = out.T
    np.matmul(prep["w1h"], xc.T, out=out_t)
    np.matmul(prep["w2h"], x2.T, out=tmp)
    out_t += tmp
    out_t += prep["mpmh"]
    # the Mahalanobis distance clamped at zero: against a row of zeros, numpy's fast contiguous
    # loop (a scalar or a per-component column runs 2-3x slower in np.minimum and np.maximum)
    np.minimum(out_t, buf["zero"][:n], out=out_t)
    out_t += np.asarray(prep["const"], dtype=float).reshape(-1, 1)
    return out


def _log_prob_spherical(X, prep, out, buf):
    # as diag, but (x - c)^2 enters through its row sums ||x - c||^2, the same for every component:
    # one (K, D) @ (D, n) product plus an outer product instead of a (K, 2D) @ (2D, n) product
    n = X.shape[0]
    d, k_comp = prep["D"], prep["K"]
    scratch = _scratch(buf["y"], (n * (d + k_comp + 1),))
    xc = scratch[: n * d].reshape(n, d)
    sq = scratch[n * d: n * (d + 1)]
    tmp = scratch[n * (d + 1):].reshape(k_comp, n)
    np.subtract(X, prep["c"], out=xc)
    np.einsum("nd,nd->n", xc, xc, out=sq)
    buf["centred"], buf["squares"] = xc, sq
    out_t = out.T
    np.matmul(prep["w1h"], xc.T, out=out_t)
    np.multiply(prep["ph"], sq, out=tmp)
    out_t += tmp
    out_t += prep["mpmh"]
    np.minimum(out_t, buf["zero"][:n], out=out_t)     # see _log_prob_separable
    out_t += np.asarray(prep["const"], dtype=float).reshape(-1, 1)
    return out


_log_prob_diag = _log_prob_separable


def _finish(out, prep):
    out *= -0.5
    out += prep["const"]
    return out


# --------------------------------------------------------------------------------------------------
# parameter counts (BIC/AIC)
# --------------------------------------------------------------------------------------------------
def _npar_full(k, d):
    return k * d * (d + 1) // 2


def _npar_tied(k, d):
    return d * (d + 1) // 2


def _npar_diag(k, d):
    return k * d


def _npar_spherical(k, d):
    return k


# --------------------------------------------------------------------------------------------------
# one-row fast paths: the same kernel formulas on the same prepared arrays,
# written for a single record with few numpy calls (at one row numpy's per-call overhead dominates:
# ``kernel.log_prob`` costs ~15 us for one row, these ~5 us). Each returns log w_k + log N(x | k),
# shape (K,), in ``ws["q"]``. They are used only when the prepared arrays have the layout they were
# written for (``ROW_LAYOUT``); otherwise ``online_gmm._marginal.RowScorer`` falls back to ``Scorer``. Tests compare them
# with ``Scorer.weighted_log_prob`` for every covariance type.
# --------------------------------------------------------------------------------------------------
def _row_full(xc, prep, ws):
    y = np.dot(prep["uT"], xc, out=ws["y"])          # (K*D,)
    y -= ws["b"]
    y *= y
    q = np.dot(y, ws["half_sum"], out=ws["q"])       # -1/2 of each component's sum of D squares
    q += ws["const"]
    return q


def _row_tied(xc, prep, ws):
    y = np.dot(prep["uT"], xc, out=ws["y"])          # (D,)
    q = np.dot(prep["b2"], y, out=ws["q"])
    q += float(np.dot(y, y))
    q += ws["bb"]
    return _finish_row(q, ws)


def _row_separable(xc, prep, ws):
    xx = ws["y"]                                      # [x - c, (x - c)^2], (2D,)
    d = xc.shape[0]
    xx[:d] = xc
    np.multiply(xc, xc, out=xx[d:])
    q = np.dot(prep["w"], xx, out=ws["q"])
    q += ws["bb"]
    return _finish_row(q, ws)


def _finish_row(q, ws):
    np.maximum(q, 0.0, out=q)
    q *= -0.5
    q += ws["const"]
    return q


#: per covariance type: (one-row function, prepared keys it reads, constant-column key, y length)
ROW_LAYOUT = {
    "full": (_row_full, ("c", "uT", "bcol", "const", "logw"), "bcol", lambda k, d: k * d),
    "tied": (_row_tied, ("c", "uT", "b2", "bbcol", "const", "logw"), "bbcol", lambda k, d: d),
    "diag": (_row_separable, ("c", "w", "mpmcol", "const", "logw"), "mpmcol", lambda k, d: 2 * d),
    "spherical": (_row_separable, ("c", "w", "mpmcol", "const", "logw"), "mpmcol",
                  lambda k, d: 2 * d),
}


@dataclass(frozen=True)
class Kernel:
    """The functions one covariance type supplies (see the module docstring)."""

    name: str
    scatter_shape: Callable[[int, int], tuple]
    chunk_scatter: Callable
    chan_term: Callable
    covariances: Callable
    precision_cholesky: Callable
    precision_cholesky_from_precisions: Callable
    precisions: Callable
    log_det: Callable
    prepare: Callable
    log_prob: Callable
    n_parameters: Callable[[int, int], int]
    #: the shape of ``covariances_`` for K components and D features
    cov_shape: Callable[[int, int], tuple]


def _cov_spherical_from_trace(scatter, nk, reg_covar, d):
    return scatter / (_safe_nk(nk) * d) + reg_covar


KERNELS: dict[str, Kernel] = {
    "full": Kernel(
        "full", lambda k, d: (k, d, d), _chunk_scatter_full, _chan_full,
        lambda s, nk, reg, d: _cov_full(s, nk, reg), _prec_chol_full, _from_prec_full,
        _precisions_full, _logdet_full, _prepare_full, _log_prob_full, _npar_full,
        lambda k, d: (k, d, d),
    ),
    "tied": Kernel(
        "tied", lambda k, d: (d, d), _chunk_scatter_tied, _chan_tied,
        lambda s, nk, reg, d: _cov_tied(s, nk, reg), _prec_chol_tied, _from_prec_tied,
        _precisions_tied, _logdet_tied, _prepare_tied, _log_prob_tied, _npar_tied,
        lambda k, d: (d, d),
    ),
    "diag": Kernel(
        "diag", lambda k, d: (k, d), _chunk_scatter_diag, _chan_diag,
        lambda s, nk, reg, d: _cov_diag(s, nk, reg), _prec_chol_diag, _from_prec_diag,
        _precisions_diag, _logdet_diag, _prepare_diag, _log_prob_diag, _npar_diag,
        lambda k, d: (k, d),
    ),
    "spherical": Kernel(
        "spherical", lambda k, d: (k,), _chunk_scatter_spherical, _chan_spherical,
        _cov_spherical_from_trace, _prec_chol_diag, _from_prec_diag,
        _precisions_diag, _logdet_spherical, _prepare_spherical, _log_prob_spherical, _npar_spherical,
        lambda k, d: (k,),
    ),
}


def get_kernel(covariance_type: str) -> Kernel:
    """Return the :class:`Kernel` for ``covariance_type`` ('full', 'tied', 'diag' or 'spherical')."""
    try:
        return KERNELS[covariance_type]
    except KeyError:
        raise ValueError(
            f"covariance_type must be one of {sorted(KERNELS)}, got {covariance_type!r}"
        ) from None
