"""Centred scatter of one chunk of data about the chunk's own responsibility-weighted means.

One function per covariance type (``chunk_scatter`` of :class:`~online_gmm._gaussian.Kernel`): the
scatter is formed from sums about the chunk's centre and corrected by the component means, with a
guard that recomputes exactly the entries whose correction cancels digits (a component tight in some
feature relative to its distance from the centre) centred on the component's own mean; a feature
constant over the chunk, which cancels completely, has exactly zero scatter and is set so. Also
Chan's cross term (``chan_term``), which merging two statistics adds to their summed scatters.
"""

from __future__ import annotations

import numpy as np

from online_gmm._blocks import (
    ONE_PASS_FLOATS,
    _scatter_layout,
    _scratch,
    _tri_blocks,
    _use_blocks,
)

#: relative cancellation beyond which a shifted-moment scatter is recomputed directly
_CANCEL = 1e-6


# --------------------------------------------------------------------------------------------------
# scatter of one chunk, centred on the chunk's own means
# --------------------------------------------------------------------------------------------------
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
