"""online-gmm: streaming Gaussian mixture models.

The incremental (stepwise) EM core behind a scikit-learn estimator (:class:`OnlineGaussianMixture`),
River learners (:mod:`online_gmm.river`), and a resumable pipeline (:mod:`online_gmm.pipeline`).

The public names are imported on first use (PEP 562 module ``__getattr__``), so ``import online_gmm``
and the ``online-gmm`` command start without loading scikit-learn, River, SciPy or NumPy; ``from
online_gmm import OnlineGaussianMixture`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["OnlineGaussianMixture", "SufficientStatistics", "ComponentReseededWarning",
           "OnlineGMM", "GMMAnomalyDetector", "NLLThreshold", "NLLFilter", "GMMOutlierDetector"]
__version__ = "0.1.0"

#: public name -> the module that defines it (imported when the name is first looked up)
_LAZY = {
    "ComponentReseededWarning": "online_gmm._online",
    "SufficientStatistics": "online_gmm._suffstats",
    "OnlineGaussianMixture": "online_gmm.estimator",
    "GMMOutlierDetector": "online_gmm.anomaly",
    "NLLFilter": "online_gmm.anomaly",
    "NLLThreshold": "online_gmm.threshold",
    "GMMAnomalyDetector": "online_gmm.river",
    "OnlineGMM": "online_gmm.river",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and cache the name in this module."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'online_gmm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
