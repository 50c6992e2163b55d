"""A trained model: the model file, and the :class:`Model` every prediction runs.

``model/`` sits on the bottom floor (nets, data, infer) and under ``train``,
``predict``, ``uq`` and ``search``; ``model/export/`` will hold the exporters.
"""

from .file import FORMAT_VERSION, READABLE_VERSIONS, ModelInfo, load_model, read_model_info, save_model
from .model import InputLayout, Model, cached_model, label_dtype, warn_if_not_tile_exact

__all__ = ["FORMAT_VERSION", "READABLE_VERSIONS", "InputLayout", "Model", "ModelInfo", "cached_model", "label_dtype",
           "load_model", "read_model_info", "save_model", "warn_if_not_tile_exact"]
