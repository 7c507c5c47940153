"""The scikit-learn-facing helpers of :class:`~online_gmm.OnlineGaussianMixture`: its parameter
constraints as scikit-learn states them, the validation of ``sample_weight``, ``fit``'s progress lines
and the messages naming refused rows."""

from __future__ import annotations

import numbers
import time
from typing import Any

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from online_gmm.model_spec import Constraint

__all__ = ["VerbosePrinter", "rows_message", "sklearn_constraint", "validate_weight"]

_INTERVAL_TYPES = {"int": numbers.Integral, "real": numbers.Real}

#: attributes published from the warm-up buffer's provisional fit while ``partial_fit`` warms up


def sklearn_constraint(constraint: Constraint) -> Any:
    """A constraint of :data:`~online_gmm.model_spec.PARAMETERS` as scikit-learn states it."""
    if isinstance(constraint, tuple):
        if constraint[0] == "str":
            return StrOptions(set(constraint[1]))
        kind, low, high, closed = constraint
        return Interval(_INTERVAL_TYPES[kind], low, high, closed=closed)
    return constraint      # "array-like", "random_state", "boolean", "verbose", None: the same names


def validate_weight(sample_weight, n: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Number):
        w = np.full(n, float(sample_weight))
    else:
        w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("sample_weight contains NaN or infinity")
    if np.any(w < 0):
        raise ValueError(f"sample_weight must be >= 0, got a minimum of {float(w.min())!r}")
    if w.sum() <= 0:
        raise ValueError("sample_weight: all weights are zero; their sum must be positive")
    return w


class VerbosePrinter:
    """``fit``'s progress lines, as :class:`sklearn.mixture.GaussianMixture` prints them.

    ``verbose=1``: "Initialization <i>", "  Iteration <n>" every ``verbose_interval`` iterations and
    "Initialization converged." (or "did not converge."); ``verbose>=2`` adds the time since the last
    line, the change of the lower bound and the final lower bound.
    """

    def __init__(self, verbose: int, interval: int) -> None:
        self.verbose = int(verbose)
        self.interval = int(interval)
        self._t_init = self._t_iter = 0.0

    def init(self, init: int, result) -> None:
        now = time.perf_counter()
        if result is None:
            print(f"Initialization {init}")
            self._t_init = self._t_iter = now
            return
        msg = "converged" if result.converged else "did not converge"
        if self.verbose >= 2:
            print(f"Initialization {msg}. time lapse {now - self._t_init:.5f}s\t lower bound "
                  f"{result.lower_bound:.5f}.")
        else:
            print(f"Initialization {msg}.")

    def iteration(self, init: int, n_iter: int, lower_bound: float, change: float) -> None:
        if n_iter % self.interval:
            return
        if self.verbose >= 2:
            now = time.perf_counter()
            print(f"  Iteration {n_iter}\t time lapse {now - self._t_iter:.5f}s\t ll change "
                  f"{change:.5f}")
            self._t_iter = now
        else:
            print(f"  Iteration {n_iter}")


def rows_message(method: str, refused: list, base: int, *, dropped: bool = False) -> str:
    """A message naming the rows of ``X`` (ids ``base + row``) and earlier records that were refused."""
    rows = sorted(i - base for i, _ in refused if i >= base)
    earlier = sorted(i for i, _ in refused if i < base)
    parts = []
    if rows:
        parts.append(f"rows {rows} of X")
    if earlier:
        parts.append(f"records {earlier} of earlier calls (counting from the first record learned)")
    why = "; ".join(f"{'row ' + str(i - base) if i >= base else 'record ' + str(i)}: {r}"
                    for i, r in refused[:5])
    more = f"; and {len(refused) - 5} more" if len(refused) > 5 else ""
    if dropped:
        return (f"{method}: {' and '.join(parts)} were dropped from the warm-up buffer: they would "
                f"make the warm-up fit ill-defined ({why}{more})")
    return (f"{method}: {' and '.join(parts)} cannot be learned, and the model was left unchanged "
            f"({why}{more}). Remove them and call {method} again.")
