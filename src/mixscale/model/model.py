"""A trained model as one object: network, what it was trained on, how to feed it, what it gives.

:class:`Model` is what every kind of prediction runs (in memory, tiled, block-wise,
detection; later ensembles, conformal sets and exports): it checks an input
against the model (:meth:`Model.layout`), prepares it (:meth:`Model.prepare`:
channels first, the training normalisation), gives the callable tiles and blocks
run (:meth:`Model.predictor`), and finishes the raw output into the arrays a user
gets (:meth:`Model.finish`, :meth:`Model.outputs`, :meth:`Model.output_arrays`).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from torch import nn

from ..tasks import Task, get_task
from .file import ModelInfo, load_model
from ..request import OutputRequest

logger = logging.getLogger(__name__)

#: a normalised input whose channel mean is further than this from 0 (in training standard deviations) ...
MAX_MEAN_SHIFT = 10.0
#: ... or whose std is more than this many times larger (or smaller) than 1 is unlike the training data
MAX_STD_RATIO = 100.0
#: pixels per channel the check reads (a strided subsample)
SCALE_CHECK_SAMPLES = 1_000_000


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


def writable_float32(x) -> np.ndarray:
    """``x`` as a C-contiguous, writable float32 array (torch refuses read-only memory maps)."""
    x = np.asarray(x, dtype=np.float32)
    return x if x.flags.writeable and x.flags.c_contiguous else np.array(x, order="C")


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
        return self.info.image_channels

    @property
    def input_normalization(self) -> dict | None:
        """The statistics :meth:`normalize` applies (an ensemble's members apply their own)."""
        return self.info.normalization

    @property
    def halo(self) -> int:
        """Pixels of context each side of a tile needs (from the network's receptive field)."""
        return int(getattr(self.net, "halo", 0))

    @property
    def class_names(self) -> list[str] | None:
        return self.info.class_names

    @property
    def calibration(self) -> dict:
        """What :func:`mixscale.api.calibrate` recorded: ``temperature``, ``conformal`` (or nothing)."""
        return self.info.calibration or {}

    @property
    def temperature(self) -> float:
        """Logits are divided by it before the softmax (1.0 unless calibrated)."""
        return float(self.calibration.get("temperature", 1.0))

    def logit_functions(self) -> list[Callable]:
        """One callable per member, prepared input -> raw logits ``(B, K, *S)`` (no temperature)."""
        return [self.net]

    def conformal(self) -> dict:
        """The conformal calibration; a clear error when the model has none."""
        return self._calibration_part("conformal", "no conformal calibration: prediction sets need a calibrated "
                                                   "model (mixscale calibrate MODEL IMAGES LABELS -o calibrated.safetensors)")

    def risk(self) -> dict:
        """The conformal risk control of a class mask; a clear error when the model has none."""
        return self._calibration_part("risk", "no risk-controlled mask: calibrate it with a class (mixscale "
                                              "calibrate MODEL IMAGES LABELS --fnr-class NAME -o calibrated.safetensors)")

    def _calibration_part(self, key: str, missing: str) -> dict:
        found = self.calibration.get(key)
        if not found:
            raise ValueError(f"{self.source or 'the model'} has {missing}")
        return found

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
        self._check_slicing(shape, spatial, slicing, slice_axis)
        return InputLayout(spatial, channel_axis, slice_axis % 3 if slicing else None)

    def _check_slicing(self, shape, spatial, slicing: bool, slice_axis) -> None:
        """``slice_axis`` is for a 2D model on a volume, whose slices must hold the 2.5D context."""
        if self.spatial_dims == 3 and slice_axis is not None:
            raise ValueError(f"slice_axis={slice_axis!r} is not allowed for a 3D model, which predicts a volume "
                             "as a whole; expected None (slice_axis, CLI --axis, is for 2D models on volumes)")
        if slicing and slice_axis not in (0, 1, 2, -1, -2, -3):
            raise ValueError(f"input of shape {shape} is 3D but the model is 2D; pass slice_axis=0 (CLI: --axis 0) "
                             f"to predict it slice by slice along that axis (got slice_axis={slice_axis!r})")
        k = self.context_slices
        if k and not slicing:
            raise ValueError(f"the model takes {k} context slices on each side (2.5D); it needs a volume")
        if k and spatial[slice_axis % 3] <= k:
            raise ValueError(f"input of shape {shape} has {spatial[slice_axis % 3]} slices along slice_axis="
                             f"{slice_axis}; the model takes context_slices={k} on each side (2.5D), which needs "
                             f"at least {k + 1} slices (context beyond the ends is reflected once)")

    def normalize(self, x: np.ndarray, *, check_finite: bool = True) -> np.ndarray:
        """``(C, *spatial)`` -> float32 in the training's normalisation; NaN or inf is an error."""
        from ..data import Normalization, normalize

        if check_finite and not np.isfinite(x).all():
            raise ValueError("input image contains NaN or infinite values")
        x = x.astype(np.float32, copy=False)
        if self.input_normalization:
            x = normalize(x, Normalization.from_dict(self.input_normalization), channel_axis=0)
        return writable_float32(x)

    def prepare(self, array: np.ndarray, *, slice_axis: int | None = None,
                channel_axis: int | None = None) -> np.ndarray:
        """Check a whole input, put channels first and normalise it: ``(C, *spatial)`` float32."""
        return self.prepare_with_layout(array, slice_axis=slice_axis, channel_axis=channel_axis)[0]

    def prepare_with_layout(self, array: np.ndarray, *, slice_axis: int | None = None,
                            channel_axis: int | None = None) -> tuple[np.ndarray, InputLayout]:
        """:meth:`prepare` and the :meth:`layout` it checked the input with."""
        array = np.asarray(array)
        layout = self.layout(array.shape, slice_axis=slice_axis, channel_axis=channel_axis)
        x = array[None] if layout.channel_axis is None else np.moveaxis(array, layout.channel_axis, 0)
        x = self.normalize(x)
        self.warn_if_unlike_training(x, array.dtype)
        return x, layout

    def warn_if_unlike_training(self, x: np.ndarray, dtype) -> bool:
        """Warn when a normalised input ``(C, *spatial)`` is far from what the training data gave
        (mean 0, std 1 per channel): input of another dtype or scale, such as uint16 counts given to
        a model trained on floats in [0, 1]. Checks a subsample; True if it warned."""
        norm = self.input_normalization
        if not norm or x.size == 0:
            return False
        flat = x.reshape(x.shape[0], -1)
        sample = flat[:, ::max(1, flat.shape[1] // SCALE_CHECK_SAMPLES)].astype(np.float64)
        mean, std = sample.mean(axis=1), sample.std(axis=1)
        spread = float(std.max())
        odd_spread = spread > MAX_STD_RATIO or 0 < spread < 1 / MAX_STD_RATIO  # 0: a constant input
        if float(np.abs(mean).max()) <= MAX_MEAN_SHIFT and not odd_spread:
            return False
        warnings.warn(f"input of dtype {np.dtype(dtype)} does not look like the model's training data: with the "
                      f"training normalisation (mean {norm['mean']}, std {norm['std']}) its mean is "
                      f"{np.round(mean, 3).tolist()} and its std {np.round(std, 3).tolist()}, where the training "
                      "data give 0 and 1; was the model trained on data of another dtype or scale (e.g. floats in "
                      "[0, 1] against integer counts)? Convert the input to the training data's units",
                      UserWarning, stacklevel=3)
        return True

    # -- running -------------------------------------------------------------------
    def predictor(self, *, tta: bool = False, uncertainty: bool = False) -> Callable:
        """The callable tiles and blocks run, ``(B, C, *S) -> (B, K', *S)`` tensors.

        Class probabilities for class tasks (so that overlapping tiles and test-time
        augmentations average probabilities), raw outputs otherwise. With
        ``uncertainty`` the members are the test-time transforms (``tta`` is needed for a
        single model) and the output holds the statistics channels of :meth:`outputs`.
        """
        if uncertainty:
            if not tta:
                raise ValueError("uncertainty of a single model comes from its test-time augmentations: pass "
                                 "tta=True (CLI: --tta), or predict with an ensemble")
            return member_statistics_predictor([self._member_output], tta=True, classes=self.task.classes)
        import torch

        from ..infer.tta import TestTimeAugmentation

        forward, classes, t = self._forward, self.task.classes, self.temperature

        def predictor(batch: torch.Tensor) -> torch.Tensor:
            out = forward(batch)
            return tempered_softmax(out, t) if classes else out

        return TestTimeAugmentation(predictor) if tta else predictor

    def _forward(self, batch):
        """The network on a prepared batch; a Noise2Inverse model averages its ``splits`` combinations."""
        if self.info.splits:
            return noise2inverse_forward(self.net, batch, self.info.splits)
        return self.net(batch)

    def _member_output(self, batch, *, temperature: float | None = None):
        """One member's output in the units statistics are taken in: probabilities, or target units."""
        out = self._forward(batch).float()
        if self.task.classes:
            return tempered_softmax(out, self.temperature if temperature is None else temperature)
        return channel_affine(out, self.info.target_normalization)

    def run(self, x: np.ndarray, *, device: str = "cpu") -> np.ndarray:
        """One whole-input pass of a prepared ``(C, *spatial)`` array: ``(K, *spatial)``."""
        from ..infer import predict_whole

        return predict_whole(self.predictor(), x, device=device)

    # -- output --------------------------------------------------------------------
    def _final_units(self, uncertainty: bool) -> bool:
        """Raw outputs already in target units (statistics over members are taken there)."""
        return uncertainty

    def finish(self, raw: np.ndarray, request: OutputRequest = OutputRequest(), *, region=None):
        """The predictor's ``(K, *spatial)`` output -> what a user gets.

        Labels ``(*spatial)`` (uint8, uint16 above 256 classes) or with
        ``request.probabilities`` the class probabilities ``(K, *spatial)`` float32; for
        image tasks the output in the target's units, ``(*spatial)`` when K = 1. When the
        request asks for more (uncertainty, sets, masks): the dict of :meth:`outputs`.
        """
        if request.dict_output:
            return self.outputs(raw, request, region=region)
        raw = raw[: self.out_channels]
        if self.task.image_targets:
            return self._denormalize(raw, final=self._final_units(False))
        if request.probabilities:
            return raw.astype(np.float32)
        return raw.argmax(0).astype(label_dtype(raw.shape[0]))

    def outputs(self, raw: np.ndarray, request: OutputRequest = OutputRequest(), *,
                region=None) -> dict[str, np.ndarray]:
        """The arrays of a block: ``labels`` (+ float16 ``probabilities``), or ``prediction`` float32.

        ``raw`` is the predictor's output, ``(K, *S)``, or with ``request.statistics`` the
        ``(2K + 2, *S)`` statistics (``(2C, *S)`` for image tasks). With ``uncertainty`` also
        ``prob_mean`` and ``prob_std`` ``(K, *S)``, ``entropy`` and ``mutual_info`` ``(*S)``
        (float16); for image tasks ``prediction_std`` (float32). With ``sets`` the conformal
        set of every pixel as a bitmask ``sets`` (bit ``y`` for class ``y``) and its size
        ``set_size`` (uint8); with ``risk_mask`` the calibrated class mask ``risk_mask``
        (uint8); with ``lower_bound`` ``(K, *S)`` uint8. ``region`` (slices) says where
        ``raw`` lies in the whole image, for randomised set scores.
        """
        k = self.out_channels
        final = self._final_units(request.statistics)
        if self.task.image_targets:
            out = {"prediction": self._denormalize(raw[:k], final=final).astype(np.float32)}
            if request.uncertainty:
                std = raw[k:2 * k]
                out["prediction_std"] = (std[0] if k == 1 else std).astype(np.float32)
            return out
        mean = raw[:k]
        out = {"labels": mean.argmax(0).astype(label_dtype(k))}
        if request.probabilities:
            out["probabilities"] = mean.astype(np.float16)
        if request.uncertainty:
            out.update(prob_mean=mean.astype(np.float16), prob_std=raw[k:2 * k].astype(np.float16),
                       entropy=raw[2 * k].astype(np.float16), mutual_info=raw[2 * k + 1].astype(np.float16))
        if request.lower_bound is not None:
            import torch

            from ..infer.reducers import lower_bound_mask

            k_std, threshold = request.lower_bound
            mask = lower_bound_mask(torch.from_numpy(mean), torch.from_numpy(raw[k:2 * k]), k=k_std,
                                    threshold=threshold)
            out["lower_bound"] = mask.numpy().astype(np.uint8)
        if request.sets:
            out.update(self.prediction_sets(mean, region=region))
        if request.risk_mask:
            risk = self.risk()
            out["risk_mask"] = (mean[risk["class"]] >= 1.0 - risk["lambda"]).astype(np.uint8)
        return out

    def prediction_sets(self, probs: np.ndarray, *, region=None) -> dict[str, np.ndarray]:
        """``sets`` (bitmask) and ``set_size`` of class probabilities ``(K, *S)``, by the stored calibration.

        A randomised score draws each pixel's ``u`` from its global coordinates (``region``:
        where ``probs`` lies in the whole image), so blocks agree with the whole image.
        """
        from ..infer.conformal import pixel_uniforms, prediction_sets, set_bitmask

        c = self.conformal()
        options = dict(c.get("score_options", {}))
        if options.get("randomized"):
            options["uniforms"] = pixel_uniforms(probs.shape[1:], region=region, seed=int(c.get("seed", 0)))
        members = prediction_sets(probs, c["threshold"], score=c["score"], **options)
        return {"sets": set_bitmask(members), "set_size": members.sum(0).numpy().astype(np.uint8)}

    def output_arrays(self, request: OutputRequest = OutputRequest()) -> list:
        """The :class:`~mixscale.infer.store.ArraySpec` of every array :meth:`outputs` gives."""
        from ..infer.store import ArraySpec

        k = self.out_channels
        lead = () if k == 1 else (k,)
        if self.task.image_targets:
            specs = [ArraySpec("prediction", "float32", lead)]
            return specs + ([ArraySpec("prediction_std", "float32", lead)] if request.uncertainty else [])
        specs = [ArraySpec("labels", label_dtype(k))]
        if request.probabilities:
            specs.append(ArraySpec("probabilities", "float16", (k,)))
        if request.uncertainty:
            specs += [ArraySpec("prob_mean", "float16", (k,)), ArraySpec("prob_std", "float16", (k,)),
                      ArraySpec("entropy", "float16"), ArraySpec("mutual_info", "float16")]
        if request.lower_bound is not None:
            specs.append(ArraySpec("lower_bound", "uint8", (k,)))
        if request.sets:
            from ..infer.conformal import bitmask_dtype

            specs += [ArraySpec("sets", bitmask_dtype(k)), ArraySpec("set_size", "uint8")]
        if request.risk_mask:
            specs.append(ArraySpec("risk_mask", "uint8"))
        return specs

    def check_request(self, request: OutputRequest, *, tta: bool = False) -> None:
        """Refuse, before any work, what this model cannot give (a clear error naming the option)."""
        if (request.sets or request.risk_mask or request.lower_bound is not None) and not self.task.classes:
            raise ValueError(f"{self.source or 'the model'} is a {self.info.task} model: sets, risk masks and "
                             "lower-bound masks are of class probabilities (a segmentation model)")
        if request.sets:
            self.conformal()
        if request.risk_mask:
            self.risk()
        if request.statistics:
            self.predictor(tta=tta, uncertainty=True)

    def _denormalize(self, raw: np.ndarray, *, final: bool = False) -> np.ndarray:
        from ..data import Normalization, denormalize

        out = raw
        if self.info.target_normalization and not final:
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


def channel_affine(x, norm: dict | None, *, inverse: bool = False):
    """``x * std + mean`` per channel of a ``(B, C, *S)`` tensor, or with ``inverse``
    ``(x - mean) / std`` (normalising an input); identity without statistics.

    Statistics of ``c`` image channels apply to ``C = r * c`` stacked channels channel-major
    (2.5D: each channel's ``2k + 1`` slices, Noise2Inverse: each subset's), as in training."""
    if not norm:
        return x
    import torch

    given, channels = len(norm["mean"]), x.shape[1]
    if channels % given:
        raise ValueError(f"normalisation of {given} channel(s) cannot apply to an input of {channels} channels")
    shape = (1, -1) + (1,) * (x.ndim - 2)
    reps = channels // given
    mean = torch.tensor(norm["mean"], dtype=x.dtype, device=x.device).repeat_interleave(reps).view(shape)
    std = torch.tensor(norm["std"], dtype=x.dtype, device=x.device).repeat_interleave(reps).view(shape)
    return (x - mean) / std if inverse else x * std + mean


def noise2inverse_forward(net, batch, splits: int):
    """Noise2Inverse's X:1 prediction: the mean over ``j`` of ``net(mean of the subsets other than j)``.

    Parameters
    ----------
    net : callable
        ``(B, C, *S) -> (B, K', *S)``.
    batch : (B, splits * C, *S) Tensor
        The subset reconstructions, channel-major (subset ``i`` holds channels
        ``i * C .. i * C + C - 1``: its ``2k + 1`` slices for a 2.5D model).
    splits : int
        K, at least 2.

    Returns
    -------
    (B, K', *S) Tensor

    Examples
    --------
    >>> import torch
    >>> x = torch.arange(3.0).view(1, 3, 1, 1)  # three subsets, one channel each
    >>> noise2inverse_forward(lambda t: t ** 2, x, 3).item()  # ((1.5)^2 + 1^2 + 0.5^2) / 3
    1.1666666269302368
    """
    b, c = batch.shape[:2]
    if splits < 2 or c % splits:
        raise ValueError(f"Noise2Inverse needs splits >= 2 dividing the input's {c} channels; got splits={splits}")
    subsets = batch.view(b, splits, c // splits, *batch.shape[2:])
    total = subsets.sum(1)
    out = None
    for j in range(splits):
        y = net((total - subsets[:, j]) / (splits - 1))
        out = y if out is None else out + y
    return out / splits


def tempered_softmax(logits, temperature: float = 1.0):
    """Class probabilities ``softmax(z / T)`` over dim 1, in float32 (no division when T = 1)."""
    import torch

    z = logits.float()
    return torch.softmax(z if temperature == 1.0 else z / temperature, dim=1)


def member_statistics_predictor(members: list[Callable], *, tta: bool, classes: bool,
                                logit_members: bool = False, temperature: float = 1.0) -> Callable:
    """A predictor whose output is the statistics over ``members`` (times the 8 test-time transforms
    with ``tta``): ``(B, 2K + 2, *S)`` (mean, std, entropy, mutual information) for class tasks,
    ``(B, 2C, *S)`` (mean, std) otherwise. Memory does not grow with the number of members.

    With ``logit_members`` the members give logits: the spread, entropy and mutual information
    are still those of their probabilities ``softmax(z / T)``, but the mean channels are
    ``softmax(mean z / T)``, the mean of logits."""
    import torch

    from ..infer.tta import augmented_outputs
    from ..infer.reducers import MemberStatistics

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        stats, logits = MemberStatistics(class_dim=1), MemberStatistics(class_dim=1)
        for member in members:
            for y in (augmented_outputs(member, batch) if tta else (member(batch),)):
                if logit_members:
                    logits.update(y, probabilities=False)
                    y = tempered_softmax(y, temperature)
                stats.update(y, probabilities=classes)
        mean = torch.softmax(logits.mean / temperature, dim=1) if logit_members else stats.mean
        parts = [mean, stats.std()]
        if classes:
            parts += [stats.entropy()[:, None], stats.mutual_information()[:, None]]
        return torch.cat(parts, dim=1).float()

    return predictor


def warn_if_not_tile_exact(net: nn.Module) -> bool:
    """See :meth:`Model.warn_if_not_tile_exact`."""
    kinds = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm)
    found = sorted({type(m).__name__ for m in net.modules() if isinstance(m, kinds)})
    if found:
        logger.warning("the network uses %s, which normalises over the whole input: tiled or block-wise "
                       "results can differ from whole-image prediction (train with norm='batch' or None for "
                       "tile-exact results)", ", ".join(found))
    return bool(found)
