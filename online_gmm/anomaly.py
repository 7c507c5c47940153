"""Anomaly detectors on the negative log-likelihood: River's ``NLLFilter`` and scikit-learn's
``GMMOutlierDetector``.

Both flag a record when its score ``-log p(x)`` exceeds a fixed threshold or a running quantile of the
scores seen so far, kept by :class:`~online_gmm.threshold.NLLThreshold` (re-exported here; see
:mod:`online_gmm.threshold` for what each record is compared with and how the state is saved).

Protect or adapt
----------------
``protect=True`` keeps flagged records out of the model, so a burst of anomalies does not teach the
model that they are normal. The price is staleness: after a genuine change of the stream every new
record is flagged and, with a *fixed* threshold, never learned, so the model never adapts (River
issue #948: a protected detector stuck on the level it saw before a jump). A running-quantile
threshold limits the damage: it follows the scores, so once the new regime makes up more than
``1 - q`` of the history the threshold rises above it and the new records are learned again (slowly
on a long history). ``protect=False`` (the default) learns everything and adapts at the speed of the
model's step-size schedule (set ``halflife`` on the model for drifting streams), at the cost of
absorbing sustained anomalies.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
from river import base as river_base
from sklearn.base import BaseEstimator, OutlierMixin, clone
from sklearn.utils.validation import check_is_fitted

from online_gmm.river import negative_log_likelihood
from online_gmm.threshold import NLLThreshold

__all__ = ["GMMOutlierDetector", "NLLFilter", "NLLThreshold"]


class NLLFilter(river_base.AnomalyFilter):
    """Flags records whose anomaly score exceeds a fixed or running-quantile threshold (River).

    Wraps any River anomaly detector whose ``score_one`` is higher for anomalies, typically
    :class:`online_gmm.river.GMMAnomalyDetector` (negative log-likelihood), possibly in a pipeline
    after a scaler. ``learn_one`` scores the record first, compares it with the threshold of the
    scores before it, updates the threshold, then lets the detector learn it unless it was flagged
    and ``protect_anomaly_detector`` is set (see the module docstring for the trade-off).

    Parameters
    ----------
    anomaly_detector
        The detector (or pipeline ending in one).
    q
        Running quantile of the scores above which a record is flagged; None with ``threshold``.
    threshold
        A fixed threshold instead of ``q``.
    protect_anomaly_detector
        Keep flagged records out of the detector.
    min_samples
        Scores seen before a quantile threshold flags anything.

    Attributes
    ----------
    threshold_ : NLLThreshold
    n_flagged_ : int
        Records flagged by ``learn_one``.

    Examples
    --------
    >>> import random
    >>> from river import compose, preprocessing
    >>> from online_gmm.anomaly import NLLFilter
    >>> from online_gmm.river import GMMAnomalyDetector
    >>> rng = random.Random(0)
    >>> detector = NLLFilter(
    ...     compose.Pipeline(preprocessing.StandardScaler(),
    ...                      GMMAnomalyDetector(n_components=1, warm_up=100, seed=0)),
    ...     q=0.99)
    >>> for i in range(2000):
    ...     x = {"a": rng.gauss(0, 1), "b": rng.gauss(0, 1)}
    ...     detector.learn_one(x)
    >>> 5 <= detector.n_flagged_ <= 40
    True
    >>> detector.classify(detector.score_one({"a": 8.0, "b": -8.0}))
    True
    """

    def __init__(self, anomaly_detector, q: float | None = 0.99, threshold: float | None = None,
                 protect_anomaly_detector: bool = False, min_samples: int = 100) -> None:
        super().__init__(anomaly_detector=anomaly_detector,
                         protect_anomaly_detector=protect_anomaly_detector)
        self.q = q
        self.threshold = threshold
        self.min_samples = min_samples
        self.threshold_ = NLLThreshold(q=q, threshold=threshold, min_samples=min_samples)
        self.n_flagged_ = 0

    def classify(self, score: float) -> bool:
        """True if ``score`` is above the current threshold."""
        return self.threshold_.classify(score)

    def score_one(self, x: dict) -> float:
        """The score the threshold applies to: -log p(x) for a GMMAnomalyDetector (or a pipeline
        ending in one; its own ``score_one`` is calibrated to [0, 1]), else the detector's score."""
        return negative_log_likelihood(self.anomaly_detector, x)

    def learn_one(self, x: dict, **kwargs: Any) -> None:
        score = self.score_one(x)
        flagged = self.threshold_.classify(score)
        self.threshold_.update(score)
        self.n_flagged_ += flagged
        if not (flagged and self.protect_anomaly_detector):
            self.anomaly_detector.learn_one(x, **kwargs)

    def to_state(self) -> dict[str, Any]:
        """JSON-able threshold state (the detector is checkpointed separately)."""
        return {"threshold": self.threshold_.to_state(), "n_flagged": self.n_flagged_}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore the threshold state written by :meth:`to_state`."""
        self.threshold_ = NLLThreshold.from_state(state["threshold"])
        self.n_flagged_ = int(state["n_flagged"])

    @classmethod
    def _unit_test_params(cls):
        from online_gmm.river import GMMAnomalyDetector
        yield {"anomaly_detector": GMMAnomalyDetector(n_components=2, warm_up=60, update_every=8,
                                                      seed=0), "q": 0.95, "min_samples": 20}


class GMMOutlierDetector(OutlierMixin, BaseEstimator):
    """scikit-learn outlier detector on a Gaussian mixture's log-likelihood.

    Conventions of scikit-learn's outlier detectors: ``score_samples`` is the log-likelihood (the
    lower, the more abnormal), ``decision_function = score_samples - offset_`` is negative for
    outliers, ``predict`` returns +1 for inliers and -1 for outliers. ``fit`` sets ``offset_`` to the
    ``contamination`` quantile of the training scores; ``partial_fit`` scores each batch before
    learning it and moves ``offset_`` with a running quantile (:class:`NLLThreshold`).

    Parameters
    ----------
    estimator : OnlineGaussianMixture or None, default=None
        The mixture (cloned); None is ``OnlineGaussianMixture()``.
    contamination : float in (0, 0.5], default=0.01
        Expected share of outliers.
    protect : bool, default=False
        In ``partial_fit``, keep rows flagged as outliers out of the mixture.

    Attributes
    ----------
    estimator_ : OnlineGaussianMixture
    offset_ : float
        Log-likelihood below which a sample is an outlier (-inf until enough scores were seen).
    threshold_ : NLLThreshold
        The running quantile of -log p behind ``offset_`` in ``partial_fit``.

    Examples
    --------
    >>> import numpy as np
    >>> from online_gmm import OnlineGaussianMixture
    >>> from online_gmm.anomaly import GMMOutlierDetector
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(1000, 2))
    >>> det = GMMOutlierDetector(OnlineGaussianMixture(n_components=1), contamination=0.05).fit(X)
    >>> float(np.mean(det.predict(X) == -1))
    0.05
    >>> det.predict([[0.0, 0.0], [6.0, 6.0]])
    array([ 1, -1])
    """

    def __init__(self, estimator=None, *, contamination: float = 0.01, protect: bool = False) -> None:
        self.estimator = estimator
        self.contamination = contamination
        self.protect = protect

    def _check_params(self) -> None:
        c = self.contamination
        if isinstance(c, bool) or not isinstance(c, numbers.Real) or not (0.0 < c <= 0.5):
            raise ValueError(f"contamination must be a float in (0, 0.5], got {c!r}")

    def _new_estimator(self):
        if self.estimator is None:
            from online_gmm.estimator import OnlineGaussianMixture
            return OnlineGaussianMixture()
        return clone(self.estimator)

    def fit(self, X, y=None, sample_weight=None) -> GMMOutlierDetector:
        """Fit the mixture by batch EM and set ``offset_`` from the training scores."""
        self._check_params()
        self.estimator_ = self._new_estimator().fit(X, sample_weight=sample_weight)
        scores = self.estimator_.score_samples(X)
        self.offset_ = float(np.percentile(scores, 100.0 * self.contamination))
        self.threshold_ = NLLThreshold(q=1.0 - self.contamination, min_samples=1)
        self.threshold_.update_many(-scores)
        return self

    def partial_fit(self, X, y=None) -> GMMOutlierDetector:
        """Score the batch (before learning it), update the threshold, then learn it by policy."""
        if not hasattr(self, "estimator_"):
            self._check_params()
            self.estimator_ = self._new_estimator()
            self.threshold_ = NLLThreshold(q=1.0 - self.contamination, min_samples=100)
            self.offset_ = -math.inf
        X = np.asarray(X, dtype=np.float64)
        keep = None
        if hasattr(self.estimator_, "_params_"):
            scores = self.estimator_.score_samples(X)
            flagged = scores < self.offset_
            self.threshold_.update_many(-scores)
            self.offset_ = -self.threshold_.threshold_
            if self.protect:
                keep = ~flagged
        if keep is None:
            self.estimator_.partial_fit(X)
        elif keep.any():
            self.estimator_.partial_fit(X[keep])
        return self

    def score_samples(self, X) -> np.ndarray:
        """Log-likelihood of each sample, shape (n_samples,); lower is more abnormal."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.score_samples(X)

    def decision_function(self, X) -> np.ndarray:
        """``score_samples(X) - offset_``, shape (n_samples,); negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """+1 for inliers, -1 for outliers, shape (n_samples,)."""
        return np.where(self.decision_function(X) < 0, -1, 1)

    def to_state(self) -> dict[str, Any]:
        """JSON-able flagging state: ``offset_`` and the running quantile (the mixture is
        checkpointed through its own statistics)."""
        check_is_fitted(self, "offset_")
        return {"offset": self.offset_, "threshold": self.threshold_.to_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_state` wrote (``estimator_`` must be restored separately)."""
        self.offset_ = float(state["offset"])
        self.threshold_ = NLLThreshold.from_state(state["threshold"])
