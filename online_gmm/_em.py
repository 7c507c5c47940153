"""The E-step and the EM loop, written once for every front end.

:class:`GaussianParams` holds a mixture's parameters; :class:`Scorer` prepares them once for
evaluation and works through data in cache-sized chunks with reused buffers (fresh large temporaries
cost page faults); :func:`expected_statistics` is one E-step pass that returns the
:class:`~online_gmm._suffstats.SufficientStatistics` of the data under the parameters (the "map" of a
map-reduce); :func:`run_em` is scikit-learn's EM loop on top of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from online_gmm._gaussian import ONE_PASS_FLOATS, get_kernel
from online_gmm._pass_sums import PassAccumulator
from online_gmm._suffstats import SufficientStatistics

__all__ = ["GaussianParams", "Scorer", "expected_statistics", "run_em"]

#: floats per chunk buffer: about 1 MiB, comfortably inside L2
_CHUNK_FLOATS = 1 << 17
#: exp arguments are clipped here: exp(-700) ~ 1e-304 is a normal double, and exp near -708 is slow
_EXP_MIN = -700.0
#: |log p| beyond which log p = max + log(sum) loses the log of the sum to rounding (2^40: the sum's
#: log, at most log K, keeps at least 12 bits below the maximum's last digit... up to 2^52)
_FAR = float(2 ** 40)
#: most rows per chunk in a Scorer (narrow kernels: diag, spherical, tied)
_MAX_ROWS = 8192


@dataclass
class GaussianParams:
    """Parameters of a Gaussian mixture in scikit-learn's conventions.

    Attributes
    ----------
    covariance_type : str
    weights : ndarray of shape (n_components,)
    means : ndarray of shape (n_components, n_features)
    covariances : ndarray or None
        Shape by type: full (K, D, D), tied (D, D), diag (K, D), spherical (K,). ``None`` when the
        parameters were given as precisions.
    precisions_cholesky : ndarray
        Same shapes; upper-triangular ``U`` with ``precision = U @ U.T`` for full and tied.
    """

    covariance_type: str
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray | None
    precisions_cholesky: np.ndarray
    _prepared: dict | None = field(default=None, repr=False, compare=False)
    _precisions: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        return self.means.shape[1]

    def prepared(self) -> dict:
        """Per-parameter-set constants for :meth:`Scorer.log_prob`, computed once."""
        if self._prepared is None:
            kernel = get_kernel(self.covariance_type)
            prep = kernel.prepare(self.means, self.precisions_cholesky)
            with np.errstate(divide="ignore"):
                prep["logw"] = np.log(self.weights)
            self._prepared = prep
        return self._prepared

    def precisions(self) -> np.ndarray:
        """Precision matrices from the Cholesky factors (computed once per parameter set)."""
        if self._precisions is None:
            self._precisions = get_kernel(self.covariance_type).precisions(self.precisions_cholesky)
        return self._precisions

    def covariance_matrices(self) -> np.ndarray:
        """The covariances, derived from the precisions when the parameters were given that way."""
        if self.covariances is not None:
            return self.covariances
        prec = self.precisions()
        if self.covariance_type in ("full", "tied"):
            return np.linalg.inv(prec)
        return 1.0 / prec

    def copy(self) -> "GaussianParams":
        return GaussianParams(self.covariance_type, self.weights.copy(), self.means.copy(),
                              None if self.covariances is None else self.covariances.copy(),
                              self.precisions_cholesky.copy())

    def is_finite(self) -> bool:
        arrays = [self.weights, self.means, self.precisions_cholesky]
        if self.covariances is not None:
            arrays.append(self.covariances)
        return all(np.isfinite(a).all() for a in arrays)

    def n_parameters(self) -> int:
        """Number of free parameters (for BIC/AIC)."""
        k_comp, d = self.means.shape
        return int(get_kernel(self.covariance_type).n_parameters(k_comp, d) + k_comp * d + k_comp - 1)


class Scorer:
    """Evaluates a parameter set on data in chunks, reusing its buffers between chunks and calls.

    Per-sample, per-component arrays are kept component-major, shape (K, rows), so that the
    log-sum-exp over components and the per-component sums run along contiguous rows; the (n, K)
    arrays the chunk methods return are transposed views of those buffers (copy them to keep them).

    Parameters
    ----------
    params : GaussianParams
    """

    #: floats per chunk buffer: twice _CHUNK_FLOATS (2 MiB, past L2 but well inside L3) measured
    #: 5-15% faster per EM iteration for full, tied and spherical on data A, neutral on B (fewer
    #: chunks: less per-chunk overhead)
    chunk_floats = 2 * _CHUNK_FLOATS

    def __init__(self, params: GaussianParams) -> None:
        self.params = params
        self.kernel = get_kernel(params.covariance_type)
        self.prep = params.prepared()
        self._lost: tuple[np.ndarray, np.ndarray] | None = None    # see _exp_shifted
        # log(w_k) folded into the kernel's constant: one pass less per chunk
        self._wprep = dict(self.prep, const=self.prep["const"] + self.prep["logw"])
        k_comp, d = params.means.shape
        width = self.prep.get("row_floats", k_comp * d)
        rows = max(self.prep.get("min_rows", 256), self.chunk_floats // max(1, width))
        self.rows = int(min(_MAX_ROWS, rows))
        self._buf: dict[str, np.ndarray] | None = None

    def _buffers(self, n: int | None = None) -> dict[str, np.ndarray]:
        # sized for the first call's chunk (a small partial_fit batch needs small buffers)
        rows = self.rows if n is None else min(self.rows, max(1, n))
        if self._buf is None or self._buf["xc"].shape[0] < rows:
            k_comp, d = self.params.means.shape
            width = max(self.prep["row_floats"], k_comp, d)
            wide = self.prep.get("one_pass_row_floats", 0)
            if rows * wide <= ONE_PASS_FLOATS:
                width = max(width, wide)            # the kernel's one-pass products of a small chunk
            # "z": the log-sum-exp's (K, rows) and the statistics' scratch (the full scatter's
            # feature block of A, x^T and [1 | x])
            z_width = max(width + d, self.prep.get("stat_floats", 0))
            # "floor" and "zero": rows of constants for np.maximum / np.minimum, whose contiguous
            # loop runs 2-3x faster than with a scalar or a per-component column
            self._buf = {"xc": np.empty((rows, d + 1)), "y": np.empty((rows, width)),
                         "lp": np.empty((k_comp, rows)), "z": np.empty((rows, z_width)),
                         "s": np.empty(rows), "norm": np.empty(rows),
                         "floor": np.full(rows, _EXP_MIN), "zero": np.zeros(rows)}
        return self._buf

    def chunks(self, n: int):
        for start in range(0, n, self.rows):
            yield start, min(n, start + self.rows)

    def weighted_log_prob_chunk(self, Xc: np.ndarray) -> np.ndarray:
        """log(w_k) + log N(x | k) for one chunk (at most ``self.rows`` rows) into a reused buffer."""
        n = Xc.shape[0]
        buf = self._buffers(n)
        lp = buf["lp"]
        out = lp.reshape(-1)[: lp.shape[0] * n].reshape(lp.shape[0], n).T      # (n, K) view
        return self.kernel.log_prob(Xc, self._wprep, out, buf)

    def _exp_shifted(self, wlp: np.ndarray, Xc: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """exp(wlp - max) into the scratch buffer, the row maxima and the row sums (log-sum-exp).

        A row whose maximum is not finite (the kernel's arithmetic overflowed: NaN or -inf) is
        repaired first (:meth:`_repair`); a row whose density is then zero under every component
        gets log p = -inf (the row maximum returned is -inf) and the responsibilities of
        :meth:`_repair`'s rule, kept in ``self._lost`` for :meth:`log_resp_chunk`.
        """
        n = wlp.shape[0]
        buf = self._buffers(n)
        wt = wlp.T                                                  # (K, n), contiguous rows
        m = np.max(wt, axis=0, out=buf["norm"][:n])
        self._lost = None
        if not np.isfinite(m).all():                                # overflow: never on clean data
            lost = self._repair(wlp, Xc, m)
            if lost is not None:
                m[lost[0]] = 0.0
            self._lost = lost
        e = _flat(buf["z"], wt.shape)
        np.subtract(wt, m, out=e)
        # exp of arguments near or below -708 is 10-50x slower (subnormal results and their
        # neighbourhood); clipping at -700 costs one pass, and exp(-700) ~ 1e-304 is negligible next
        # to the row maximum's exp(0) = 1
        np.maximum(e, buf["floor"][:n], out=e)
        np.exp(e, out=e)
        if self._lost is not None:
            rows, log_r = self._lost
            e[:, rows] = np.exp(log_r).T
            m[rows] = -np.inf
        s = np.sum(e, axis=0, out=buf["s"][:n])
        return e, m, s

    def _repair(self, wlp: np.ndarray, Xc: np.ndarray | None, m: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray] | None:
        """Recompute, in place, the rows of ``wlp`` whose row maximum ``m`` is not finite.

        The kernels' products overflow for values beyond about 1e154 (NaN where two infinities
        meet, -inf elsewhere). Such a row is evaluated again on the record and the means scaled
        down by a power of two ``s`` (exact), so that the largest centred value is about 2^300:
        the squared Mahalanobis distance is ``q = s^2 q(x / s; mu / s)``, which is finite or
        overflows to +inf, so that log w_k + log N(x | k) is the exact (huge negative) value or
        -inf, never NaN and never a plausible value.

        Returns
        -------
        None, or (rows, log_resp) for the rows whose density is zero under every component
        (log p = -inf). Their responsibilities follow the rule: the record belongs to the
        component nearest to it in Mahalanobis distance (the softmax of the scaled evaluation,
        where the distances dominate: equal distances share equally), shape (n_lost, K).
        """
        rows = np.flatnonzero(~np.isfinite(m))
        if Xc is None:                                   # no record to rescale: only remove NaN
            block = wlp[rows]
            block[np.isnan(block)] = -np.inf
            wlp[rows] = block
            m[rows] = block.max(axis=1)
            lost = rows[~np.isfinite(m[rows])]
            k_comp = wlp.shape[1]
            return (lost, np.full((lost.size, k_comp), -np.log(k_comp))) if lost.size else None
        params = self.params
        c = self.prep["c"]
        with np.errstate(over="ignore", invalid="ignore"):
            dev = np.max(np.abs(Xc[rows] - c), axis=1)
        dev[~np.isfinite(dev)] = np.finfo(float).max
        _, expo = np.frexp(dev)
        shift = np.maximum(expo - 300, 0)
        logits = np.empty((rows.size, params.n_components))
        logw = self.prep["logw"]
        for sh in np.unique(shift).tolist():
            sel = shift == sh
            scaled = GaussianParams(params.covariance_type, np.ones(params.n_components),
                                    np.ldexp(params.means, -sh), None, params.precisions_cholesky)
            sc = Scorer(scaled)
            with np.errstate(over="ignore", invalid="ignore"):
                lp = sc.weighted_log_prob(np.ldexp(Xc[rows[sel]], -sh))   # const_k - q'_k / 2
                half_q = sc.prep["const"] - lp                             # q'_k / 2 >= 0
                block = logw + self.prep["const"] - np.ldexp(half_q, 2 * sh)
            block[np.isnan(block)] = -np.inf
            wlp[rows[sel]] = block
            logits[sel] = lp + logw
        m[rows] = wlp[rows].max(axis=1)
        gone = ~np.isfinite(m[rows])
        if not gone.any():
            return None
        lg = logits[gone]
        lg[np.isnan(lg)] = -np.inf
        top = lg.max(axis=1, keepdims=True)
        top[~np.isfinite(top)] = 0.0
        with np.errstate(divide="ignore"):
            log_r = lg - top
            log_r -= np.log(np.exp(log_r).sum(axis=1, keepdims=True))
        if not np.isfinite(log_r).any(axis=1).all():     # nothing to go by: uniform
            bad = ~np.isfinite(log_r).any(axis=1)
            log_r[bad] = -np.log(log_r.shape[1])
        return rows[gone], log_r

    def _log_norm(self, wlp: np.ndarray, Xc: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        e, m, s = self._exp_shifted(wlp, Xc)
        with np.errstate(divide="ignore"):
            np.log(s, out=s)
        s += m                                                      # log p(x), in buf["s"]
        return e, s, m

    def log_resp_chunk(self, Xc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log responsibilities, log p(x)) of one chunk; the first lives in a reused buffer."""
        wlp = self.weighted_log_prob_chunk(Xc)
        e, norm, m = self._log_norm(wlp, Xc)
        norm = norm.copy()
        far = None
        if m.min() < -_FAR:
            # log p = m + log(sum) absorbs the log of the sum where |m| is huge: there the
            # responsibilities are (wlp - m) - log(sum), from the exponentials just computed
            far = np.flatnonzero((m < -_FAR) & np.isfinite(m))
            lr_far = wlp[far] - m[far, None]
            lr_far -= np.log(e[:, far].sum(axis=0))[:, None]
        if self._lost is not None:
            norm_lost = norm[self._lost[0]]
            norm[self._lost[0]] = 0.0                      # their rows are replaced below
        wlp.T[...] -= norm
        if self._lost is not None:
            norm[self._lost[0]] = norm_lost
        if far is not None:
            wlp[far] = lr_far
        if self._lost is not None:
            rows, log_r = self._lost
            wlp[rows] = log_r
        return wlp, norm

    def _resp_chunk(self, Xc: np.ndarray) -> tuple[np.ndarray, float | np.ndarray]:
        """(responsibilities (n, K) in a reused buffer, log p(x) (n,) in a reused buffer)."""
        wlp = self.weighted_log_prob_chunk(Xc)
        e, m, s = self._exp_shifted(wlp, Xc)
        resp = wlp.T                                                # reuse the log-prob buffer
        np.divide(e, s, out=resp)
        with np.errstate(divide="ignore"):
            np.log(s, out=s)
        s += m
        return resp.T, s

    # -------------------------------------------------------------- whole-array helpers
    def weighted_log_prob(self, X: np.ndarray) -> np.ndarray:
        """log(w_k) + log N(x | k), shape (n_samples, n_components); never NaN (see :meth:`_repair`)."""
        return self._weighted_log_prob(X)[0]

    def _weighted_log_prob(self, X: np.ndarray) -> tuple[np.ndarray, list]:
        out = np.empty((X.shape[0], self.params.n_components))
        lost = []
        for a, b in self.chunks(X.shape[0]):
            block = out[a:b]
            block[...] = self.weighted_log_prob_chunk(X[a:b])
            m = block.max(axis=1)
            if not np.isfinite(m).all():
                got = self._repair(block, X[a:b], m)
                if got is not None:
                    lost.append((got[0] + a, got[1]))
        return out, lost

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The most probable component of each row, shape (n_samples,); a row whose density is zero
        under every component goes to the nearest one in Mahalanobis distance (see :meth:`_repair`)."""
        wlp, lost = self._weighted_log_prob(X)
        labels = wlp.argmax(axis=1)
        for rows, log_r in lost:
            labels[rows] = log_r.argmax(axis=1)
        return labels

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """log p(x), shape (n_samples,)."""
        out = np.empty(X.shape[0])
        for a, b in self.chunks(X.shape[0]):
            out[a:b] = self._log_norm(self.weighted_log_prob_chunk(X[a:b]), X[a:b])[1]
        return out

    def log_resp(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log responsibilities of shape (n, K), log p(x) of shape (n,))."""
        resp = np.empty((X.shape[0], self.params.n_components))
        norm = np.empty(X.shape[0])
        for a, b in self.chunks(X.shape[0]):
            lr, nm = self.log_resp_chunk(X[a:b])
            resp[a:b] = lr
            norm[a:b] = nm
        return resp, norm

    def expected_statistics(self, X: np.ndarray, sample_weight: np.ndarray | None = None
                            ) -> tuple[SufficientStatistics, float]:
        """One E-step pass: statistics of ``X`` under these parameters and the weighted log-likelihood.

        The chunks' raw moments about the kernel's centre are summed over the pass and corrected
        once (:class:`~online_gmm._pass_sums.PassAccumulator`); a chunk whose correction would
        cancel digits, and every chunk of a type or size without that form (tied; full chunks
        too small for its triangular blocks), gets statistics about its own means, merged by
        Chan's formula. The pass needs no (n_samples, n_components) array and reads each chunk
        once.

        Returns
        -------
        stats : SufficientStatistics
        log_likelihood : float
            sum_i w_i log p(x_i).
        """
        k_comp, d = self.params.means.shape
        ctype = self.params.covariance_type
        sums = PassAccumulator(ctype, self.prep["c"])
        stats = None
        total = 0.0
        for a, b in self.chunks(X.shape[0]):
            Xc = X[a:b]
            resp, norm = self._resp_chunk(Xc)
            w = None if sample_weight is None else sample_weight[a:b]
            total += float(norm.sum() if w is None else norm @ w)
            stats = self._chunk_statistics(sums, stats, resp, w, b - a)
        return self._pass_statistics(sums, stats, k_comp, d), total

    def _chunk_statistics(self, sums: PassAccumulator, stats: SufficientStatistics | None,
                          resp: np.ndarray, w: np.ndarray | None, rows: int) -> SufficientStatistics | None:
        """Add a chunk's statistics, from the chunk as the kernel centred it for the E-step (and
        its squares: no second pass), to the pass's raw sums, or (a chunk whose correction would
        cancel digits) to ``stats`` by Chan's formula; returns ``stats``."""
        buf = self._buffers(rows)
        rt = resp.T if w is None else resp.T * w                    # (K, rows)
        if sums.add(buf["centred"], rt, squares=buf.get("squares"), xt1=buf.get("centred1"),
                    buf=buf["z"]):
            return stats
        chunk = SufficientStatistics.from_resp(
            buf["centred"], resp, w, covariance_type=self.params.covariance_type, buf=buf["z"],
            centre=self.prep["c"], squares=buf.get("squares"))
        return SufficientStatistics.accumulate(stats, chunk)

    def _pass_statistics(self, sums: PassAccumulator, stats: SufficientStatistics | None,
                         k_comp: int, d: int) -> SufficientStatistics:
        """The pass's statistics: its corrected raw sums merged with the chunks added apart."""
        summed = sums.statistics()
        if summed is not None:
            stats = summed if stats is None else SufficientStatistics.accumulate(summed, stats)
        return stats if stats is not None else SufficientStatistics.zeros(k_comp, d, self.params.covariance_type)

    def score_statistics(self, X: np.ndarray, skip_above: float | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, SufficientStatistics, float]:
        """The prequential pass: every row scored, the statistics of the rows to learn, one read.

        The pipeline's step in one pass over ``X`` (:meth:`expected_statistics` plus what it keeps
        of each chunk): each chunk's responsibilities and log-densities are copied out, and the rows
        whose score ``-log p(x)`` is above ``skip_above`` or ``+inf`` (the anomaly rule, with the
        threshold as it stood before the batch) get weight 0 in the chunk's statistics, so that they
        are scored but not learned.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Finite, every value within +-:data:`~online_gmm._guards.MAX_ABS` (so that a row of
            weight 0 adds an exact 0 to every sum).
        skip_above : float, optional
            The score above which a row is not learned; None: every row is learned.

        Returns
        -------
        resp : ndarray of shape (n_samples, n_components)
            Responsibilities under these parameters.
        log_p : ndarray of shape (n_samples,)
            log p(x) (``-inf`` where the density is zero under every component).
        learned : ndarray of bool of shape (n_samples,), or None when every row is learned
        stats : SufficientStatistics
            Of the learned rows.
        log_likelihood : float
            The learned rows' summed log p(x).
        """
        n = X.shape[0]
        k_comp, d = self.params.means.shape
        ctype = self.params.covariance_type
        resp_out = np.empty((n, k_comp))
        log_p = np.empty(n)
        learned = None if skip_above is None else np.empty(n, dtype=bool)
        sums = PassAccumulator(ctype, self.prep["c"])
        stats = None
        total = 0.0
        for a, b in self.chunks(n):
            Xc = X[a:b]
            resp, norm = self._resp_chunk(Xc)
            resp_out[a:b] = resp
            log_p[a:b] = norm
            w = None
            if learned is not None:
                keep = learned_rows(norm, skip_above, out=learned[a:b])
                if keep.all():
                    total += float(norm.sum())
                else:
                    w = keep.astype(np.float64)
                    total += float(norm[keep].sum())
            else:
                total += float(norm.sum())
            stats = self._chunk_statistics(sums, stats, resp, w, b - a)
        if learned is not None and learned.all():
            learned = None
        return resp_out, log_p, learned, self._pass_statistics(sums, stats, k_comp, d), total


def learned_rows(log_p: np.ndarray, skip_above: float, out: np.ndarray | None = None) -> np.ndarray:
    """The rows the anomaly rule lets the model learn: a score ``-log p`` at most ``skip_above``,
    and not ``+inf`` (flagged whatever the threshold), as :class:`~online_gmm.threshold.NLLThreshold`
    flags them; shape (n,), bool (into ``out`` when given)."""
    out = np.less_equal(-log_p, skip_above, out=out)
    out &= log_p > -np.inf
    return out


def _flat(buf: np.ndarray, shape: tuple) -> np.ndarray:
    size = math.prod(shape)
    return buf.reshape(-1)[:size].reshape(shape)


def expected_statistics(X: np.ndarray, params: GaussianParams,
                        sample_weight: np.ndarray | None = None) -> tuple[SufficientStatistics, float]:
    """Functional form of :meth:`Scorer.expected_statistics` (used by the Dask map step)."""
    return Scorer(params).expected_statistics(X, sample_weight)


@dataclass
class EMResult:
    params: GaussianParams
    n_iter: int
    lower_bound: float
    lower_bounds: list[float]
    converged: bool
    #: statistics the final parameters were computed from (None when max_iter == 0)
    stats: SufficientStatistics | None = None


def run_em(X: np.ndarray, params: GaussianParams, *, reg_covar: float, tol: float, max_iter: int,
           sample_weight: np.ndarray | None = None, lower_bound: float = -np.inf,
           on_iter: Callable[[int, float, float], None] | None = None,
           e_step: Callable[[GaussianParams], tuple[SufficientStatistics, float]] | None = None
           ) -> EMResult:
    """scikit-learn's EM loop: E-step, M-step, stop when the lower bound changes by less than ``tol``.

    The lower bound of an iteration is the (weighted) mean log-likelihood under the parameters its
    E-step used, exactly as in :class:`sklearn.mixture.GaussianMixture`.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    params : GaussianParams
        Starting parameters.
    e_step : callable, optional
        Replaces the in-memory E-step pass (the Dask path maps it over chunks); must return the
        statistics and the summed weighted log-likelihood.
    """
    if e_step is None:
        def e_step(p: GaussianParams) -> tuple[SufficientStatistics, float]:
            return Scorer(p).expected_statistics(X, sample_weight)
    total_w = float(X.shape[0] if sample_weight is None else np.sum(sample_weight)) if X is not None else None
    lower_bounds: list[float] = []
    converged = False
    n_iter = 0
    stats = None
    for n_iter in range(1, max_iter + 1):
        prev = lower_bound
        stats, ll = e_step(params)
        params = stats.to_params(reg_covar)
        lower_bound = ll / (total_w if total_w is not None else stats.total_weight)
        lower_bounds.append(lower_bound)
        if on_iter is not None:
            on_iter(n_iter, lower_bound, lower_bound - prev)
        if abs(lower_bound - prev) < tol:
            converged = True
            break
    return EMResult(params, n_iter, lower_bound, lower_bounds, converged, stats)
