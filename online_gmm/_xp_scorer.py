"""The E-step in the data's own array namespace and on its device (array API dispatch).

:class:`XpScorer` is the device counterpart of :class:`~online_gmm._em.Scorer`: built from the host
:class:`~online_gmm._em.GaussianParams`, it sends their small prepared constants (the precision
Cholesky factors folded as the host kernels fold them, the log-determinants and log-weights: about
K*D*D numbers) to the device once, and evaluates data there with matrix products, elementwise
operations and sums of the array API standard only (PyTorch on CPU or CUDA, CuPy,
array_api_strict, ...). Nothing of size (n_samples, ...) crosses to the host:

- the log-densities and everything derived from them (log-sum-exp, responsibilities, labels) are
  computed in the input's floating dtype (float32 stays float32);
- the E-step's statistics (:meth:`XpScorer.expected_statistics`) are accumulated in the device's
  most precise float (float64 where supported), centred: each chunk's scatter about its own
  responsibility-weighted means, chunks merged by Chan's formula on the device. Only the result,
  K + K*D + the scatter's K*D*D numbers, comes to the host as the same
  :class:`~online_gmm._suffstats.SufficientStatistics` the NumPy E-step returns; the M-step (and the
  Cholesky factorisations) stay on the host, in the one core every front end shares.

Rows whose log-density overflows the device's arithmetic (a value about 1e19 standard deviations from
every component in float32, 1e154 in float64) have no finite log-sum-exp there; a call that meets one
is evaluated by the host :class:`~online_gmm._em.Scorer` instead (its repair rule, see
``Scorer._repair``), so that the answers never contain NaN and agree with NumPy's.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from online_gmm._array_api import Space, to_numpy, to_space
from online_gmm._em import GaussianParams, Scorer
from online_gmm._suffstats import SufficientStatistics

__all__ = ["XpScorer", "resp_statistics", "stats_dtype"]

#: elements of the largest per-chunk temporary, (K, rows, D): 2^24 (128 MiB in float64) on an
#: accelerator, whose kernels want long arrays; 2^19 on a CPU device, where a chunk that stays in
#: cache measured 1.5-2.5x faster per E-step (PyTorch CPU, K=16, D=50)
_CHUNK_ELEMENTS = 1 << 24
_CPU_CHUNK_ELEMENTS = 1 << 19


def stats_dtype(space: Space) -> Any:
    """The dtype the statistics are accumulated in: float64 where the device has it, else float32."""
    from sklearn.utils._array_api import _max_precision_float_dtype

    return _max_precision_float_dtype(space.xp, space.device)


def put(a: np.ndarray, space: Space, dtype: Any) -> Any:
    """The host array ``a`` on ``space``'s device, in ``dtype`` (small arrays: parameters, weights)."""
    return space.xp.astype(to_space(np.asarray(a, dtype=np.float64), space), dtype)


def _rows(n_components: int, n_features: int, space: Space) -> int:
    """Rows per chunk: the (K, rows, D) temporaries hold about :data:`_CHUNK_ELEMENTS` numbers."""
    cpu = "cpu" in str(space.device).lower()
    budget = _CPU_CHUNK_ELEMENTS if cpu else _CHUNK_ELEMENTS
    return max(1, budget // max(1, n_components * n_features))


# ------------------------------------------------------------------------------------------------
# centred statistics on the device: one chunk, Chan's merge, the host statistics
# ------------------------------------------------------------------------------------------------
def _scatter_full(xp, a, sr):
    b = sr.T[:, :, None] * a                                   # sqrt(r_ik) (z_i - m_k): (K, n, D)
    return xp.matmul(xp.matrix_transpose(b), b)                # (K, D, D)


def _scatter_tied(xp, a, sr):
    b = sr.T[:, :, None] * a
    b = xp.reshape(b, (-1, b.shape[2]))                        # (K*n, D)
    return b.T @ b                                             # (D, D)


def _scatter_diag(xp, a, sr):
    b = sr.T[:, :, None] * a
    return xp.sum(b * b, axis=1)                               # (K, D)


def _scatter_spherical(xp, a, sr):
    return xp.sum(_scatter_diag(xp, a, sr), axis=1)            # (K,)


def _chan_full(xp, f, d):
    return f[:, None, None] * (d[:, :, None] * d[:, None, :])


def _chan_tied(xp, f, d):
    return (f[:, None] * d).T @ d


def _chan_diag(xp, f, d):
    return f[:, None] * (d * d)


def _chan_spherical(xp, f, d):
    return f * xp.sum(d * d, axis=1)


#: per covariance type: (chunk scatter about the chunk's means, Chan's cross term)
_DEVICE_STATS: dict[str, tuple[Callable, Callable]] = {
    "full": (_scatter_full, _chan_full),
    "tied": (_scatter_tied, _chan_tied),
    "diag": (_scatter_diag, _chan_diag),
    "spherical": (_scatter_spherical, _chan_spherical),
}


class _DeviceSums:
    """Per-component weight, mean (about a centre ``c``) and centred scatter, on the device.

    Parameters
    ----------
    covariance_type : str
    space : Space
    dtype : the statistics' dtype (see :func:`stats_dtype`)
    centre : ndarray of shape (n_features,)
        Host float64; the data are shifted by it before any product.
    """

    def __init__(self, covariance_type: str, space: Space, dtype: Any, centre: np.ndarray) -> None:
        self.covariance_type = covariance_type
        self.xp = space.xp
        self.dtype = dtype
        self.centre = centre
        self.c = put(centre, space, dtype)
        self.scatter, self.chan = _DEVICE_STATS[covariance_type]
        self.acc: tuple[Any, Any, Any] | None = None      # (nk (K,), mean - c (K, D), scatter)

    def add(self, X: Any, r: Any) -> None:
        """Add a chunk: ``X`` of shape (n, D) in any float dtype, ``r`` of shape (n, K) the
        responsibilities times the sample weights, in the statistics' dtype."""
        xp = self.xp
        z = xp.astype(X, self.dtype) - self.c                  # (n, D)
        nk = xp.sum(r, axis=0)                                 # (K,)
        safe = xp.where(nk > 0, nk, xp.ones_like(nk))
        mean = (r.T @ z) / safe[:, None]                       # 0 where nk = 0 (r is 0 there)
        a = z[None, :, :] - mean[:, None, :]                   # (K, n, D), centred per component
        part = (nk, mean, self.scatter(xp, a, xp.sqrt(r)))
        self.acc = part if self.acc is None else self._merge(self.acc, part)

    def _merge(self, one: tuple, two: tuple) -> tuple:
        """Chan's formula: the statistics of the union of both chunks."""
        xp = self.xp
        (wa, ma, sa), (wb, mb, sb) = one, two
        w = wa + wb
        pos = w > 0
        frac = xp.where(pos, wb / xp.where(pos, w, xp.ones_like(w)), xp.zeros_like(w))
        d = mb - ma
        return w, ma + frac[:, None] * d, sa + sb + self.chan(xp, wa * frac, d)

    def to_host(self, n_components: int, n_features: int) -> SufficientStatistics:
        """The statistics on the host, float64 (K + K*D + the scatter's numbers cross)."""
        if self.acc is None:
            return SufficientStatistics.zeros(n_components, n_features, self.covariance_type)
        nk, mean, scatter = (np.asarray(to_numpy(a), dtype=np.float64) for a in self.acc)
        return SufficientStatistics(self.covariance_type, nk, mean + self.centre, scatter)


def resp_statistics(X: Any, resp: Any, sample_weight: Any | None, *, covariance_type: str,
                    space: Space) -> SufficientStatistics:
    """The statistics of ``X`` given its responsibilities, computed on the device.

    The device counterpart of :meth:`SufficientStatistics.from_resp
    <online_gmm._suffstats.SufficientStatistics.from_resp>` (used for the starting parameters).

    Parameters
    ----------
    X : array of shape (n_samples, n_features), on the device
    resp : array of shape (n_samples, n_components), on the device, in :func:`stats_dtype`
    sample_weight : array of shape (n_samples,) on the device in :func:`stats_dtype`, or None
    covariance_type : str
    space : Space

    Returns
    -------
    SufficientStatistics
        On the host, float64.
    """
    xp = space.xp
    n, d = X.shape
    k_comp = resp.shape[1]
    dtype = stats_dtype(space)
    # centred on the column means (any centre gives the same scatter; this one keeps the digits)
    centre = np.asarray(to_numpy(xp.mean(xp.astype(X, dtype), axis=0)), dtype=np.float64)
    sums = _DeviceSums(covariance_type, space, dtype, centre)
    step = _rows(k_comp, d, space)
    for a in range(0, n, step):
        b = min(n, a + step)                     # in bounds: the standard leaves others unspecified
        r = resp[a:b, ...]
        if sample_weight is not None:
            r = r * sample_weight[a:b, None]
        sums.add(X[a:b, ...], r)
    return sums.to_host(k_comp, d)


# ------------------------------------------------------------------------------------------------
# log-densities on the device
# ------------------------------------------------------------------------------------------------
def _factor_full(pc: np.ndarray) -> np.ndarray:
    return pc                                                  # (K, D, D): U_k


def _factor_tied(pc: np.ndarray) -> np.ndarray:
    return pc                                                  # (D, D): U, shared


def _factor_diag(pc: np.ndarray) -> np.ndarray:
    return pc[:, None, :]                                      # (K, 1, D): 1 / sigma_kd


def _factor_spherical(pc: np.ndarray) -> np.ndarray:
    return pc[:, None, None]                                   # (K, 1, 1): 1 / sigma_k


def _whiten_full(xp, xc, k):
    # x - mu_k formed first, then whitened: no cancellation between large terms (in float32 a
    # tight component far from c would otherwise lose the distance's digits)
    a = xc[None, :, :] - k["mc"][:, None, :]                   # (K, n, D)
    return xp.matmul(a, k["u"])                                # U_k^T (x - mu_k), as rows


def _whiten_tied(xp, xc, k):
    # one product for all components: U^T (x - c) - U^T (mu_k - c); the rounding is relative to
    # the components' Mahalanobis distance from c, the same U for all of them
    return (xc @ k["u"])[None, :, :] - k["b"][:, None, :]


def _whiten_scaled(xp, xc, k):
    return (xc[None, :, :] - k["mc"][:, None, :]) * k["u"]


#: per covariance type: (the precision Cholesky factor as the device uses it, and how it whitens
#: a chunk centred on c into rows of shape (K, n, D) whose squared norms are the squared
#: Mahalanobis distances)
_DEVICE_LOG_PROB: dict[str, tuple[Callable, Callable]] = {
    "full": (_factor_full, _whiten_full),
    "tied": (_factor_tied, _whiten_tied),
    "diag": (_factor_diag, _whiten_scaled),
    "spherical": (_factor_spherical, _whiten_scaled),
}


class _Overflow(Exception):
    """A row's log-density overflowed the device's arithmetic (see the module docstring)."""


class XpScorer:
    """Evaluates a parameter set on data in its own array namespace and on its device.

    The interface of :class:`~online_gmm._em.Scorer` (the same methods, the same order of the
    returned arrays), with device arrays in and out; rows are processed in chunks whose largest
    temporaries, shape (K, rows, D), hold about 2^24 numbers (2^19 on a CPU device, see
    :func:`_rows`).

    Parameters
    ----------
    params : GaussianParams
        Host parameters (float64).
    space : Space
        The namespace and device of the data.
    """

    def __init__(self, params: GaussianParams, space: Space) -> None:
        self.params = params
        self.space = space
        self.prep = params.prepared()
        k_comp, d = params.means.shape
        self.rows = _rows(k_comp, d, space)
        self._consts: dict[Any, dict[str, Any]] = {}

    # -------------------------------------------------------------- device constants
    def _constants(self, dtype: Any) -> dict[str, Any]:
        """The constants on the device in ``dtype``, sent once per dtype: the centre ``c`` (as
        rounded to ``dtype``), the means about it, the precision Cholesky factor, and
        log w_k + log det U_k - D/2 log(2 pi)."""
        if dtype not in self._consts:
            params, prep = self.params, self.prep
            space = self.space
            c = put(prep["c"], space, dtype)
            c_host = np.asarray(to_numpy(c), dtype=np.float64)      # exactly the device's c
            factor = _DEVICE_LOG_PROB[params.covariance_type][0](params.precisions_cholesky)
            mc = params.means - c_host
            self._consts[dtype] = {
                "c": c, "mc": put(mc, space, dtype), "u": put(factor, space, dtype),
                "const": put((prep["const"] + prep["logw"])[None, :], space, dtype)}
            if params.covariance_type == "tied":
                self._consts[dtype]["b"] = put(mc @ factor, space, dtype)       # U^T (mu_k - c)
        return self._consts[dtype]

    def _chunks(self, n: int):
        for a in range(0, n, self.rows):
            yield a, min(n, a + self.rows)

    # -------------------------------------------------------------- one chunk
    def _wlp(self, Xc: Any) -> Any:
        """log(w_k) + log N(x | k) of a chunk, shape (n, K), in the chunk's dtype.

        The chunk is centred on c, whitened per component (:data:`_DEVICE_LOG_PROB`) and squared:
        no expansion of the squared distance whose terms cancel.
        """
        xp = self.space.xp
        k = self._constants(Xc.dtype)
        y = _DEVICE_LOG_PROB[self.params.covariance_type][1](xp, Xc - k["c"], k)
        q = xp.sum(y * y, axis=2)                                  # (K, n) squared distances
        return k["const"] - 0.5 * q.T

    def _lse(self, wlp: Any) -> tuple[Any, Any, Any, Any]:
        """(row maxima (n, 1), exp(wlp - max) (n, K), their row sums (n, 1), whether every row
        maximum is finite (a device boolean))."""
        xp = self.space.xp
        m = xp.max(wlp, axis=1, keepdims=True)
        e = xp.exp(wlp - m)
        return m, e, xp.sum(e, axis=1, keepdims=True), xp.all(xp.isfinite(m))

    def _each(self, X: Any, fn: Callable[[Any], tuple]) -> list[tuple]:
        """``fn`` over the row chunks of ``X``; raises _Overflow (checked once, at the end)."""
        xp = self.space.xp
        out, ok = [], None
        for a, b in self._chunks(X.shape[0]):
            *parts, fine = fn(X[a:b, ...])
            out.append(tuple(parts))
            ok = fine if ok is None else xp.logical_and(ok, fine)
        if ok is not None and not bool(ok):
            raise _Overflow
        return out

    def _concat(self, parts: list) -> Any:
        return parts[0] if len(parts) == 1 else self.space.xp.concat(parts, axis=0)

    def _on_host(self, name: str, X: Any, dtype: Any) -> tuple:
        """The host Scorer's ``name`` on ``X`` (rare: see the module docstring), back on the device."""
        out = getattr(Scorer(self.params), name)(to_numpy(X))
        out = out if isinstance(out, tuple) else (out,)
        xp = self.space.xp
        return tuple(to_space(a, self.space) if a.dtype.kind in "iu" else
                     xp.astype(to_space(a, self.space), dtype) for a in out)

    # -------------------------------------------------------------- whole arrays
    def weighted_log_prob(self, X: Any) -> Any:
        """log(w_k) + log N(x | k), shape (n_samples, n_components), in X's dtype."""
        def fn(Xc):
            wlp = self._wlp(Xc)
            return wlp, self._lse(wlp)[3]
        try:
            return self._concat([p[0] for p in self._each(X, fn)])
        except _Overflow:
            return self._on_host("weighted_log_prob", X, X.dtype)[0]

    def predict(self, X: Any) -> Any:
        """The most probable component of each row, shape (n_samples,), integer."""
        xp = self.space.xp

        def fn(Xc):
            wlp = self._wlp(Xc)
            return xp.argmax(wlp, axis=1), self._lse(wlp)[3]
        try:
            return self._concat([p[0] for p in self._each(X, fn)])
        except _Overflow:
            return self._on_host("predict", X, X.dtype)[0]

    def log_resp(self, X: Any) -> tuple[Any, Any]:
        """(log responsibilities of shape (n, K), log p(x) of shape (n,)), in X's dtype.

        A max-shifted log-sum-exp: log p = m + log s and log r = (wlp - m) - log s, with m the row
        maximum and s the row sum of exp(wlp - m).
        """
        xp = self.space.xp

        def fn(Xc):
            wlp = self._wlp(Xc)
            m, _, s, fine = self._lse(wlp)
            log_s = xp.log(s)
            return (wlp - m) - log_s, (m + log_s)[:, 0], fine
        try:
            parts = self._each(X, fn)
        except _Overflow:
            return self._on_host("log_resp", X, X.dtype)
        return self._concat([p[0] for p in parts]), self._concat([p[1] for p in parts])

    def score_samples(self, X: Any) -> Any:
        """log p(x), shape (n_samples,), in X's dtype."""
        xp = self.space.xp

        def fn(Xc):
            m, _, s, fine = self._lse(self._wlp(Xc))
            return (m + xp.log(s))[:, 0], fine
        try:
            return self._concat([p[0] for p in self._each(X, fn)])
        except _Overflow:
            return self._on_host("score_samples", X, X.dtype)[0]

    def expected_statistics(self, X: Any, sample_weight: Any | None = None
                            ) -> tuple[SufficientStatistics, float]:
        """One E-step pass on the device: the statistics of ``X`` under these parameters and the
        weighted log-likelihood, as :meth:`Scorer.expected_statistics
        <online_gmm._em.Scorer.expected_statistics>` returns them.

        Parameters
        ----------
        X : array of shape (n_samples, n_features), on the device
        sample_weight : array of shape (n_samples,) on the device in :func:`stats_dtype`, or None

        Returns
        -------
        stats : SufficientStatistics
            On the host, float64.
        log_likelihood : float
            sum_i w_i log p(x_i).
        """
        xp = self.space.xp
        k_comp, d = self.params.means.shape
        dtype = stats_dtype(self.space)
        sums = _DeviceSums(self.params.covariance_type, self.space, dtype, self.prep["c"])
        total = None
        ok = None
        for a, b in self._chunks(X.shape[0]):
            Xc = X[a:b, ...]
            m, e, s, fine = self._lse(self._wlp(Xc))
            r = xp.astype(e / s, dtype)                                   # responsibilities
            log_p = xp.astype((m + xp.log(s))[:, 0], dtype)
            if sample_weight is not None:
                w = sample_weight[a:b, ...]
                r = r * w[:, None]
                log_p = log_p * w
            sums.add(Xc, r)
            part = xp.sum(log_p)
            total = part if total is None else total + part
            ok = fine if ok is None else xp.logical_and(ok, fine)
        if ok is not None and not bool(ok):
            w_host = None if sample_weight is None else np.asarray(to_numpy(sample_weight), dtype=np.float64)
            return Scorer(self.params).expected_statistics(to_numpy(X), w_host)
        return sums.to_host(k_comp, d), 0.0 if total is None else float(total)
