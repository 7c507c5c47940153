"""Learning of the River learners: the batch buffer, the stepwise updates (incomplete records
included) and the warm-up fit with its frozen standardisation (:func:`_feature_scale`); the mixin
:class:`_Learning` of :class:`~online_gmm._river_base._DictGMM` (see :mod:`online_gmm.river`).
"""

from __future__ import annotations

import numpy as np

from online_gmm._marginal import incomplete_statistics
from online_gmm._online import screen_extreme
from online_gmm._river_calibration import _CAL_EVERY
from online_gmm._suffstats import SufficientStatistics


def _feature_scale(stats: SufficientStatistics) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale of each feature from one-component diagonal statistics.

    The scale is the standard deviation; a feature that is constant (its standard deviation at most
    1e-8 of its mean's magnitude, i.e. zero up to rounding) has no scale of its own and gets the mean
    standard deviation of the other features, or 1.0 if every feature is constant.

    Parameters
    ----------
    stats : SufficientStatistics
        'diag' statistics of one component with a positive weight.

    Returns
    -------
    shift, scale : ndarray of shape (n_features,)
    """
    shift = stats.means[0].copy()
    sd = np.sqrt(stats.scatter[0] / stats.weights[0])
    constant = sd <= 1e-8 * np.abs(shift)
    if constant.all():
        return shift, np.ones_like(sd)
    if constant.any():
        sd[constant] = sd[~constant].mean()
    return shift, sd


class _Learning:
    """``learn_one``, ``learn_many`` and ``flush`` of the River learners (see :mod:`online_gmm.river`)."""

    def learn_one(self, x: dict) -> None:
        """Learn one record (buffered: see "When learning becomes visible" in :mod:`online_gmm.river`).

        Parameters
        ----------
        x : dict
            Feature name -> number. Not modified and not kept.
        """
        keys = self._keys
        if keys is None:
            observed = [k for k, v in x.items() if self._finite(v)]
            if not observed:
                self.n_incomplete_ += 1
                self.n_incomplete_skipped_ += 1
                return
            self._set_schema(observed)
            keys = self._keys
        try:
            vals = [x[k] for k in keys]
            s = sum(vals)
            ok = s - s == 0.0
        except (KeyError, TypeError):
            ok = False
        if not ok:  # the slow path: big values whose sum overflows, or a missing feature
            row = self._values(x)
            missing = np.isnan(row)
            if missing.any():
                self.n_incomplete_ += 1
                if missing.all() or not (self.learn_incomplete and self._online.initialised):
                    self.n_incomplete_skipped_ += 1
                    return
                self.n_incomplete_learned_ += 1
                self._n_buf_incomplete += 1
            vals = row
        i = self._n_buf
        self._buf[i] = vals
        self._n_buf = i + 1
        self.n_learned_ += 1
        if i + 1 == self.update_every:
            self._apply(self._buf)

    def _apply(self, X: np.ndarray) -> None:
        """One stepwise update from the rows ``X`` (or warm-up buffering), then reset the buffer.

        ``X`` is the learner's own buffer or a copy of it: it may be overwritten. After the warm-up
        it may hold incomplete rows (NaN where missing), learned in the same update.
        """
        online = self._online
        keep, refused = screen_extreme(X, np.arange(X.shape[0]))
        if refused:                                  # too large for the arithmetic: kept out
            self.n_refused_ += len(refused)
            self._n_buf_incomplete -= int(np.isnan(X[~keep]).any(axis=1).sum())
            X = X[keep]
        if online.initialised:
            if self._scale is not None:
                X -= self._shift                     # incomplete rows: on their observed features
                X /= self._scale
            if self._n_buf_incomplete:
                try:
                    self._step_incomplete(X)
                except ValueError:                   # ill-defined: the complete rows, guarded
                    complete = ~np.isnan(X).any(axis=1)
                    self.n_refused_ += int((~complete).sum())
                    self.n_refused_ += len(online.update(X[complete], on_refused="skip"))
            elif X.shape[0]:
                self.n_refused_ += len(online.update(X, on_refused="skip"))
        else:
            self._warm.append(X.copy())
            self._n_warm += X.shape[0]
            if self._n_warm >= max(online.warm_up, self.n_components):
                self._finish_warm_up()
        self._n_buf = 0
        self._n_buf_incomplete = 0
        if online.initialised:
            self._set_evaluators()
            if self._cal_params is None or self.n_learned_ - self._cal_n >= _CAL_EVERY:
                self._cal_params, self._cal_n, self._cal = online.params, self.n_learned_, None

    def _step_incomplete(self, X: np.ndarray) -> None:
        """One stepwise update from rows some of which have missing features (NaN).

        The complete rows' statistics (the core E-step) and the incomplete rows' expected
        statistics (:func:`~online_gmm._marginal.incomplete_statistics`: marginal responsibilities,
        conditional means and covariances), both under the current parameters, are merged (Chan)
        and applied in ONE :meth:`OnlineEM.step <online_gmm._online.OnlineEM.step>`; the incomplete
        records count in the schedule's clock, and only complete rows are re-seeding candidates.
        """
        online = self._online
        params = online.params
        incomplete = np.isnan(X).any(axis=1)
        Xc = np.ascontiguousarray(X[~incomplete])
        stats, ll = online.scorer().expected_statistics(Xc)
        marginals = self._marginals
        if marginals is None or marginals.params is not params:
            marginals = None
        inc, inc_ll = incomplete_statistics(X[incomplete], params, marginals=marginals)
        stats += inc
        n_inc = int(incomplete.sum())
        online.step(Xc, batch=(stats, ll + inc_ll), extra=(n_inc, float(n_inc)))

    def _finish_warm_up(self) -> None:
        """Hand the warm-up rows to the core in one batch (it fits them); with ``standardize``,
        freeze the scale of the warm-up rows first and standardise them."""
        W = np.concatenate(self._warm)
        self._warm, self._n_warm, self._pre = [], 0, None
        if self.standardize:
            stats = SufficientStatistics.from_resp(W, np.ones((W.shape[0], 1)), covariance_type="diag")
            self._shift, self._scale = _feature_scale(stats)
            self._log_scale = np.log(self._scale)
            W -= self._shift
            W /= self._scale
        self.n_refused_ += len(self._online.update(W, on_refused="skip"))

    def flush(self) -> None:
        """Apply the buffered records now (a partial batch), so that they become visible."""
        if self._n_buf:
            self._apply(self._buf[: self._n_buf].copy())

    def learn_many(self, X) -> None:
        """Learn the rows of a DataFrame; the same model as ``learn_one`` on each row in order.

        Parameters
        ----------
        X : pandas.DataFrame of shape (n_samples, n_columns)
            Columns are feature names; NaN or None marks a missing value.
        """
        if len(X) == 0:
            return
        if self._keys is None:
            # the schema comes from the first row with a finite value, as in learn_one
            self._keys = list(X.columns)
            finite = np.isfinite(self._frame(X))
            self._keys = None
            has = np.flatnonzero(finite.any(axis=1))
            if has.size == 0:
                self.n_incomplete_ += len(X)
                self.n_incomplete_skipped_ += len(X)
                return
            first = int(has[0])
            self.n_incomplete_ += first
            self.n_incomplete_skipped_ += first
            self._set_schema([c for c, f in zip(X.columns, finite[first]) if f])
            X = X.iloc[first:]
        A = self._frame(X)
        missing = np.isnan(A)
        incomplete = missing.any(axis=1)
        n_inc = int(incomplete.sum())
        if n_inc:
            self.n_incomplete_ += n_inc
            self._learn_rows_incomplete(A, missing, incomplete)
            return
        m = self.update_every
        pos = 0
        while pos < A.shape[0]:
            take = min(m - self._n_buf, A.shape[0] - pos)
            self._buf[self._n_buf: self._n_buf + take] = A[pos: pos + take]
            self._n_buf += take
            self.n_learned_ += take
            pos += take
            if self._n_buf == m:
                self._apply(self._buf)

    def _learn_rows_incomplete(self, A: np.ndarray, missing: np.ndarray, incomplete: np.ndarray
                               ) -> None:
        """``learn_many`` for rows some of which are incomplete: the rows ``learn_one`` would
        buffer, at the same boundaries. Between two updates the policy is fixed: complete rows only
        during the warm-up (or with ``learn_incomplete=False``), afterwards every row with an
        observed feature."""
        complete_idx = np.flatnonzero(~incomplete)
        learnable_idx = np.flatnonzero(~missing.all(axis=1)) if self.learn_incomplete else complete_idx
        m = self.update_every
        n = A.shape[0]
        pos = 0
        while pos < n:
            idx = learnable_idx if self._online.initialised else complete_idx
            start = int(np.searchsorted(idx, pos))
            need = m - self._n_buf
            take = idx[start: start + need]
            end = int(take[-1]) + 1 if take.size == need else n
            k = take.size
            self._buf[self._n_buf: self._n_buf + k] = A[take]
            learned = int(incomplete[take].sum())
            self._n_buf_incomplete += learned
            self.n_incomplete_learned_ += learned
            self.n_incomplete_skipped_ += int(incomplete[pos:end].sum()) - learned
            self._n_buf += k
            self.n_learned_ += k
            pos = end
            if self._n_buf == m:
                self._apply(self._buf)

    def _frame(self, X) -> np.ndarray:
        """DataFrame -> (n, D) float array in schema order; NaN where missing or non-finite."""
        frame = X.reindex(columns=self._keys)
        try:
            A = np.array(frame.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
        except (TypeError, ValueError):  # non-numeric entries are missing values
            import pandas as pd
            A = np.array(frame.apply(pd.to_numeric, errors="coerce").to_numpy(
                dtype=np.float64, na_value=np.nan), dtype=np.float64)
        A[~np.isfinite(A)] = np.nan
        return A
