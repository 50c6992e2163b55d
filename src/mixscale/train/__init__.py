"""Training on Lightning: the module, the data from a config, and ``fit``."""

from .fit import RunResult, fit
from .module import MixscaleModule, confusion_metrics

__all__ = ["MixscaleModule", "RunResult", "confusion_metrics", "fit"]
