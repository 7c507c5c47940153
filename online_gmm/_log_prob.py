"""Log-densities of every sample under every component, through the precision Cholesky factor.

Per covariance type, ``prepare(means, prec_chol)`` once per parameter set and ``log_prob(X, prep,
out, buf)`` per chunk into the caller's buffers (leaving the centred chunk, and for diag and
spherical its squares, for the statistics of the same chunk), and the one-row fast paths of
:data:`ROW_LAYOUT` on the same prepared arrays.
"""

from __future__ import annotations

import numpy as np

from online_gmm._blocks import ONE_PASS_FLOATS, _block_gather, _scratch, _use_blocks
from online_gmm._precision import (
    _logdet_diag,
    _logdet_full,
    _logdet_spherical,
    _logdet_tied,
)

__all__ = ["LOG_2PI", "ROW_LAYOUT"]

LOG_2PI = float(np.log(2.0 * np.pi))


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
