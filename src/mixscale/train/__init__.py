"""Training on Lightning: the module, the data from a config, and ``fit``."""

from .fit import RunResult, fit
from .module import MixscaleModule

__all__ = ["MixscaleModule", "RunResult", "fit"]
