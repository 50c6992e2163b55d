"""Configuration schemas and their YAML loader."""

from .load import ConfigError, apply_overrides, dump_config, load_config, validate_config
from .schema import AugmentConfig, DataConfig, NetConfig, OptimConfig, ScheduleConfig, TrainConfig, TrainerConfig

__all__ = ["AugmentConfig", "ConfigError", "DataConfig", "NetConfig", "OptimConfig", "ScheduleConfig", "TrainConfig",
           "TrainerConfig", "apply_overrides", "dump_config", "load_config", "validate_config"]
