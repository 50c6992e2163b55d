"""Total-variation denoising against scikit-image's ``denoise_tv_chambolle`` (the same ROF model)."""

import numpy as np
import pytest
import torch

from mixscale.tomo.tv import denoise_tv

restoration = pytest.importorskip("skimage.restoration")


def _noisy_squares():
    rng = np.random.default_rng(0)
    f = np.zeros((48, 48))
    f[12:36, 12:36] = 1
    f[18:30, 6:22] = 0.5
    return f + rng.normal(0, 0.2, f.shape)


@pytest.mark.parametrize("weight", [0.05, 0.3])
def test_equals_scikit_image_at_convergence(weight):
    f = _noisy_squares()
    ref = restoration.denoise_tv_chambolle(f, weight=weight, eps=1e-12, max_num_iter=3000)
    ours = denoise_tv(torch.from_numpy(f), weight, iterations=3000, tol=0).numpy()
    assert np.abs(ours - ref).max() < 1e-4  # measured: 3e-8 (0.05) and 2e-5 (0.3) after 3000 steps


def test_batched_like_slice_by_slice_and_lowers_the_error():
    f = torch.from_numpy(np.stack([_noisy_squares(), _noisy_squares()[::-1].copy()])).float()
    both = denoise_tv(f, 0.1, iterations=100, tol=0)
    assert torch.allclose(both[1], denoise_tv(f[1], 0.1, iterations=100, tol=0), atol=1e-6)
    clean = np.zeros((48, 48))
    clean[12:36, 12:36] = 1
    clean[18:30, 6:22] = 0.5
    assert np.abs(both[0].numpy() - clean).mean() < 0.5 * np.abs(f[0].numpy() - clean).mean()


@pytest.mark.parametrize("weight", [0, -1, float("nan")])
def test_a_weight_that_is_not_positive_is_refused(weight):
    with pytest.raises(ValueError, match="weight=.* is not allowed; expected a finite number > 0"):
        denoise_tv(torch.zeros(4, 4), weight)
