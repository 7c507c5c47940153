"""The anomaly threshold on the negative log-likelihood: fixed, or a running quantile (:class:`NLLThreshold`).

Shared by the pipeline, the River learners and the estimator (:mod:`online_gmm.anomaly`). This module
imports only NumPy and the quantile sketch, so ``online-gmm run`` starts without River or scikit-learn.

A record is flagged when its score ``-log p(x)`` exceeds a threshold: either fixed, or a running
quantile of the scores seen so far (``q=0.99`` flags about the top 1%), kept by a deterministic,
mergeable t-digest (:class:`online_gmm._sketch.QuantileSketch`, Apache DataSketches) that a batch of
scores updates in one call, with no per-record Python.

What each record is compared with
---------------------------------
Scoring happens before learning (prequential): a record is scored by the model that has not seen it
and compared with a threshold computed from scores *before* it; then the threshold learns it.

* :meth:`NLLThreshold.flag_many` (the pipeline, batch by batch): every record of a batch is compared
  with the threshold as it stood *before the batch*; then the whole batch updates the sketch. The
  one exception keeps the warm-up exact: nothing is flagged before ``min_samples`` scores were seen,
  and in the batch during which that count is reached, the records from the ``min_samples``-th on
  are compared with the threshold of exactly the first ``min_samples`` scores. So the sketch is
  updated in chunks cut at the batch boundaries and at record ``min_samples``, and each record is
  compared with the threshold at the start of its chunk. The flags depend only on the scores and the
  batch boundaries: the same batches give the same flags on every run and after a resume.
* :meth:`NLLThreshold.classify` / :meth:`~NLLThreshold.update` (River's ``NLLFilter``, one record at
  a time): the sketch is updated at every 32nd score (``record_block``) and at the
  ``min_samples``-th, so each record is compared with the threshold of the scores before its block:
  the batch rule with batches cut at multiples of 32. (An update of the t-digest costs about 30 us for one
  score as for 32; per record, the block brings the threshold's cost from about 30 us to 1-2 us.)

``+inf`` (a record the model finds impossible) is flagged whenever a threshold is active (a fixed
one, or a quantile after ``min_samples`` scores), even when the threshold itself is ``+inf``. Scores
that are not finite never enter the sketch: the quantile is that of the finite scores (``+inf`` is
counted apart, NaN and ``-inf`` ignored and never flagged); all of them count towards
``min_samples``. Finite scores of any size and sign (-1e3, 1e300) are ordinary values.

State
-----
:meth:`NLLThreshold.to_state` / :meth:`~NLLThreshold.from_state` give a JSON-able dict (no pickle):
the settings, the count of scores and the t-digest in the DataSketches binary format (base64, about
6 KB for ``k=200``). A restored threshold continues exactly as the original.
:meth:`NLLThreshold.merge` combines two workers' thresholds.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from online_gmm._sketch import QuantileSketch

__all__ = ["NLLThreshold"]

# 1: River's P² markers (per-record); 2: a t-digest (QuantileSketch).
_STATE_FORMAT = 2


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
    k : int, default=200
        Compression of the t-digest behind the quantile (memory and accuracy grow with it; see
        :mod:`online_gmm._sketch` for the error bound).

    Attributes
    ----------
    record_block : int
        Class attribute, 32: scores given one at a time (:meth:`update`) reach the sketch at every
        ``record_block``-th score seen.
    sketch : QuantileSketch or None
        The running quantile's sketch (None with a fixed threshold).
    n_seen_ : int
        Scores seen, finite or not.

    Examples
    --------
    >>> import json
    >>> import numpy as np
    >>> rng = np.random.RandomState(0)
    >>> t = NLLThreshold(q=0.9, min_samples=100)
    >>> scores = rng.standard_normal(1000)
    >>> flags = t.flag_many(scores)                      # one batch
    >>> bool(flags[:100].any()), bool(0.05 < flags.mean() < 0.15)
    (False, True)
    >>> round(t.threshold_, 2), round(float(np.quantile(scores, 0.9)), 2)   # sketch, exact
    (1.24, 1.23)

    >>> t.flag_many(np.array([5.0, 0.0, np.inf])).tolist()
    [True, False, True]
    >>> u = NLLThreshold.from_state(json.loads(json.dumps(t.to_state())))
    >>> u.threshold_ == t.threshold_
    True
    """

    record_block = 32

    def __init__(self, q: float | None = 0.99, threshold: float | None = None,
                 min_samples: int = 100, *, k: int = 200) -> None:
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
        self.k = k
        self.sketch = None if q is None else QuantileSketch(k=k)
        self.n_seen_ = 0
        self._pending: list[float] = []      # finite scores from update(), not yet in the sketch
        self._cached: float | None = None    # the quantile of the sketch as it is

    @property
    def active_(self) -> bool:
        """Whether records can be flagged: a fixed threshold, or ``min_samples`` scores seen."""
        return self.sketch is None or self.n_seen_ >= self.min_samples

    @property
    def threshold_(self) -> float:
        """The current threshold (+inf while a quantile has fewer than ``min_samples`` scores, or no
        finite score)."""
        if self.sketch is None:
            return float(self.threshold)
        if self.n_seen_ < self.min_samples or self.sketch.n == 0:
            return math.inf
        if self._cached is None:
            self._cached = self.sketch.quantile(self.q)
        return self._cached

    def _flush(self) -> None:
        if self._pending:
            self.sketch.update(np.array(self._pending, dtype=np.float64))
            self._pending.clear()
        self._cached = None

    def _compare(self, scores: np.ndarray) -> np.ndarray:
        threshold = self.threshold_
        return (scores > threshold) | (scores == np.inf)

    def classify(self, score: float) -> bool:
        """True if ``score`` is anomalous: strictly above the threshold, or ``+inf`` once a threshold
        is active."""
        return self.active_ and (score > self.threshold_ or score == math.inf)

    def update(self, score: float) -> None:
        """Add one score (the per-record path of River's filter).

        The sketch is updated at every :attr:`record_block`-th score and at the ``min_samples``-th
        (one update of the t-digest costs about as much for 1 score as for 32); so the threshold that
        :meth:`classify` uses is that of the scores before the current block.
        """
        self.n_seen_ += 1
        if self.sketch is None:
            return
        score = float(score)
        if math.isfinite(score):
            self._pending.append(score)
        else:
            self.sketch.update_one(score)          # counted, never in the digest
        if self.n_seen_ % self.record_block == 0 or self.n_seen_ == self.min_samples:
            self._flush()

    def update_many(self, scores: np.ndarray) -> None:
        """Add a batch of scores, shape (n_samples,), in one sketch update."""
        scores = _as_scores(scores)
        self.n_seen_ += scores.shape[0]
        if self.sketch is not None:
            self._flush()
            self.sketch.update(scores)

    def batch_threshold(self, n: int) -> tuple[bool, float | None]:
        """The one rule :meth:`flag_many` will apply to every score of the next batch of ``n``.

        Returns
        -------
        fixed : bool
            False only for the batch in which a quantile reaches ``min_samples``: its scores from
            the ``min_samples``-th on are compared with a threshold made within the batch.
        threshold : float or None
            With ``fixed``: scores above it, or ``+inf``, will be flagged; None: none will be
            (the quantile is short of ``min_samples`` for the whole batch).
        """
        if self.active_:
            return True, float(self.threshold_)
        if self.n_seen_ + n <= self.min_samples:
            return True, None
        return False, None

    def flag_many(self, scores: np.ndarray) -> np.ndarray:
        """Prequential flags for a batch, then the batch updates the threshold (no per-record loop).

        Every score is compared with the threshold as it stood before the batch (see the module
        docstring for the batch in which ``min_samples`` is reached).

        Parameters
        ----------
        scores : array-like of shape (n_samples,)
            Negative log-likelihoods, in stream order.

        Returns
        -------
        flags : ndarray of shape (n_samples,), bool
        """
        scores = _as_scores(scores)
        flags = np.zeros(scores.shape[0], dtype=bool)
        if self.sketch is not None:
            self._flush()                          # scores from update() come first
        start = 0
        if not self.active_:
            start = min(scores.shape[0], self.min_samples - self.n_seen_)
            self.update_many(scores[:start])
        if start < scores.shape[0]:
            flags[start:] = self._compare(scores[start:])
            self.update_many(scores[start:])
        return flags

    def merge(self, other: NLLThreshold) -> NLLThreshold:
        """Add another threshold's scores (another worker's) to this one; returns self.

        Parameters
        ----------
        other : NLLThreshold
            Same ``q``, ``threshold``, ``min_samples`` and ``k``; left unchanged.

        Returns
        -------
        self : NLLThreshold
        """
        if not isinstance(other, NLLThreshold):
            raise TypeError(f"can only merge an NLLThreshold, got {type(other).__name__}")
        mine = (self.q, self.threshold, self.min_samples, self.k)
        theirs = (other.q, other.threshold, other.min_samples, other.k)
        if mine != theirs:
            raise ValueError(f"cannot merge thresholds with different settings (q, threshold, "
                             f"min_samples, k): {mine} and {theirs}")
        self.n_seen_ += other.n_seen_
        if self.sketch is not None:
            self._flush()
            self.sketch.merge(other.sketch)
            if other._pending:
                self.sketch.update(np.array(other._pending, dtype=np.float64))
        return self

    def to_state(self) -> dict[str, Any]:
        """A JSON-able dict of the settings, the count and the sketch (no pickle)."""
        return {"format": _STATE_FORMAT, "q": self.q, "threshold": self.threshold,
                "min_samples": self.min_samples, "k": self.k, "n_seen": self.n_seen_,
                "sketch": None if self.sketch is None else self.sketch.to_state(),
                "pending": list(self._pending)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> NLLThreshold:
        """Inverse of :meth:`to_state`."""
        fmt = state.get("format")
        if fmt != _STATE_FORMAT:
            hint = (" (River P² markers, written before the threshold became a t-digest: start "
                    "from a fresh threshold or checkpoint directory)" if fmt == 1 else "")
            raise ValueError(f"unsupported threshold state format {fmt!r}, expected "
                             f"{_STATE_FORMAT}{hint}")
        new = cls(q=state["q"], threshold=state["threshold"], min_samples=state["min_samples"],
                  k=state["k"])
        new.n_seen_ = int(state["n_seen"])
        if state["sketch"] is not None:
            if new.sketch is None:
                raise ValueError("threshold state has a sketch but a fixed threshold")
            new.sketch = QuantileSketch.from_state(state["sketch"])
            new._pending = [float(v) for v in state["pending"]]
        return new

    def __repr__(self) -> str:
        kind = f"q={self.q!r}" if self.sketch is not None else f"threshold={self.threshold!r}"
        return f"NLLThreshold({kind}, threshold_={self.threshold_:.6g}, n_seen_={self.n_seen_})"


def _as_scores(scores) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores must be a 1-d array of shape (n_samples,), got shape {scores.shape}")
    return scores
