"""Trust: ensemble statistics, calibration and conformal prediction (above ``train``, beside ``search``).

The statistics are pure tensor functions (:mod:`.reducers`, :mod:`.conformal`) that
know nothing of networks, so they run on whole images, zarr blocks and any callable.
"""

from .conformal import (SCORES, ConformalWarning, class_conditional_quantiles, class_scores, conformal_quantile,
                        prediction_sets, quantile_rank, risk_control_threshold, set_bitmask, true_class_scores)
from .reducers import MemberStatistics, entropy, lower_bound_mask

__all__ = ["SCORES", "ConformalWarning", "MemberStatistics", "class_conditional_quantiles", "class_scores",
           "conformal_quantile", "entropy", "lower_bound_mask", "prediction_sets", "quantile_rank",
           "risk_control_threshold", "set_bitmask", "true_class_scores"]
