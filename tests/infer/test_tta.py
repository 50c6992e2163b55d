"""Test-time augmentation against a naive numpy reference."""

import itertools

import numpy as np
import pytest
import torch

from mixscale.infer.tta import TestTimeAugmentation


def _conv(spatial_dims):
    torch.manual_seed(0)
    conv = (torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d)(2, 3, 3, padding=1).double()
    return lambda x: conv(x).detach()


def _reference(f, x: np.ndarray) -> np.ndarray:
    """Average of inverse-transformed outputs over explicit numpy transforms."""
    outs = []
    if x.ndim == 4:
        for k in range(4):
            for flip in (False, True):
                t = np.rot90(x[..., ::-1] if flip else x, k, axes=(2, 3))
                y = np.rot90(f(torch.from_numpy(t.copy())).numpy(), -k, axes=(2, 3))
                outs.append(y[..., ::-1] if flip else y)
    else:
        for bits in itertools.product((0, 1), repeat=3):
            axes = tuple(a for a, b in zip((2, 3, 4), bits) if b)
            t = np.flip(x, axes) if axes else x
            y = f(torch.from_numpy(t.copy())).numpy()
            outs.append(np.flip(y, axes) if axes else y)
    assert len(outs) == 8
    return np.mean(outs, axis=0)


@pytest.mark.parametrize("shape", [(2, 2, 7, 5), (1, 2, 5, 6, 7)])
def test_tta_matches_explicit_transforms(shape):
    f = _conv(len(shape) - 2)
    x = torch.randn(*shape, dtype=torch.float64)
    got = TestTimeAugmentation(f)(x).double().numpy()
    np.testing.assert_allclose(got, _reference(f, x.numpy()), rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, f(x).numpy(), atol=1e-3)  # the conv is not symmetric: TTA changes it


@pytest.mark.parametrize("shape", [(1, 1, 9, 4), (2, 1, 3, 4, 5)])
def test_tta_of_pointwise_predictor_is_exact(shape):
    x = torch.randn(*shape)
    assert torch.equal(TestTimeAugmentation(lambda t: 2 * t)(x), 2 * x)


def test_tta_errors():
    with pytest.raises(TypeError, match="callable"):
        TestTimeAugmentation(3)
    with pytest.raises(ValueError, match="expected"):
        TestTimeAugmentation(lambda t: t)(torch.zeros(3, 4))
