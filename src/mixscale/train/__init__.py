"""Training on Lightning: the module, the data, the builder (the one reader of the config) and ``fit``."""

from .builder import build_run
from .fit import RunResult, fit
from .module import MixscaleModule
from .settings import DataSettings, TrainingData, TrainingRun

__all__ = ["DataSettings", "MixscaleModule", "RunResult", "TrainingData", "TrainingRun", "build_run", "fit"]
