"""Step-size schedules for stepwise EM, defined per sample so that batching does not matter.

Stepwise EM keeps normalised statistics ``s`` and moves them towards each batch's statistics ``b``:
``s <- rho * s + (1 - rho) * b``. Here the step is a rate per unit of sample weight,
``gamma(t) = ((t / unit) + t0) ** -alpha / unit`` where ``t`` counts the weight seen, and a batch of
weight ``m`` arriving at ``t`` keeps the share ``rho = exp(-integral_t^{t+m} gamma)`` of the old
statistics. Because the integral is additive, cutting a stream into batches of any size gives the same
shares (up to the within-batch order): with ``alpha = 1`` and ``t0 = 0`` the statistics are the exact
running sum of everything seen, whatever the batch sizes. A ``halflife`` (in samples) replaces the
power law by a constant rate once the running average has reached that memory, so each sample's weight
halves every ``halflife`` samples: the setting for drifting streams.

The statistics are held in count units, scaled to the schedule's *effective count*
``n_eff(t) = min(t, 1 / gamma(t))``, so that the model's weight total says how many samples it
currently remembers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["StepSchedule"]


@dataclass(frozen=True)
class StepSchedule:
    """A per-sample step-size schedule.

    Parameters
    ----------
    alpha : float in [0.5, 1]
        Decay exponent of the power schedule (1: running average).
    t0 : float >= 0
        Offset, in units of ``unit`` samples.
    unit : float > 0
        Samples per schedule step: the power law is evaluated at ``t / unit``.
    halflife : float or None
        If set, a constant forgetting rate ``ln 2 / halflife`` once the memory reaches it.

    Examples
    --------
    >>> s = StepSchedule(alpha=1.0, t0=0.0, unit=1.0)
    >>> s.rho(t=300.0, m=100.0)   # the exact running average keeps 3/4 of the old statistics
    0.75
    >>> s.n_eff(400.0)
    400.0
    """

    alpha: float = 0.6
    t0: float = 2.0
    unit: float = 1000.0
    halflife: float | None = None

    def __post_init__(self) -> None:
        if not (0.5 <= self.alpha <= 1.0):
            raise ValueError(f"alpha must be in [0.5, 1], got {self.alpha!r}")
        if not (self.t0 >= 0 and math.isfinite(self.t0)):
            raise ValueError(f"t0 must be a finite number >= 0, got {self.t0!r}")
        if not (self.unit > 0 and math.isfinite(self.unit)):
            raise ValueError(f"step_unit must be a finite number > 0, got {self.unit!r}")
        if self.halflife is not None and not (self.halflife > 0 and math.isfinite(self.halflife)):
            raise ValueError(f"halflife must be None or a finite number > 0, got {self.halflife!r}")

    # integral of the power-law rate from 0 to t
    def _power_integral(self, t: float) -> float:
        x = t / self.unit + self.t0
        if self.alpha == 1.0:
            return math.log(x) if x > 0 else -math.inf
        return x ** (1.0 - self.alpha) / (1.0 - self.alpha)

    def _log_rho_power(self, t: float, m: float) -> float:
        a, b = self._power_integral(t), self._power_integral(t + m)
        if a == -math.inf:
            return -math.inf
        return -(b - a)

    def rho(self, t: float, m: float) -> float:
        """Share of the old statistics kept when a batch of weight ``m`` arrives after weight ``t``."""
        if m <= 0:
            return 1.0
        if t <= 0:
            return 0.0
        if self.halflife is None:
            if self.alpha == 1.0:  # closed form, exact running average when t0 == 0
                return (t / self.unit + self.t0) / ((t + m) / self.unit + self.t0)
            return math.exp(self._log_rho_power(t, m))
        # running average (rate 1/s) until the memory reaches c = halflife / ln 2, constant after
        c = self.halflife / math.log(2.0)
        lo, hi = min(t, c), min(t + m, c)
        log_rho = -(math.log(hi) - math.log(lo)) - (max(t + m, c) - max(t, c)) / c
        return math.exp(log_rho)

    def n_eff(self, t: float) -> float:
        """Effective count remembered after weight ``t``: ``min(t, 1 / gamma(t))``."""
        if t <= 0:
            return 0.0
        if self.halflife is not None:
            return min(t, self.halflife / math.log(2.0))
        inv_gamma = self.unit * (t / self.unit + self.t0) ** self.alpha
        return min(t, inv_gamma)

    def coefficients(self, t: float, m: float, old_total: float) -> tuple[float, float]:
        """Multipliers ``(a, b)`` for ``new = a * old_stats + b * batch_stats`` in count units.

        ``old_total`` is the old statistics' weight and ``m`` the batch's; the result has total weight
        ``n_eff(t + m)`` and normalised statistics ``rho * old + (1 - rho) * batch``.
        """
        rho = self.rho(t, m)
        n_new = self.n_eff(t + m)
        a = rho * n_new / old_total if old_total > 0 else 0.0
        b = (1.0 - rho) * n_new / m if m > 0 else 0.0
        return a, b
