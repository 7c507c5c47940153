"""The warm-up of :class:`~online_gmm._online.OnlineEM`: the mixin :class:`_WarmUpMixin`.

Until ``warm_up`` sample weight has arrived, the rows are buffered; then the buffer is fitted by
batch EM (the model's ``initialise``) and the stepwise updates begin. When that fit is ill-defined,
the culprits are searched for (rows ordered by their robust distance from the buffer's median, then
a bisection) and left out. Before the warm-up ends, :meth:`_WarmUpMixin.provisional` fits the rows
buffered so far without changing the state.
"""

from __future__ import annotations

import warnings

import numpy as np

from online_gmm._em import GaussianParams, Scorer
from online_gmm._guards import (
    Refused,
    _bisect,
    _check_scale,
    _refusal,
    _trimmed_variances,
)
from online_gmm._suffstats import SufficientStatistics

#: growth of the warm-up buffer after which a provisional fit starts afresh (see
#: :meth:`OnlineEM.provisional`)
_PROVISIONAL_GROWTH = 1.25


class _WarmUpMixin:
    """The warm-up buffer, its fit and the provisional fit (for :class:`~online_gmm._online.OnlineEM`)."""

    def provisional(self) -> tuple[SufficientStatistics, GaussianParams] | None:
        """A model of the rows buffered so far, for predictions before the warm-up ends.

        A short stream (fewer rows than the warm-up) still gets a model as soon as ``n_components``
        rows are buffered. The buffer is fitted as at the end of the warm-up (batch EM, the warm-up's
        starts); while it grows by less than a factor of two since that fit, later calls refine the
        previous provisional parameters by EM on the whole buffer instead (a few iterations), so
        that asking after every small batch costs about one fresh fit per doubling. The state is not
        changed: the buffer, the clock and the random state (restored after the fit) are those of a
        stream where nobody asked, and the warm-up ends exactly as it would have.

        Returns
        -------
        (SufficientStatistics, GaussianParams) or None
            The buffer's statistics (not decayed by the schedule) and their M-step; None while fewer
            than ``n_components`` rows are buffered, after the warm-up, or when the buffer cannot be
            fitted (e.g. an extreme record that the warm-up's end would refuse).
        """
        if self.initialised:
            return None
        rows = sum(len(b) for b in self._buf_X)
        if rows < self.n_components or self.buffered <= 0:
            return None
        cached = getattr(self, "_provisional", None)
        if cached is not None and cached[0] == self._buf_version:
            return cached[2]
        from online_gmm._em import run_em

        Xb, wb = np.concatenate(self._buf_X), np.concatenate(self._buf_w)
        w = None if bool(np.all(wb == 1.0)) else wb
        state = self.rng.get_state()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if cached is None or cached[2] is None or rows >= _PROVISIONAL_GROWTH * cached[1]:
                    result, fresh, anchor = self.initialise(Xb, w), rows, None
                else:
                    # EM from the last fresh fit's parameters (not from the last refinement: the
                    # answer depends on when the caller asked only through that fit)
                    fresh, anchor = cached[1], cached[3]
                    result = run_em(Xb, anchor, reg_covar=self.reg_covar,
                                    tol=getattr(self.initialise, "tol", 1e-3),
                                    max_iter=max(1, getattr(self.initialise, "max_iter", 100)),
                                    sample_weight=w)
            stats = result.stats
            if stats is None:                   # max_iter == 0
                stats, _ = Scorer(result.params).expected_statistics(Xb, w)
            params = stats.to_params(self.reg_covar)
            if not (stats.is_finite() and params.is_finite()):
                raise ValueError("non-finite provisional fit")
            _check_scale(params, _trimmed_variances(Xb, self.reg_covar))
            out: tuple[SufficientStatistics, GaussianParams] | None = (stats, params)
            if anchor is None:
                anchor = params
        except ValueError:
            out, fresh, anchor = None, rows, None
        finally:
            self.rng.set_state(state)
        self._provisional = (self._buf_version, fresh, out, anchor)
        return out

    def _buffer(self, X: np.ndarray, w: np.ndarray, ids: np.ndarray, on_refused: str) -> list[Refused]:
        """Buffer warm-up rows; fit the buffer when it is full (culprits of a failed fit removed)."""
        self._buf_X.append(np.array(X, dtype=np.float64, copy=True))
        self._buf_w.append(np.array(w, dtype=np.float64, copy=True))
        self._buf_ids.append(np.array(ids, dtype=np.int64, copy=True))
        self._buf_version += 1
        self.n_seen += X.shape[0]
        self.weight_seen += float(w.sum())
        if not (self.buffered >= self.warm_up and sum(len(b) for b in self._buf_X) >= self.n_components):
            return []
        rng_state = self.rng.get_state()
        try:
            self._finish_warm_up()
            return []
        except ValueError as err:
            first_error = err
        Xb, wb = np.concatenate(self._buf_X), np.concatenate(self._buf_w)
        idb = np.concatenate(self._buf_ids)
        # least plausible first: the largest robust distance from the median in any feature
        med = np.median(Xb, axis=0)
        dev = np.abs(Xb - med)
        mad = np.median(dev, axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.max(dev / np.maximum(mad, np.finfo(float).tiny), axis=1)
        order = np.argsort(-z, kind="stable")
        ok = np.ones(len(Xb), dtype=bool)

        def fits(k: int) -> bool:
            mask = ok.copy()
            mask[order[:k]] = False
            self.rng.set_state(rng_state)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._fit_buffer(Xb[mask], wb[mask])
                return True
            except ValueError:
                return False

        k = _bisect(fits, 0, max(0, len(Xb) - self.n_components))
        self.rng.set_state(rng_state)
        if k is None:                                   # not caused by a few records
            self._unbuffer_last()
            raise first_error
        bad = order[:k]
        what = "non-finite" if "non-finite" in str(first_error) else "ill-defined covariances"
        refused = [(int(idb[i]), (f"learning this record would give the warm-up fit {what} (the "
                                  f"record lies {z[i]:.3g} median absolute deviations from the "
                                  "buffer's median)"))
                   for i in np.sort(bad).tolist()]
        if on_refused == "raise" and np.isin(idb[bad], self._buf_ids[-1]).any():
            self._unbuffer_last()
            raise _refusal(refused)
        keep = ok
        keep[bad] = False
        self._buf_X, self._buf_w, self._buf_ids = [Xb[keep]], [wb[keep]], [idb[keep]]
        self._buf_version += 1
        self.n_seen -= int(bad.size)
        self.weight_seen -= float(wb[bad].sum())
        # as in a stream without the culprits: the warm-up ends once enough rows are buffered
        if self.buffered >= self.warm_up:
            self._finish_warm_up()
        return refused

    def _unbuffer_last(self) -> None:
        self._buf_version += 1
        X, w = self._buf_X.pop(), self._buf_w.pop()
        self._buf_ids.pop()
        self.n_seen -= X.shape[0]
        self.weight_seen -= float(w.sum())

    def _fit_buffer(self, Xb: np.ndarray, wb: np.ndarray) -> tuple[SufficientStatistics, GaussianParams, float]:
        """The warm-up fit of buffered rows: statistics, parameters (their M-step) and the clock."""
        uniform = bool(np.all(wb == 1.0))
        result = self.initialise(Xb, None if uniform else wb)
        stats = result.stats
        if stats is None:  # max_iter == 0: statistics under the starting parameters
            stats, _ = Scorer(result.params).expected_statistics(Xb, None if uniform else wb)
        t = float(wb.sum())
        n_eff = self.schedule.n_eff(t)
        if stats.total_weight > 0:
            stats.decay(n_eff / stats.total_weight)
        # parameters are always the M-step of the statistics, so a reload reproduces them exactly
        params = stats.to_params(self.reg_covar)
        if not (stats.is_finite() and params.is_finite()):
            raise ValueError("the warm-up fit produced non-finite parameters")
        _check_scale(params, _trimmed_variances(Xb, self.reg_covar))
        return stats, params, t

    def _finish_warm_up(self) -> None:
        stats, params, t = self._fit_buffer(np.concatenate(self._buf_X), np.concatenate(self._buf_w))
        self.set_state(stats, params, t)
        self._buf_X.clear()
        self._buf_w.clear()
        self._buf_ids.clear()
        self._provisional = None
        self.n_updates += 1
