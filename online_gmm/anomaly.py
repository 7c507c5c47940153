"""Anomaly flagging on the negative log-likelihood, for the River learners and the estimator.

A record is flagged when its score ``-log p(x)`` exceeds a threshold: either fixed, or a running
quantile of the scores seen so far (``q=0.99`` flags about the top 1%), kept by River's
:class:`river.stats.Quantile` (the P² algorithm: five markers, bounded memory). Scoring happens before
learning (prequential): a record is scored by the model that has not seen it, compared with the
threshold of the scores before it, then the threshold and (by policy) the model learn it.

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

State
-----
:meth:`NLLThreshold.to_state` / :meth:`~NLLThreshold.from_state` give a JSON-able dict (no pickle):
River's ``Quantile`` keeps its markers in a compiled object, whose fields are written out explicitly.
"""

from __future__ import annotations

import math
import numbers
import struct
from typing import Any

import numpy as np
from river import base as river_base
from river import stats
from sklearn.base import BaseEstimator, OutlierMixin, clone
from sklearn.utils.validation import check_is_fitted

__all__ = ["NLLThreshold", "NLLFilter", "GMMOutlierDetector", "quantile_to_state",
           "quantile_from_state"]

_STATE_FORMAT = 1

# River 0.26's Rust P² quantile serialises (bincode) as: q, increments[5], desired positions[5],
# positions[5], heights[5] (21 little-endian float64), then the number of heights filled (u8) and
# whether the markers are initialised (u8).
_P2_LAYOUT = struct.Struct("<21dBB")
_P2_FIELDS = ("increments", "desired", "positions", "heights")


def quantile_to_state(quantile: stats.Quantile) -> dict[str, Any]:
    """The fields of a :class:`river.stats.Quantile` as a JSON-able dict.

    Parameters
    ----------
    quantile : river.stats.Quantile

    Returns
    -------
    dict
        ``q``, ``increments``, ``desired``, ``positions``, ``heights`` (lists of 5 floats),
        ``n_filled``, ``initialised``, ``updated``.
    """
    raw = quantile._quantile.__getstate__()
    if len(raw) != _P2_LAYOUT.size:
        raise ValueError(
            f"unexpected river.stats.Quantile state: expected {_P2_LAYOUT.size} bytes, got "
            f"{len(raw)} (the layout of this River version is not supported)")
    v = _P2_LAYOUT.unpack(raw)
    state: dict[str, Any] = {"q": v[0]}
    for i, name in enumerate(_P2_FIELDS):
        state[name] = list(v[1 + 5 * i: 6 + 5 * i])
    state["n_filled"] = v[21]
    state["initialised"] = bool(v[22])
    state["updated"] = bool(quantile._is_updated)
    return state


def quantile_from_state(state: dict[str, Any]) -> stats.Quantile:
    """Inverse of :func:`quantile_to_state`."""
    quantile = stats.Quantile(q=float(state["q"]))
    values = [float(state["q"])]
    for name in _P2_FIELDS:
        part = [float(v) for v in state[name]]
        if len(part) != 5:
            raise ValueError(f"quantile state field {name!r} must hold 5 numbers, got {len(part)}")
        values.extend(part)
    values += [int(state["n_filled"]), int(bool(state["initialised"]))]
    quantile._quantile.__setstate__(_P2_LAYOUT.pack(*values))
    quantile._is_updated = bool(state["updated"])
    return quantile


class NLLThreshold:
    """Threshold on the negative log-likelihood: fixed, or a running quantile of the scores.

    Parameters
    ----------
    q : float in (0, 1) or None, default=0.99
        Flag scores above this running quantile of the scores seen (0.99: about the top 1%).
    threshold : float or None, default=None
        A fixed threshold instead (then ``q`` must be None).
    min_samples : int, default=100
        With a quantile, nothing is flagged before this many scores were seen.

    Examples
    --------
    >>> import json
    >>> t = NLLThreshold(q=0.9, min_samples=10)
    >>> for s in range(100):
    ...     t.update(float(s))
    >>> round(t.threshold_)
    89
    >>> t.classify(95.0), t.classify(50.0)
    (True, False)
    >>> u = NLLThreshold.from_state(json.loads(json.dumps(t.to_state())))
    >>> u.threshold_ == t.threshold_
    True
    """

    def __init__(self, q: float | None = 0.99, threshold: float | None = None,
                 min_samples: int = 100) -> None:
        if (q is None) == (threshold is None):
            raise ValueError(f"give exactly one of q and threshold, got q={q!r}, threshold={threshold!r}")
        if q is not None and not (isinstance(q, numbers.Real) and 0.0 < q < 1.0):
            raise ValueError(f"q must be a number in (0, 1), got {q!r}")
        if threshold is not None and not (isinstance(threshold, numbers.Real)
                                          and not math.isnan(threshold)):
            raise ValueError(f"threshold must be a number, got {threshold!r}")
        if isinstance(min_samples, bool) or not isinstance(min_samples, numbers.Integral) or min_samples < 1:
            raise ValueError(f"min_samples must be an int >= 1, got {min_samples!r}")
        self.q = q
        self.threshold = threshold
        self.min_samples = int(min_samples)
        self.quantile = None if q is None else stats.Quantile(q=float(q))
        self.n_seen_ = 0

    @property
    def threshold_(self) -> float:
        """The current threshold (+inf while a quantile has fewer than ``min_samples`` scores)."""
        if self.quantile is None:
            return float(self.threshold)
        if self.n_seen_ < self.min_samples:
            return math.inf
        return float(self.quantile.get())

    def classify(self, score: float) -> bool:
        """True if ``score`` is anomalous (strictly above the threshold)."""
        return bool(score > self.threshold_)

    def update(self, score: float) -> None:
        """Add a score to the running quantile (scores that are not finite are ignored)."""
        self.n_seen_ += 1
        if self.quantile is not None and math.isfinite(score):
            self.quantile.update(float(score))

    def flag_many(self, scores: np.ndarray) -> np.ndarray:
        """Prequential flags for a batch: each score is classified, then added to the quantile.

        Parameters
        ----------
        scores : ndarray of shape (n_samples,)
            Negative log-likelihoods, in stream order.

        Returns
        -------
        flags : ndarray of shape (n_samples,), bool
        """
        flags = np.zeros(len(scores), dtype=bool)
        for i, s in enumerate(np.asarray(scores, dtype=np.float64).tolist()):
            flags[i] = self.classify(s)
            self.update(s)
        return flags

    def to_state(self) -> dict[str, Any]:
        """A JSON-able dict of the settings and the quantile's fields (no pickle)."""
        return {"format": _STATE_FORMAT, "q": self.q, "threshold": self.threshold,
                "min_samples": self.min_samples, "n_seen": self.n_seen_,
                "quantile": None if self.quantile is None else quantile_to_state(self.quantile)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "NLLThreshold":
        """Inverse of :meth:`to_state`."""
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"unsupported threshold state format {state.get('format')!r}, "
                             f"expected {_STATE_FORMAT}")
        new = cls(q=state["q"], threshold=state["threshold"], min_samples=state["min_samples"])
        new.n_seen_ = int(state["n_seen"])
        if state["quantile"] is not None:
            new.quantile = quantile_from_state(state["quantile"])
        return new

    def __repr__(self) -> str:
        kind = f"q={self.q!r}" if self.quantile is not None else f"threshold={self.threshold!r}"
        return f"NLLThreshold({kind}, threshold_={self.threshold_:.6g}, n_seen_={self.n_seen_})"


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

    def learn_one(self, x: dict, **kwargs: Any) -> None:
        score = self.anomaly_detector.score_one(x)
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

    def fit(self, X, y=None, sample_weight=None) -> "GMMOutlierDetector":
        """Fit the mixture by batch EM and set ``offset_`` from the training scores."""
        self._check_params()
        self.estimator_ = self._new_estimator().fit(X, sample_weight=sample_weight)
        scores = self.estimator_.score_samples(X)
        self.offset_ = float(np.percentile(scores, 100.0 * self.contamination))
        self.threshold_ = NLLThreshold(q=1.0 - self.contamination, min_samples=1)
        for s in -scores:
            self.threshold_.update(float(s))
        return self

    def partial_fit(self, X, y=None) -> "GMMOutlierDetector":
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
            for s in -scores:
                self.threshold_.update(float(s))
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
