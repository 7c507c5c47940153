"""River learners over the online EM core: :class:`OnlineGMM` (a clusterer) and
:class:`GMMAnomalyDetector` (an anomaly detector).

Both hold the same :class:`~online_gmm._online.OnlineEM` state as
:class:`~online_gmm.estimator.OnlineGaussianMixture` and evaluate it with the same kernels; nothing
here is a second E-step or M-step.

Features as dicts
-----------------
The feature set and its order (sorted when the names are mutually comparable, otherwise the order of
first appearance) are fixed by the first record learned: its keys with finite numeric values.
Afterwards:

* a feature of the schema that is absent, ``None``, NaN or infinite in a record is *missing*: the
  record is scored and assigned with the mixture's exact marginal over its observed features
  (sub-vector of each mean, sub-block of each covariance). A record with no observed feature has
  log-likelihood 0 (score 0.0) and the mixing weights as responsibilities. Scores of records with
  different observed features are not on the same scale (fewer dimensions, fewer nats);
* a record with a missing feature is learned, after the warm-up fit, through its conditional
  expectations (see "Learning from incomplete records" below); during the warm-up, with
  ``learn_incomplete=False``, or when no feature of the schema is observed, it is skipped.
  ``n_incomplete_`` counts the records with a missing feature, ``n_incomplete_learned_`` and
  ``n_incomplete_skipped_`` split them (their sum is ``n_incomplete_``);
* a feature outside the schema (one never seen in the first record) is ignored, for learning and
  for prediction alike;
* a record the model cannot learn, one with a value beyond 1e150 in magnitude or one that would
  make an update (or the warm-up fit) ill-defined, is skipped when its batch is applied and counted
  in ``n_refused_`` (it stays counted in ``n_learned_``, which sets the update boundaries):
  ``learn_one`` never raises for a finite record. Scores decrease with the distance up to the
  largest floats (``nll_one`` is ``inf`` where the density underflows, never NaN; the detector's
  calibrated ``score_one`` is then 1.0), and such a record's responsibilities go to the component nearest it in Mahalanobis distance.

Learning in batches
-------------------
``learn_one`` copies the record into a preallocated ``(update_every, n_features)`` buffer. When the
buffer is full, one stepwise EM update (:meth:`OnlineEM.step <online_gmm._online.OnlineEM.step>`:
E-step of the buffered rows under the current parameters, blend, M-step) is applied, so the M-step
is paid once per ``update_every`` records. ``learn_many`` fills the same buffer at the same
boundaries, so a DataFrame learned at once and the same records learned one by one give the same
model (incomplete records included). The first ``warm_up`` complete records (rounded up to a
multiple of ``update_every``) are fitted by batch EM with ``warm_up_n_init`` starts.

**When learning becomes visible:** predictions and scores use the parameters of the last update.
A record learned by ``learn_one`` affects them once the number of records learned (``n_learned_``:
complete ones and incomplete ones learned) reaches the next multiple of ``update_every`` (and the
warm-up is over); :meth:`flush` applies a partial buffer at once.

The learner holds the warm-up records itself and hands them to the core in one batch when the
warm-up is complete.

Learning from incomplete records
--------------------------------
After the warm-up fit, a record with some features missing goes into the same buffer as complete
records (NaN where missing) and is learned in the same update, with the exact E-step for data
missing at random (Ghahramani & Jordan, 1994, "Supervised learning from incomplete data via an EM
approach"; :func:`~online_gmm._marginal.incomplete_statistics`): its responsibilities come from the
marginal over its observed features, its missing block is replaced, per component, by the
conditional mean ``mu_m + S_mo S_oo^-1 (x_o - mu_o)``, and the conditional covariance
``S_mm - S_mo S_oo^-1 S_om`` is added to the component's scatter (for 'diag' and 'spherical' the
conditional mean is ``mu_m`` and the covariance the component's variances there). These expected
statistics are merged (Chan) with the complete rows' statistics under the same parameters and
applied in ONE stepwise update, in which the incomplete records count in the schedule's clock
like complete ones; only complete rows are candidates for re-seeding a collapsed component. With
``standardize``, an incomplete record is standardised on its observed features. Nothing is
imputed for prediction: the learned statistics are expectations, not values.

During the warm-up, incomplete records are skipped and counted (``n_incomplete_skipped_``): the
warm-up batch EM and the frozen ``standardize`` scale are computed from complete rows. A record with
no observed feature of the schema has nothing to learn from and is skipped too.
``learn_incomplete=False`` restores the former policy: every incomplete record is skipped (counted).

Before the warm-up is over, ``predict_one`` returns cluster 0, ``predict_proba_one`` the uniform
distribution over the components and ``score_one`` 0.0 (:class:`GMMAnomalyDetector`: the score of a
provisional diagonal Gaussian of the records learned so far).

Standardising inside the learner
--------------------------------
With ``standardize=True`` the mixture is fitted to ``z = (x - shift_) / scale_``, where ``shift_`` and
``scale_`` are the mean and standard deviation of each feature over the warm-up records, frozen when
the warm-up fit is made (a feature that was constant during the warm-up, which has no scale of its
own, gets the mean standard deviation of the other features; 1.0 if every feature was constant).
``reg_covar`` is then relative: a floor of ``reg_covar`` times each feature's warm-up variance.
Scores stay the negative log-density of the record *in its own units*:
``-log p(x) = -log p_z(z) + sum_j log scale_j`` (over the observed features), so scores before and
after the warm-up fit are on one scale, and rescaling a feature shifts every score by the same
constant. Unlike a running ``preprocessing.StandardScaler`` in front of the learner, the scale does
not move under the model: the warm-up fit and every later update see the same transform.
``params_`` are in standardised units.
"""

from __future__ import annotations

import numpy as np
from river import base

from online_gmm._em import Scorer
from online_gmm._marginal import MarginalCache, RowScorer
from online_gmm._river_base import _DictGMM
from online_gmm._river_calibration import (
    _N_CALIBRATION,
    _N_PATTERNS,
    _cdf_many,
    _cdf_one,
    _mixture_sample,
)
from online_gmm._river_inference import _View

__all__ = ["OnlineGMM", "GMMAnomalyDetector", "negative_log_likelihood"]


def negative_log_likelihood(model, x: dict) -> float:
    """-log p(x) of ``x`` under the :class:`GMMAnomalyDetector` at the end of ``model``.

    For thresholds in nats (:class:`online_gmm.anomaly.NLLFilter`). ``model`` is a detector or a
    ``compose.Pipeline`` ending in one (``x`` goes through the pipeline's transformers, as in
    ``Pipeline.score_one``); for any other detector, its ``score_one``.

    Parameters
    ----------
    model : river AnomalyDetector or compose.Pipeline
    x : dict

    Returns
    -------
    float

    Examples
    --------
    >>> from river import compose, preprocessing
    >>> from online_gmm.river import GMMAnomalyDetector, negative_log_likelihood
    >>> pipe = compose.Pipeline(preprocessing.StandardScaler(), GMMAnomalyDetector(warm_up=10))
    >>> for i in range(40):
    ...     pipe.learn_one({"a": float(i % 7)})
    >>> negative_log_likelihood(pipe, {"a": 3.0}) == pipe["GMMAnomalyDetector"].nll_one(
    ...     pipe["StandardScaler"].transform_one({"a": 3.0}))
    True
    """
    steps = getattr(model, "steps", None)
    if steps is not None:
        *head, model = list(steps.values())
        for step in head:
            x = step.transform_one(x)
    nll = getattr(model, "nll_one", None)
    return nll(x) if nll is not None else model.score_one(x)


_PARAMS_DOC = """
    Parameters
    ----------
    n_components
        Number of mixture components.
    covariance_type
        'full', 'tied', 'diag' or 'spherical'.
    update_every
        Records buffered between stepwise EM updates (the M-step is paid once per batch).
    warm_up
        Complete records fitted by batch EM before the first stepwise update; None is
        ``max(100, 10 * n_components * n_features)``.
    reg_covar
        Added to the diagonal of every covariance.
    alpha
        Decay exponent of the step size, in [0.5, 1] (1 with ``t0=0``: the exact running average).
        1.0, as :class:`~online_gmm.estimator.OnlineGaussianMixture` (the best one-pass held-out
        likelihood on stationary streams); for drifting streams set ``halflife`` or a smaller value.
    t0
        Offset of the schedule, in units of ``step_unit`` records.
    step_unit
        Records per schedule step.
    halflife
        If set, forget at a constant rate: a record's weight halves every ``halflife`` records.
    init_params
        Initialisation of the warm-up fit: 'kmeans', 'k-means++', 'random' or 'random_from_data'.
    warm_up_n_init
        Starts of the warm-up batch EM (the best is kept).
    max_iter
        EM iterations per warm-up start.
    tol
        Convergence tolerance of the warm-up EM.
    min_weight
        Components whose weight falls below it are re-seeded (default ``1e-3 / n_components``).
    standardize
        Fit the mixture to the features standardised by their warm-up mean and standard deviation
        (frozen at the warm-up fit; ``reg_covar`` becomes relative to each feature's variance);
        scores stay densities of the records in their own units. See :mod:`online_gmm.river`.
    seed
        Random seed (warm-up initialisation, re-seeding).
    learn_incomplete
        After the warm-up fit, learn records with missing features through their conditional
        expectations under the current mixture (exact EM for data missing at random; see
        :mod:`online_gmm.river`). False skips them (they are only counted).

    Attributes
    ----------
    features_ : list or None
        The schema (feature names in model order).
    params_ : GaussianParams or None
        The current parameters.
    n_learned_ : int
        Records learned, buffered ones included: complete records plus the incomplete records
        learned (``n_incomplete_learned_``).
    n_incomplete_ : int
        Records with a feature of the schema missing, None, NaN or infinite, learned or not:
        ``n_incomplete_ == n_incomplete_learned_ + n_incomplete_skipped_``.
    n_incomplete_learned_ : int
        Incomplete records learned through their conditional expectations (after the warm-up
        fit, with ``learn_incomplete=True`` and at least one feature of the schema observed).
    n_incomplete_skipped_ : int
        Incomplete records not learned: during the warm-up, with ``learn_incomplete=False``, or
        with no feature of the schema observed.
    n_pending_ : int
        Records buffered, not yet visible in predictions.
    shift_, scale_ : ndarray of shape (n_features,) or None
        With ``standardize``: the frozen warm-up mean and scale of each feature.
"""


class OnlineGMM(_DictGMM, base.Clusterer):
    __doc__ = """Gaussian mixture clustering of a stream of dicts by stepwise (online) EM.

    ``learn_one`` buffers records and applies one stepwise EM update every ``update_every`` records;
    ``predict_one`` is the most probable component, ``predict_proba_one`` the posterior, and
    ``score_one`` the negative log-likelihood (higher is more anomalous). Missing features are
    marginalised exactly in predictions, and records with missing features are learned through
    their conditional expectations (EM for incomplete data); see :mod:`online_gmm.river` for the
    feature policy and for when a learned record becomes visible.
    """ + _PARAMS_DOC + """
    Examples
    --------
    >>> import random
    >>> from online_gmm.river import OnlineGMM
    >>> rng = random.Random(0)
    >>> stream = [{"a": rng.gauss(c, 1.0), "b": rng.gauss(c, 1.0)}
    ...           for _ in range(300) for c in (-6.0, 6.0)]
    >>> model = OnlineGMM(n_components=2, warm_up=100, update_every=16, seed=0)
    >>> model.predict_one({"a": 0.0, "b": 0.0})        # before learning: cluster 0
    0
    >>> for x in stream:
    ...     model.learn_one(x)
    >>> model.predict_one({"a": -6.0, "b": -6.0}) != model.predict_one({"a": 6.0, "b": 6.0})
    True
    >>> proba = model.predict_proba_one({"a": 6.0})     # "b" missing: marginalised
    >>> round(max(proba.values()), 3)
    1.0
    >>> model.learn_one({"a": -6.5})                    # learned through E[b | a] (and its variance)
    >>> model.n_incomplete_, model.n_incomplete_learned_
    (1, 1)
    >>> model.score_one({"a": 6.0, "b": 6.0}) < model.score_one({"a": 0.0, "b": 0.0})
    True
    """


class GMMAnomalyDetector(_DictGMM, base.AnomalyDetector):
    _provisional_scores = True

    __doc__ = """Anomaly detector on an online Gaussian mixture (the model of :class:`OnlineGMM`),
    with scores on River's scale: in [0, 1], higher is more anomalous.

    ``learn_one`` updates the mixture. ``score_one(x)`` is the probability, under the current
    model, that a random record is at least as likely as ``x``: ``P(log p(Y) >= log p(x))`` for
    ``Y`` drawn from the model, i.e. the model's own CDF of ``-log p`` at ``-log p(x)``. About 1% of
    the records the model describes well score above 0.99, whatever the dimension or the units,
    so River's ``metrics.ROCAUC`` (thresholds spread over [0, 1]), ``anomaly.QuantileFilter`` and
    ``anomaly.ThresholdFilter`` apply as they are. ``nll_one(x)`` is ``-log p(x)`` in nats
    (:class:`online_gmm.anomaly.NLLFilter` thresholds it; see :func:`negative_log_likelihood`).

    **Calibration.** After each update, the NLLs of ``M = 1000`` records drawn from the mixture
    (under the core's :class:`~online_gmm._em.Scorer`) are sorted, ``q_1 <= ... <= q_M``; with
    ``s = -log p(x)`` and ``h = 1 / (M + 1)``:

    * ``q_1 < s < q_M``: linear interpolation between the plotting positions ``i h`` at ``q_i``;
    * ``s <= q_1`` (more likely than every draw): ``h exp(s - q_1)``;
    * ``s >= q_M`` (beyond every draw): ``1 - h / (1 + s - q_M)``. The true tail of ``-log p``
      decays about as ``exp(-(s - q_M))`` (a chi-square's); its hyperbolic stand-in matches it at
      ``q_M`` to first order and keeps far records apart: scores stay distinct, in the order of
      ``-log p``, for excesses up to about 1e13 nats (where ``exp`` would tie them all at 1.0 past
      about 37 nats). ``-log p = inf`` scores 1.0.

    So for a fixed model the score is a continuous, strictly increasing function of ``-log p(x)``.
    The draws are fixed (a uniform for the systematic choice of components and ``M`` standard
    normal rows, from a generator seeded by ``seed``): the sample is a function of the parameters,
    so the same stream gives the same scores. It is redrawn at each update after which 256 records
    or more were learned since the last redraw (every second update with ``update_every=128``;
    scores use the current parameters, their calibration those of the last redraw), and evaluated
    at the first score that needs it: ``M`` rows through the E-step kernel, about 1.2 ms with 8
    full components in 16 dimensions, about 5 µs per record learned.
    A record with missing features is calibrated against the marginal of the same draws over its
    observed features; with ``standardize``, in the model's units (the Jacobian cancels).

    Until the warm-up fit, records are scored by a provisional model: one diagonal Gaussian of the
    complete records learned so far (exact running mean and variances plus ``reg_covar``; 0.0
    before two records were learned), so a long warm-up does not leave the start of a stream
    unscored. It is calibrated exactly by the same rule without sampling (``-log p`` minus its value
    at the mean is half a chi-square whatever the parameters: the draws' half squared norms).
    Score before learning (prequential). When the features' scales differ, set
    ``standardize=True``: each feature is standardised by its warm-up mean and standard deviation,
    frozen at the warm-up fit, so ``reg_covar`` becomes relative (see :mod:`online_gmm.river`);
    otherwise ``reg_covar`` is an absolute floor on the variances.
    """ + _PARAMS_DOC + """
    Examples
    --------
    A prequential loop (score, then learn) with River's ``metrics.ROCAUC``; every 50th record is
    shifted by 6 standard deviations:

    >>> import random
    >>> from river import metrics
    >>> from online_gmm.river import GMMAnomalyDetector
    >>> rng = random.Random(1)
    >>> model = GMMAnomalyDetector(n_components=1, warm_up=100, standardize=True, seed=0)
    >>> auc = metrics.ROCAUC()
    >>> for i in range(1000):
    ...     is_anomaly = i % 50 == 49
    ...     x = {"u": rng.gauss(0.0, 1.0) + 6.0 * is_anomaly, "v": rng.gauss(10.0, 2.0)}
    ...     auc.update(is_anomaly, model.score_one(x))
    ...     model.learn_one(x)
    >>> auc                                  # River's default: 10 thresholds over [0, 1]
    ROCAUC: 95.77%
    >>> 0.99 < model.score_one({"u": 8.0, "v": 10.0}) < 1.0
    True
    >>> model.nll_one({"u": 8.0, "v": 10.0}) > model.nll_one({"u": 0.0, "v": 10.0})
    True
    """


    # ------------------------------------------------------------------ calibrated scores
    def score_one(self, x: dict) -> float:
        """Anomaly score of ``x`` in [0, 1] (higher is more anomalous): the probability, under the
        current model, that a random record is at least as likely as ``x`` (see the class
        docstring). 0.0 for a record with no observed feature and before two records were
        learned. Does not change the model; -log p(x) itself is :meth:`nll_one`.
        """
        ll, _, view, observed = self._log_likelihood_parts(x)
        if view is None:
            return 0.0
        offset, q = self._calibration(view, observed)
        return _cdf_one(q, -ll - offset)

    def score_many(self, X):
        """:meth:`score_one` of each row of a DataFrame (a pandas Series of float in [0, 1])."""
        import pandas as pd
        view = self._fitted
        if view is None:
            if self._provisional() is None:
                return pd.Series(np.zeros(len(X)), index=X.index)
            return pd.Series([self.score_one(x) for x in X.to_dict(orient="records")], index=X.index)
        _, log_p, _, _ = self._wlp_many(X)
        obs = ~np.isnan(self._frame(X))
        out = np.zeros(len(X))
        patterns, inverse = np.unique(obs, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        for j, pat in enumerate(patterns):
            if not pat.any():
                continue                              # nothing observed: 0.0
            rows = inverse == j
            offset, q = self._calibration(view, None if pat.all() else pat)
            out[rows] = _cdf_many(np.asarray(q), -log_p[rows] - offset)
        return pd.Series(out, index=X.index)

    def _draws(self) -> tuple[float, np.ndarray]:
        """The fixed draws of the calibration: a uniform offset and ``_N_CALIBRATION`` standard
        normal rows, from a generator seeded by ``seed`` (kept with the schema); derived state."""
        if self._cal_draws is None:
            rng = np.random.default_rng(self._cal_seed)
            u0 = float(rng.random())
            self._cal_draws = (u0, rng.standard_normal((_N_CALIBRATION, len(self._keys))))
        return self._cal_draws

    def _calibration(self, view: _View, observed: np.ndarray | None) -> tuple[float, list[float]]:
        """(offset, sorted sample NLLs) of the parameter set of ``view`` over the features
        ``observed`` (None: all), in the model's units: a record's score is
        ``_cdf_one(q, nll_z - offset)``. Built at the first score that needs it (``_N_PATTERNS``
        patterns kept).

        * Mixture: the NLLs, under the core's :class:`~online_gmm._em.Scorer` (of the marginal for
          an incomplete pattern), of a sample drawn with the fixed draws (:func:`_mixture_sample`;
          the marginal of a sample is a sample of the marginal) from ``_cal_params``: the
          parameters of the last update at which ``_CAL_EVERY`` records or more had been learned
          since the previous redraw (the first fit included), so the redraws fall at the same
          updates whoever scores what.
        * Provisional diagonal Gaussian: NLL - NLL(mean) is half the squared norm of a standard
          normal vector whatever the mean and variances, so the sample is the draws' half squared
          norms (computed once per pattern) and the offset the NLL at the mean: nothing is
          sampled as the provisional model moves with each record.
        """
        key = b"" if observed is None else observed.tobytes()
        u0, E = self._draws()
        if view.provisional:
            cal = view.cal.get(key)
            if cal is not None:
                return cal
            evaluator = view.row if observed is None else view.marginals.get(observed)
            base = self._cal_base.get(key)
            if base is None:
                Eo = E if observed is None else E[:, observed]
                base = np.sort(0.5 * np.einsum("ij,ij->i", Eo, Eo)).tolist()
                if len(self._cal_base) >= _N_PATTERNS:
                    self._cal_base.pop(next(iter(self._cal_base)))
                self._cal_base[key] = base
            mean = evaluator.params.means[0]
            cal = (-RowScorer.log_sum(evaluator.weighted_log_prob(mean)), base)
            if len(view.cal) >= _N_PATTERNS:
                view.cal.pop(next(iter(view.cal)))
            view.cal[key] = cal
            return cal
        store = self._cal
        if store is None:
            params = self._cal_params
            store = self._cal = {"samples": _mixture_sample(params, u0, E),
                                 "marginals": MarginalCache(params), "q": {}}
        cal = store["q"].get(key)
        if cal is None:
            Z = store["samples"]
            if observed is not None:
                Z = np.ascontiguousarray(Z[:, observed])
                params = store["marginals"].get(observed).params
            else:
                params = self._cal_params
            with np.errstate(over="ignore", under="ignore"):
                nll = -Scorer(params).score_samples(Z)
            cal = (0.0, np.sort(nll).tolist())
            if len(store["q"]) >= _N_PATTERNS:
                store["q"].pop(next(iter(store["q"])))
            store["q"][key] = cal
        return cal
