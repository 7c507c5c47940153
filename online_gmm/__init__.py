"""online-gmm: streaming Gaussian mixture models.

The incremental (stepwise) EM core behind a scikit-learn estimator (:class:`OnlineGaussianMixture`),
River learners (:mod:`online_gmm.river`), and a resumable pipeline (:mod:`online_gmm.pipeline`).
"""

from online_gmm._online import ComponentReseededWarning
from online_gmm._suffstats import SufficientStatistics
from online_gmm.estimator import OnlineGaussianMixture
from online_gmm.anomaly import GMMOutlierDetector, NLLFilter, NLLThreshold
from online_gmm.river import GMMAnomalyDetector, OnlineGMM

__all__ = ["OnlineGaussianMixture", "SufficientStatistics", "ComponentReseededWarning",
           "OnlineGMM", "GMMAnomalyDetector", "NLLThreshold", "NLLFilter", "GMMOutlierDetector"]
__version__ = "0.1.0"
