"""Plain JSON-able containers from NumPy-bearing ones, for the pickle-free checkpoint forms.

Shared by :class:`~online_gmm.reservoir.Reservoir` (its generator's state) and
:class:`~online_gmm.bic_history.BICHistory` (its rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _jsonable(obj: Any) -> Any:
    """Plain Python containers and scalars (numpy ints and floats converted)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
