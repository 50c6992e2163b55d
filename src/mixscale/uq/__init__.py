"""Trust: ensemble statistics, calibration and conformal prediction (above ``train``, beside ``search``).

The statistics are pure tensor functions that know nothing of networks
(:mod:`mixscale.infer.reducers`, :mod:`mixscale.infer.conformal`, on the bottom floor so
that prediction can use them on whole images, zarr blocks and any callable); this
package re-exports them and holds the workflows that fit them to a model.
"""

from ..infer.conformal import (SCORES, ConformalWarning, class_conditional_quantiles, class_scores, conformal_quantile,
                        prediction_sets, quantile_rank, risk_control_threshold, set_bitmask, true_class_scores)
from ..infer.reducers import MemberStatistics, entropy, lower_bound_mask

__all__ = ["SCORES", "ConformalWarning", "MemberStatistics", "class_conditional_quantiles", "class_scores",
           "conformal_quantile", "entropy", "lower_bound_mask", "prediction_sets", "quantile_rank",
           "risk_control_threshold", "set_bitmask", "true_class_scores"]
