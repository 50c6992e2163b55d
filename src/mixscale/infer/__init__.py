"""Inference drivers over any ``Tensor -> Tensor`` callable (never imports nets)."""

from .whole import predict_slices, predict_whole

__all__ = ["predict_slices", "predict_whole"]
