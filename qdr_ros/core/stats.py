"""Percentiles as the reports and diagnostics print them: plain floats, and None for no samples."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def percentiles(values: Iterable[float], qs: Sequence[float] = (50, 95)) -> tuple[float, ...] | None:
    """Return the ``qs`` percentiles of ``values`` (linear interpolation), or None when there are none.

    None rather than NaN: a report shows '-' and JSON stays valid; floats rather than NumPy scalars,
    so the values serialize as they are.
    """
    data = np.fromiter(values, np.float64)
    if data.size == 0:
        return None
    return tuple(float(v) for v in np.percentile(data, list(qs)))
