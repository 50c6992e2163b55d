"""Inference drivers over any ``Tensor -> Tensor`` callable (never imports nets)."""

from .blend import blend_window
from .detect import detect_points, detection_map, find_peaks, match_points, object_peaks
from .grid import tile_grid, tile_starts, with_halo
from .merge import Accumulator
from .blocks import block_grid, part_indices, run_blocks
from .store import BlockStore
from .tiled import predict_tiled, predict_tiled_shrinking
from .tta import TestTimeAugmentation
from .whole import predict_slices, predict_whole

__all__ = ["Accumulator", "BlockStore", "TestTimeAugmentation", "blend_window", "block_grid", "detect_points",
           "detection_map", "find_peaks", "match_points", "object_peaks", "part_indices", "predict_slices",
           "predict_tiled", "predict_tiled_shrinking", "predict_whole", "run_blocks", "tile_grid", "tile_starts",
           "with_halo"]
