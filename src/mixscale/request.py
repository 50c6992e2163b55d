"""What a prediction is asked to give, beside labels: one checked value passed down every path.

In memory, tiled and block-wise prediction (and each of its workers) take one
:class:`OutputRequest`, so a new output (an uncertainty map, a conformal set, a
risk-controlled mask, a lower-bound mask) is added in one place and reaches all of
them alike.

Examples
--------
>>> r = OutputRequest.checked(lower_bound=(1.0, 0.5))
>>> r.statistics, r.dict_output, r.uncertainty
(True, True, False)
>>> OutputRequest.checked(lower_bound=(1.0, 2.0))
Traceback (most recent call last):
...
ValueError: lower_bound=(1.0, 2.0) is not allowed; expected (k, threshold) with k >= 0 and threshold in [0, 1), e.g. (1.0, 0.5)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ._checks import check_bool, not_allowed


@dataclass(frozen=True)
class OutputRequest:
    """The arrays asked for beside ``labels`` (or ``prediction``).

    Attributes
    ----------
    probabilities : bool
        Class probabilities ``(K, *S)``.
    uncertainty : bool
        ``prob_mean``, ``prob_std``, ``entropy``, ``mutual_info`` over the members (or the
        test-time transforms); ``prediction_std`` for image tasks.
    sets : bool
        Conformal prediction sets of a calibrated model: ``sets`` (bitmask), ``set_size``.
    risk_mask : bool
        The risk-controlled mask of a calibrated class: ``risk_mask`` where ``p_c >= 1 - lambda``.
    lower_bound : (k, threshold) or None
        ``lower_bound`` ``(K, *S)``: class ``c`` where ``mean - k * std > threshold`` over the members.
    """

    probabilities: bool = False
    uncertainty: bool = False
    sets: bool = False
    risk_mask: bool = False
    lower_bound: tuple[float, float] | None = None

    @classmethod
    def checked(cls, *, probabilities=False, uncertainty=False, sets=False, risk_mask=False,
                lower_bound=None) -> OutputRequest:
        """A request from user arguments, each checked and named in the error."""
        return cls(check_bool("probabilities", probabilities), check_bool("uncertainty", uncertainty),
                   check_bool("sets", sets), check_bool("risk_mask", risk_mask), check_lower_bound(lower_bound))

    @property
    def statistics(self) -> bool:
        """The predictor must give member statistics (mean, std, entropy, MI), not just the mean."""
        return self.uncertainty or self.lower_bound is not None

    @property
    def dict_output(self) -> bool:
        """The result is a dict of arrays rather than one array."""
        return self.statistics or self.sets or self.risk_mask

    def plan(self) -> dict:
        """The settings a block store records: only those asked for, so that older stores still match."""
        out = {k: v for k, v in asdict(self).items() if k != "probabilities" and v not in (False, None)}
        if self.lower_bound is not None:
            out["lower_bound"] = list(self.lower_bound)
        return out


def check_lower_bound(value) -> tuple[float, float] | None:
    """``(k, threshold)`` with ``k >= 0`` and ``0 <= threshold < 1``, or None."""
    if value is None:
        return None
    try:
        k, t = (float(v) for v in value)
    except (TypeError, ValueError):
        raise not_allowed("lower_bound", value, "(k, threshold), two numbers, e.g. (1.0, 0.5)") from None
    if not (math.isfinite(k) and k >= 0 and 0 <= t < 1):
        raise not_allowed("lower_bound", value, "(k, threshold) with k >= 0 and threshold in [0, 1), e.g. (1.0, 0.5)")
    return (k, t)
