"""Model: one object for checking, preparing, running and finishing, against hand-computed references."""

import numpy as np
import pytest
import torch

from mixscale.model import Model, ModelInfo, cached_model, label_dtype, save_model
from mixscale.nets import create_net
from mixscale.request import OutputRequest


def _model(task="segmentation", *, in_channels=1, out_channels=3, context_slices=0, spatial_dims=2, **info):
    torch.manual_seed(0)
    net = create_net("msd", depth=2, spatial_dims=spatial_dims, in_channels=in_channels,
                     out_channels=out_channels).eval()
    meta = ModelInfo(net_name="msd", net_config=net.config(), task=task, context_slices=context_slices, **info)
    return Model(net, meta, source="m.safetensors")


def test_prepare_puts_channels_first_and_applies_the_training_normalisation():
    model = _model(in_channels=2, normalization={"mean": [1.0, -2.0], "std": [2.0, 4.0]})
    image = np.random.default_rng(0).normal(size=(9, 7, 2)).astype(np.float32)
    x = model.prepare(image, channel_axis=-1)
    ref = (np.moveaxis(image.astype(np.float64), -1, 0) - np.array([1.0, -2.0])[:, None, None]) / \
        np.array([2.0, 4.0])[:, None, None]
    assert x.dtype == np.float32 and x.shape == (2, 9, 7)
    np.testing.assert_allclose(x, ref, rtol=1e-6)


@pytest.mark.parametrize("shape, kwargs, match", [
    ((9, 7), {"channel_axis": 0}, "has 9 channels on axis 0; the model expects 1"),
    ((4, 9, 7), {}, "pass slice_axis=0"),
    ((4, 9, 7), {"slice_axis": 3}, "got slice_axis=3"),
    ((2, 3, 4, 5), {}, "is 4D but the model is 2D"),
    ((9, 7), {"channel_axis": 4}, "channel_axis=4 is out of range"),
])
def test_layout_names_what_does_not_fit(shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _model().layout(shape, **kwargs)


def test_layout_of_a_2_5d_model_counts_image_channels_and_needs_a_volume():
    model = _model(in_channels=3, context_slices=1)
    assert model.image_channels == 1
    layout = model.layout((5, 9, 7), slice_axis=-1)
    assert (layout.spatial_shape, layout.slice_axis, layout.channel_axis) == ((5, 9, 7), 2, None)
    with pytest.raises(ValueError, match="1 context slices on each side"):
        model.layout((9, 7))


def test_nan_input_is_refused():
    with pytest.raises(ValueError, match="NaN or infinite"):
        _model().prepare(np.array([[0.0, np.nan], [1.0, 2.0]]))


def test_segmentation_predictor_gives_probabilities_and_finish_gives_labels():
    model = _model()
    x = model.prepare(np.random.default_rng(1).normal(size=(8, 6)).astype(np.float32))
    with torch.no_grad():
        logits = model.net(torch.from_numpy(x)[None])[0].double().numpy()
    probs = model.run(x)
    ref = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
    np.testing.assert_allclose(probs, ref, atol=1e-6)
    assert np.array_equal(model.finish(probs), ref.argmax(0)) and model.finish(probs).dtype == np.uint8
    outputs = model.outputs(probs, OutputRequest(probabilities=True))
    assert set(outputs) == {"labels", "probabilities"} and outputs["probabilities"].dtype == np.float16
    assert [(a.name, a.dtype) for a in model.output_arrays(OutputRequest(probabilities=True))] == [
        ("labels", "uint8"), ("probabilities", "float16")]


def test_regression_output_is_denormalised_and_squeezed():
    model = _model("regression", out_channels=1, target_normalization={"mean": [10.0], "std": [3.0]})
    raw = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    np.testing.assert_allclose(model.finish(raw), raw[0] * 3.0 + 10.0)
    assert model.outputs(raw)["prediction"].dtype == np.float32
    assert [(a.name, a.dtype, a.lead) for a in model.output_arrays()] == [("prediction", "float32", ())]


def test_label_dtype_grows_above_256_classes():
    assert (label_dtype(2), label_dtype(256), label_dtype(257)) == ("uint8", "uint8", "uint16")


def test_require_points_each_kind_of_model_to_its_use():
    with pytest.raises(ValueError, match="m.safetensors is a segmentation model; detect needs"):
        _model().require(per_patch=True, use="detect")
    _model().require(per_patch=False, use="predict")  # the right kind passes


def test_cached_model_loads_once_per_process_without_gradients(tmp_path):
    model = _model()
    path = str(save_model(tmp_path / "m.safetensors", model.net, model.info))
    a, b = cached_model(path, "cpu"), cached_model(path, "cpu")
    assert a is b and not any(p.requires_grad for p in a.net.parameters())
    assert a.halo == model.net.halo and a.info == model.info
