"""The prequential steps of :class:`~online_gmm._online.OnlineEM`: score a batch under the current
parameters, then learn it (:meth:`_PrequentialMixin.score_then_learn`, and
:meth:`_PrequentialMixin.score_learn`, the pipeline's one-pass form); the mixin
:class:`_PrequentialMixin`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from online_gmm._em import learned_rows
from online_gmm._guards import _refusal, screen_extreme
from online_gmm._suffstats import SufficientStatistics


class _PrequentialMixin:
    """Score, then learn (for :class:`~online_gmm._online.OnlineEM`)."""

    def score_then_learn(self, X: np.ndarray, learn: Callable[[np.ndarray], np.ndarray] | None = None,
                         *, ids: np.ndarray | None = None, report_refused: bool = False):
        """Prequential step: score a batch under the current parameters, then learn it, one E-step.

        Records that would make the update ill-defined, and values beyond :data:`MAX_ABS`, are kept
        out of the model (see the docstring of :mod:`online_gmm._online`); they are scored like any
        other record.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features), finite
        learn : callable(log_p) -> bool ndarray of shape (n_samples,), optional
            Given the scores, which rows to learn (all when omitted); e.g. skip flagged anomalies.
        ids : ndarray of int64 of shape (n_samples,), optional
            Names of the rows in the refusals (default: their indices in ``X``). Rows buffered by the
            warm-up keep their ids (also through :meth:`to_arrays`), so the refusals at the end of the
            warm-up may name rows of earlier calls.
        report_refused : bool, default=False
            Return ``(out, refused)``; implied by ``ids``. Without either, a batch with a record to
            keep out raises :class:`RefusedRecordsError` (a ValueError naming them) and the state is
            unchanged.

        Returns
        -------
        out : (log_resp, log_p) or None
            Computed before learning, of shapes (n_samples, K) and (n_samples,); ``None`` while
            warming up (the rows are buffered and learned at the end of the warm-up).
        refused : list of (id, reason)
            Only with ``ids`` or ``report_refused``: the records kept out of the model, in id order
            per cause (too large first, then those found by the search).
        """
        report = report_refused or ids is not None
        mode = "skip" if report else "raise"
        n = X.shape[0]
        ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        if ids.shape != (n,):
            raise ValueError(f"ids must have shape ({n},), got {ids.shape}")
        if not self.initialised:
            refused = self.update(X, ids=ids, on_refused=mode)
            return (None, refused) if report else None
        log_resp, log_p = self.scorer().log_resp(X)
        mask = np.ones(n, dtype=bool) if learn is None else np.asarray(learn(log_p), dtype=bool)
        keep, refused = screen_extreme(X, ids)
        if refused:                      # only the rows that were to be learned are refused
            refused = [r for r, i in zip(refused, np.flatnonzero(~keep).tolist()) if mask[i]]
            mask &= keep
            if refused and not report:
                raise _refusal(refused)
        if mask.all():
            Xl, lr, lp, il = X, log_resp, log_p, ids
        else:
            Xl, lr, lp, il = X[mask], log_resp[mask], log_p[mask], ids[mask]
        if Xl.shape[0]:
            stats = SufficientStatistics.from_resp(Xl, np.exp(lr), covariance_type=self.covariance_type)
            try:
                self.step(Xl, batch=(stats, float(lp.sum())))
            except ValueError as err:
                refused = refused + self._guarded_step(Xl, None, il, lr, lp, err, mode)
        out = (log_resp, log_p)
        return (out, refused) if report else out

    def score_learn(self, X: np.ndarray, *, skip_above: float | None = None,
                    ids: np.ndarray | None = None) -> tuple[tuple[np.ndarray, np.ndarray] | None, list]:
        """The pipeline's prequential step in one pass: score a batch, then learn it.

        What :meth:`score_then_learn` does with ``learn=lambda log_p: ~((-log_p > skip_above) |
        (-log_p == inf))``, but the scores and the statistics come from one read of the batch
        (:meth:`Scorer.score_statistics`), and responsibilities are returned instead of their logs.
        A batch with a value beyond :data:`MAX_ABS`, the warm-up, and an update found ill-defined
        take :meth:`score_then_learn`'s path (same records learned, same refusals).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features), finite
        skip_above : float, optional
            Rows whose score ``-log p(x)`` is above it, or ``+inf``, are scored but not learned;
            None: every row is learned.
        ids : ndarray of int64 of shape (n_samples,), optional
            Names of the rows in the refusals (default: their indices in ``X``).

        Returns
        -------
        out : (resp, log_p) or None
            Of shapes (n_samples, K) and (n_samples,), under the parameters before the batch was
            learned; None while warming up.
        refused : list of (id, reason)
        """
        n = X.shape[0]
        ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        if not self.initialised or screen_extreme(X, ids)[1]:
            def learn(log_p: np.ndarray) -> np.ndarray:
                if skip_above is None:
                    return np.ones(log_p.shape[0], dtype=bool)
                return learned_rows(log_p, skip_above)
            out, refused = self.score_then_learn(X, learn, ids=ids)
            return (None if out is None else (np.exp(out[0]), out[1])), refused
        resp, log_p, learned, stats, ll = self.scorer().score_statistics(X, skip_above)
        Xl = X if learned is None else X[learned]
        refused: list = []
        if Xl.shape[0]:
            try:
                self.step(Xl, batch=(stats, ll))
            except ValueError as err:         # rare: find the culprits on the logs of the scores
                il = ids if learned is None else ids[learned]
                lr, lp = self.scorer().log_resp(Xl)
                refused = self._guarded_step(Xl, None, il, lr, lp, err, "skip")
        return (resp, log_p), refused
