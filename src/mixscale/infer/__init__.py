"""Inference drivers over any ``Tensor -> Tensor`` callable (never imports nets)."""

from .blend import blend_window
from .grid import tile_grid, tile_starts, with_halo
from .merge import Accumulator
from .tiled import predict_tiled
from .whole import predict_slices, predict_whole

__all__ = ["Accumulator", "blend_window", "predict_slices", "predict_tiled", "predict_whole", "tile_grid",
           "tile_starts", "with_halo"]
