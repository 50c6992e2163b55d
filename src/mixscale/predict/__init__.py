"""Prediction of a :class:`~mixscale.model.Model`: in memory, block-wise into zarr, and detection.

``predict/`` sits above ``model/`` and the bottom floor; :mod:`mixscale.api`
turns files into the arrays and models these functions take.
"""

from .blocks import BlockJob, default_block_shape, even_block, predict_blocks
from .detect import detect_array
from .memory import predict_array

__all__ = ["BlockJob", "default_block_shape", "detect_array", "even_block", "predict_array", "predict_blocks"]
