"""A trained model as one object: network, what it was trained on, how to feed it, what it gives.

:class:`Model` is what every kind of prediction runs (in memory, tiled, block-wise,
detection; later ensembles, conformal sets and exports): it checks an input
against the model (:meth:`Model.layout`), prepares it (:meth:`Model.prepare`:
channels first, the training normalisation), gives the callable tiles and blocks
run (:meth:`Model.predictor`), and finishes the raw output into the arrays a user
gets (:meth:`Model.finish`, :meth:`Model.outputs`, :meth:`Model.output_arrays`).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
from torch import nn

from ..tasks import Task, get_task
from .file import ModelInfo, load_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputLayout:
    """How an input array maps onto the model.

    Attributes
    ----------
    spatial_shape : tuple of int
        The input's shape without its channel axis.
    channel_axis : int or None
        The input's channel axis (non-negative), or None for a single-channel input.
    slice_axis : int or None
        For a 2D model on a volume: the axis it is predicted along (non-negative).
    """

    spatial_shape: tuple[int, ...]
    channel_axis: int | None
    slice_axis: int | None


def label_dtype(classes: int) -> str:
    """The smallest unsigned integer type for ``classes`` labels: uint8 up to 256, uint16 above."""
    return "uint8" if classes <= 256 else "uint16"


class Model:
    """A network with the facts of its model file.

    Parameters
    ----------
    net : nn.Module
        In eval mode, on its device.
    info : ModelInfo

    Examples
    --------
    >>> from mixscale.nets import create_net
    >>> net = create_net("msd", depth=2, out_channels=3).eval()
    >>> model = Model(net, ModelInfo(net_name="msd", net_config=net.config(), class_names=["a", "b", "c"]))
    >>> x = model.prepare(np.zeros((9, 7), np.float32))
    >>> x.shape, model.finish(model.run(x)).dtype
    ((1, 9, 7), dtype('uint8'))
    """

    def __init__(self, net: nn.Module, info: ModelInfo, *, source: str | None = None) -> None:
        self.net, self.info, self.source = net, info, source
        self.task: Task = get_task(info.task)

    @classmethod
    def load(cls, path, *, device: str = "cpu") -> Model:
        """Read a model file (never unpickles) and build its network on ``device``."""
        net, info = load_model(path, device=device)
        return cls(net, info, source=str(path))

    # -- facts ---------------------------------------------------------------------
    @property
    def spatial_dims(self) -> int:
        return self.info.spatial_dims

    @property
    def in_channels(self) -> int:
        return self.info.in_channels

    @property
    def out_channels(self) -> int:
        return self.info.out_channels

    @property
    def context_slices(self) -> int:
        return self.info.context_slices

    @property
    def image_channels(self) -> int:
        """Channels of the input image (2.5D stacks ``2k + 1`` slices of it as the network's channels)."""
        return self.in_channels // (2 * self.context_slices + 1)

    @property
    def halo(self) -> int:
        """Pixels of context each side of a tile needs (from the network's receptive field)."""
        return int(getattr(self.net, "halo", 0))

    @property
    def class_names(self) -> list[str] | None:
        return self.info.class_names

    # -- input ---------------------------------------------------------------------
    def layout(self, shape, *, slice_axis: int | None = None, channel_axis: int | None = None) -> InputLayout:
        """Check an input of ``shape`` against the model; a clear ``ValueError`` otherwise.

        Parameters
        ----------
        shape : tuple of int
            The input array's shape, channel axis included when there is one.
        slice_axis : int, optional
            Needed for a 2D model on a volume.
        channel_axis : int, optional
            Default: none for single-channel images, axis 0 otherwise.
        """
        shape = tuple(int(n) for n in shape)
        base, dims = self.image_channels, self.spatial_dims
        if channel_axis is None and base == 1:
            spatial = shape
        else:
            ax = 0 if channel_axis is None else channel_axis
            if not -len(shape) <= ax < len(shape):
                raise ValueError(f"channel_axis={ax} is out of range for an input of shape {shape}")
            channel_axis = ax % len(shape)
            if shape[channel_axis] != base:
                raise ValueError(f"input of shape {shape} has {shape[channel_axis]} channels on axis "
                                 f"{channel_axis}; the model expects {base}")
            spatial = shape[:channel_axis] + shape[channel_axis + 1:]
        slicing = dims == 2 and len(spatial) == 3
        if len(spatial) not in (2, 3) or (dims == 3 and len(spatial) != 3):
            raise ValueError(f"input of shape {shape} is {len(spatial)}D but the model is {dims}D"
                             + ("; it needs a volume" if dims == 3 else ""))
        if slicing and slice_axis not in (0, 1, 2, -1, -2, -3):
            raise ValueError(f"input of shape {shape} is 3D but the model is 2D; pass slice_axis=0 (CLI: --axis 0) "
                             f"to predict it slice by slice along that axis (got slice_axis={slice_axis!r})")
        if self.context_slices and not slicing:
            raise ValueError(f"the model takes {self.context_slices} context slices on each side (2.5D); "
                             "it needs a volume")
        return InputLayout(spatial, channel_axis, slice_axis % 3 if slicing else None)

    def normalize(self, x: np.ndarray, *, check_finite: bool = True) -> np.ndarray:
        """``(C, *spatial)`` -> float32 in the training's normalisation; NaN or inf is an error."""
        from ..data import Normalization, normalize

        if check_finite and not np.isfinite(x).all():
            raise ValueError("input image contains NaN or infinite values")
        x = x.astype(np.float32, copy=False)
        if self.info.normalization:
            x = normalize(x, Normalization.from_dict(self.info.normalization), channel_axis=0)
        return np.ascontiguousarray(x, dtype=np.float32)

    def prepare(self, array: np.ndarray, *, slice_axis: int | None = None,
                channel_axis: int | None = None) -> np.ndarray:
        """Check a whole input, put channels first and normalise it: ``(C, *spatial)`` float32."""
        array = np.asarray(array)
        layout = self.layout(array.shape, slice_axis=slice_axis, channel_axis=channel_axis)
        x = array[None] if layout.channel_axis is None else np.moveaxis(array, layout.channel_axis, 0)
        return self.normalize(x)

    # -- running -------------------------------------------------------------------
    def predictor(self, *, tta: bool = False) -> Callable:
        """The callable tiles and blocks run, ``(B, C, *S) -> (B, K, *S)`` tensors.

        Class probabilities for class tasks (so that overlapping tiles and test-time
        augmentations average probabilities), raw outputs otherwise.
        """
        import torch

        from ..infer.tta import TestTimeAugmentation

        net, classes = self.net, self.task.classes

        def predictor(batch: torch.Tensor) -> torch.Tensor:
            out = net(batch)
            return torch.softmax(out.float(), dim=1) if classes else out

        return TestTimeAugmentation(predictor) if tta else predictor

    def run(self, x: np.ndarray, *, device: str = "cpu") -> np.ndarray:
        """One whole-input pass of a prepared ``(C, *spatial)`` array: ``(K, *spatial)``."""
        from ..infer import predict_whole

        return predict_whole(self.predictor(), x, device=device)

    # -- output --------------------------------------------------------------------
    def finish(self, raw: np.ndarray, *, probabilities: bool = False) -> np.ndarray:
        """The predictor's ``(K, *spatial)`` output -> what a user gets.

        Labels ``(*spatial)`` (uint8, uint16 above 256 classes) or with
        ``probabilities`` the class probabilities ``(K, *spatial)`` float32; for image
        tasks the output in the target's units, ``(*spatial)`` when K = 1.
        """
        if self.task.image_targets:
            return self._denormalize(raw)
        if probabilities:
            return raw.astype(np.float32)
        return raw.argmax(0).astype(label_dtype(raw.shape[0]))

    def outputs(self, raw: np.ndarray, *, probabilities: bool = False) -> dict[str, np.ndarray]:
        """The arrays of a block: ``labels`` (+ float16 ``probabilities``), or ``prediction`` float32."""
        if self.task.image_targets:
            return {"prediction": self._denormalize(raw).astype(np.float32)}
        out = {"labels": raw.argmax(0).astype(label_dtype(raw.shape[0]))}
        if probabilities:
            out["probabilities"] = raw.astype(np.float16)
        return out

    def output_arrays(self, *, probabilities: bool = False) -> list:
        """The :class:`~mixscale.infer.store.ArraySpec` of every array :meth:`outputs` gives."""
        from ..infer.store import ArraySpec

        k = self.out_channels
        if self.task.image_targets:
            return [ArraySpec("prediction", "float32", () if k == 1 else (k,))]
        specs = [ArraySpec("labels", label_dtype(k))]
        if probabilities:
            specs.append(ArraySpec("probabilities", "float16", (k,)))
        return specs

    def _denormalize(self, raw: np.ndarray) -> np.ndarray:
        from ..data import Normalization, denormalize

        out = raw
        if self.info.target_normalization:
            out = denormalize(raw, Normalization.from_dict(self.info.target_normalization), channel_axis=0)
        return out[0] if out.shape[0] == 1 else out

    # -- checks --------------------------------------------------------------------
    def require(self, *, per_patch: bool, use: str) -> None:
        """Refuse a model of the wrong kind: a patch classifier finds points, the others map images."""
        if self.task.per_patch == per_patch:
            return
        name = self.source or "this"
        if self.task.per_patch:
            raise ValueError(f"{name} is a {self.info.task} model (a patch classifier): it finds points, it does "
                             "not map images to images; use mixscale.api.detect (CLI: mixscale detect MODEL "
                             "IMAGE -o points.csv)")
        raise ValueError(f"{name} is a {self.info.task} model; {use} needs a model trained with task 'detection' "
                         "(use predict for this one)")

    def warn_if_not_tile_exact(self) -> bool:
        """Warn (and return True) when the network normalises over the whole input (instance or group
        norm): tiles and blocks then see other statistics than the whole image, so they can differ."""
        return warn_if_not_tile_exact(self.net)


def warn_if_not_tile_exact(net: nn.Module) -> bool:
    """See :meth:`Model.warn_if_not_tile_exact`."""
    kinds = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm)
    found = sorted({type(m).__name__ for m in net.modules() if isinstance(m, kinds)})
    if found:
        logger.warning("the network uses %s, which normalises over the whole input: tiled or block-wise "
                       "results can differ from whole-image prediction (train with norm='batch' or None for "
                       "tile-exact results)", ", ".join(found))
    return bool(found)


@functools.lru_cache(maxsize=2)
def cached_model(path: str, device: str) -> Model:
    """The model of ``path``, loaded once per process (workers call it per block) with no gradients."""
    model = Model.load(path, device=device)
    for p in model.net.parameters():
        p.requires_grad_(False)
    return model
