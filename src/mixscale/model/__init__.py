"""A trained model: the model file, and the :class:`Model` every prediction runs.

``model/`` sits on the bottom floor (nets, data, infer) and under ``train``,
``predict``, ``uq`` and ``search``; ``model/export/`` holds the exporters (ONNX, TorchScript).
"""

from .checks import InvalidModelFile
from .file import FORMAT_VERSION, READABLE_VERSIONS, ModelInfo, load_model, read_model_info, save_model
from .model import InputLayout, Model, label_dtype, warn_if_not_tile_exact
from .ensemble import Ensemble, cached_model, is_ensemble_file, open_model, read_manifest, save_ensemble

__all__ = ["FORMAT_VERSION", "READABLE_VERSIONS", "Ensemble", "InputLayout", "InvalidModelFile", "Model", "ModelInfo", "cached_model",
           "is_ensemble_file", "label_dtype", "load_model", "open_model", "read_manifest", "read_model_info",
           "save_ensemble", "save_model", "warn_if_not_tile_exact"]
