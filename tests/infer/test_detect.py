"""Detection: score map by sliding patches, peak picking, one-to-one point matching, and a tiny blob finder."""

import itertools

import numpy as np
import pytest
import torch

from mixscale.infer import detect_points, detection_map, find_peaks, match_points


def _probe(patches):
    """A known 'classifier': logits (sum of the patch, its centre pixel, its first pixel)."""
    c = tuple(s // 2 for s in patches.shape[2:])
    first = (0,) * (patches.ndim - 2)
    return torch.stack([patches.sum(tuple(range(1, patches.ndim))), patches[(slice(None), 0) + c],
                        patches[(slice(None), 0) + first]], 1)


def _reference(image, patch):
    """The same scores with numpy: reflect-pad, then cut the window around every pixel."""
    lo = [p // 2 for p in patch]
    padded = np.pad(image, [(0, 0)] + [(a, p - 1 - a) for a, p in zip(lo, patch)], mode="reflect")
    out = np.zeros((3,) + image.shape[1:])
    for idx in itertools.product(*[range(s) for s in image.shape[1:]]):
        win = padded[(slice(None),) + tuple(slice(i, i + p) for i, p in zip(idx, patch))]
        out[(slice(None),) + idx] = [win.sum(), win[(0,) + tuple(lo)], win[(0,) + (0,) * len(patch)]]
    return out


@pytest.mark.parametrize("shape, patch", [((2, 9, 11), (5, 4)), ((1, 6, 7, 5), (3, 4, 5))])
def test_detection_map_equals_patch_by_patch_reference_for_any_batch_size(shape, patch):
    image = torch.randn(*shape, dtype=torch.float64)
    ref = _reference(image.numpy(), patch)
    for batch_size in (1, 7, 10_000):
        got = detection_map(_probe, image, patch, batch_size=batch_size, softmax=False)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-4)
    prob = detection_map(_probe, image, patch)
    np.testing.assert_allclose(prob.sum(0).numpy(), 1.0, rtol=1e-6)
    assert prob.shape == (3,) + shape[1:]


def test_detection_map_with_stride_is_the_subsampled_full_map():
    image = torch.randn(1, 13, 10)
    full = detection_map(_probe, image, 5, softmax=False)
    coarse = detection_map(_probe, image, 5, stride=(3, 4), softmax=False)
    assert coarse.shape == (3, 5, 3)
    torch.testing.assert_close(coarse, full[:, ::3, ::4])


def test_detection_map_matches_the_classifier_dense_logits():
    from mixscale.nets import PatchClassifier

    torch.manual_seed(0)
    net = PatchClassifier(patch_shape=(11, 10), base_channels=3, hidden_channels=4, out_channels=3).eval()
    image = torch.randn(1, 17, 14)
    with torch.no_grad():
        dense = net.dense_logits(image[None])[0]
    torch.testing.assert_close(detection_map(net, image, (11, 10), batch_size=50, softmax=False), dense,
                               rtol=1e-4, atol=1e-5)


def test_detect_points_returns_pixel_coordinates_also_with_a_stride():
    image = torch.zeros(1, 20, 17)
    image[0, 4, 6], image[0, 12, 14] = 5.0, 3.0
    bright = lambda p: torch.stack([torch.zeros(len(p)), p[:, 0, 2, 2] - 1], 1)  # noqa: E731
    found = detect_points(bright, image, 5, threshold=0.5, min_distance=2)
    assert found.tolist() == [[4, 6], [12, 14]]
    assert detect_points(bright, image, 5, threshold=0.5, stride=2).tolist() == [[4, 6], [12, 14]]
    assert detect_points(bright, image, 5, threshold=0.9).tolist() == [[4, 6]]  # softmax: 0.98 and 0.88


def test_find_peaks_hand_cases():
    h = np.zeros((9, 9))
    h[2, 2], h[2, 3], h[6, 6], h[6, 8], h[0, 8] = 0.9, 0.9, 0.8, 0.7, 0.4  # a plateau, a close pair, a weak one
    assert find_peaks(h, threshold=0.5, min_distance=1).tolist() == [[2, 2], [6, 6], [6, 8]]
    assert find_peaks(h, threshold=0.5, min_distance=2).tolist() == [[2, 2], [6, 6]]
    assert find_peaks(h, threshold=0.3, min_distance=0).tolist() == [[2, 2], [2, 3], [6, 6], [6, 8], [0, 8]]
    assert find_peaks(torch.from_numpy(h), threshold=0.95).shape == (0, 2)
    assert find_peaks(np.pad(np.ones((1, 1, 1)), 2), threshold=0.5).tolist() == [[2, 2, 2]]


def test_find_peaks_agrees_with_skimage_on_smooth_random_maps():
    from scipy.ndimage import gaussian_filter
    from skimage.feature import peak_local_max

    rng = np.random.default_rng(0)
    for dist in (1, 3, 5):
        heat = gaussian_filter(rng.random((60, 50)), 1.5)
        ours = find_peaks(heat, threshold=float(np.quantile(heat, 0.6)), min_distance=dist)
        theirs = peak_local_max(heat, min_distance=dist, threshold_abs=float(np.quantile(heat, 0.6)),
                                exclude_border=False)
        assert len(ours) > 3
        assert {tuple(p) for p in ours} == {tuple(p) for p in theirs}


def test_match_points_hand_cases_and_optimal_matching():
    r = match_points([[0, 0], [10, 10], [20, 20]], [[0, 2], [11, 11], [40, 40], [50, 50]], max_distance=2)
    assert (r["tp"], r["fp"], r["fn"]) == (2, 1, 2)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == 0.5 and r["f1"] == pytest.approx(4 / 7)
    assert sorted(map(tuple, r["pairs"].tolist())) == [(0, 0), (1, 1)]
    # greedy nearest-first would pair A with X (distance 1) and leave B alone; one-to-one optimum pairs both
    r = match_points([[0, 0], [3, 0]], [[1, 0], [-1.5, 0]], max_distance=2)
    assert r["tp"] == 2 and sorted(map(tuple, r["pairs"].tolist())) == [(0, 1), (1, 0)]
    r = match_points([[0, 0], [0, 1]], [[0, 0.5]], max_distance=1)  # two detections, one object: one TP
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 0)
    assert match_points([[0, 0, 0]], [[0, 0, 3]], max_distance=3)["tp"] == 1  # the bound is inclusive, 3D


def test_match_points_empty_sets():
    none = np.zeros((0, 2))
    r = match_points(none, [[1, 2]], max_distance=3)
    assert (r["tp"], r["fp"], r["fn"], r["precision"], r["recall"], r["f1"]) == (0, 0, 1, 1.0, 0.0, 0.0)
    r = match_points([[1, 2]], [], max_distance=3)
    assert (r["fp"], r["precision"], r["recall"], r["f1"]) == (1, 0.0, 1.0, 0.0)
    assert match_points([], [], max_distance=3)["f1"] == 1.0


def test_errors_are_named():
    with pytest.raises(ValueError, match="max_distance=0 is not allowed; expected a finite number > 0"):
        match_points([[0, 0]], [[0, 0]], max_distance=0)
    with pytest.raises(ValueError, match="pred has 2 coordinates per point but true has 3"):
        match_points([[0, 0]], [[0, 0, 0]], max_distance=1)
    with pytest.raises(ValueError, match="min_distance=-1 is not allowed; expected a finite number >= 0"):
        find_peaks(np.zeros((3, 3)), threshold=0.5, min_distance=-1)
    with pytest.raises(ValueError, match="stride=0 is not allowed; expected 2 integers >= 1"):
        detection_map(_probe, torch.zeros(1, 5, 5), 3, stride=0)
    with pytest.raises(ValueError, match=r"patch_shape=\(3, 3, 3\) is not allowed; expected 2 integers >= 1"):
        detection_map(_probe, torch.zeros(1, 5, 5), (3, 3, 3))
    with pytest.raises(ValueError, match=r"image of shape \(5, 5\)"):
        detection_map(_probe, torch.zeros(5, 5), 3)
    with pytest.raises(ValueError, match="expected \\(batch, classes\\) logits"):
        detection_map(lambda p: p, torch.zeros(1, 5, 5), 3)
    with pytest.raises(ValueError, match=r"class_index=3 is not allowed; expected an integer in \[0, 2\]"):
        detect_points(_probe, torch.zeros(1, 5, 5), 3, class_index=3)


def _blob_image(rng, size, count, noise):
    yy, xx = np.mgrid[:size, :size]
    centres = []
    while len(centres) < count:
        c = rng.uniform(4, size - 4, 2)
        if all(np.hypot(*(c - d)) > 10 for d in centres):
            centres.append(c)
    img = sum(np.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / 8.0) for c in centres)
    return (img + rng.normal(0, noise, img.shape)).astype(np.float32), np.array(centres)


def test_a_small_classifier_finds_blobs_in_a_noisy_held_out_image():
    from mixscale.data import PointPatchDataset
    from mixscale.nets import PatchClassifier

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train_img, train_pts = _blob_image(rng, 64, 12, 0.3)
    test_img, test_pts = _blob_image(rng, 64, 12, 0.3)
    net = PatchClassifier(patch_shape=11, base_channels=4, hidden_channels=8)
    data = PointPatchDataset(train_img, [train_pts], (11, 11), background_per_point=8, min_background_distance=3,
                             augment=True, class_balance=False)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for epoch in range(12):
        data.set_epoch(epoch)
        for x, y in torch.utils.data.DataLoader(data, batch_size=36, shuffle=True):
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    found = detect_points(net, torch.from_numpy(test_img)[None], 11, threshold=0.5, min_distance=3)
    r = match_points(found, test_pts, max_distance=3)
    assert r["precision"] >= 0.8 and r["recall"] >= 0.8, r
