"""Whole-image and slice-by-slice prediction reproduce a known predictor exactly."""

import numpy as np
import pytest
import torch

from mixscale.infer import predict_slices, predict_whole


def _double_and_sum(x):  # point-wise in space: channel 0 = 2 x, channel 1 = x summed over input channels
    return torch.cat([2 * x[:, :1], x.sum(1, keepdim=True)], 1)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_slices_along_any_axis_match_reference(axis, batch_size):
    vol = np.random.default_rng(0).normal(size=(2, 5, 7, 6)).astype(np.float32)
    out = predict_slices(_double_and_sum, vol, slice_axis=axis, batch_size=batch_size)
    np.testing.assert_array_equal(out[0], 2 * vol[0])
    np.testing.assert_allclose(out[1], vol.sum(0), rtol=1e-6)


def test_slices_see_2d_inputs_only():
    seen = []

    def spy(x):
        seen.append(tuple(x.shape))
        return x

    predict_slices(spy, np.zeros((1, 4, 6, 5), np.float32), slice_axis=1, batch_size=4)
    assert seen == [(4, 1, 4, 5), (2, 1, 4, 5)]


def test_whole_image():
    img = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(predict_whole(_double_and_sum, img)[0], 2 * img[0])


def test_bad_axis_and_batch():
    with pytest.raises(ValueError, match="slice_axis=3 is not allowed"):
        predict_slices(_double_and_sum, np.zeros((1, 2, 2, 2), np.float32), slice_axis=3)
    with pytest.raises(ValueError, match="batch_size=0"):
        predict_slices(_double_and_sum, np.zeros((1, 2, 2, 2), np.float32), slice_axis=0, batch_size=0)
