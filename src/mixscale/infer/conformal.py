"""Split conformal prediction sets and conformal risk control, as small pure-tensor functions.

Nothing here knows networks or files: scores come from class probabilities
``(K, *spatial)`` (or ``(N, K)``), so the same functions run on a whole image, on a
zarr block or on any callable's output.

- Scores (lower = more conforming): ``lac`` (``1 - p_y``), ``aps`` (the mass of the
  classes at least as likely as ``y``; randomised or not), ``raps`` (APS plus a rank
  penalty).
- :func:`conformal_quantile`: the exact ``k``-th smallest calibration score,
  ``k = ceil((n + 1)(1 - alpha))``; ``+inf`` (every class in every set) with a warning
  when ``k > n``, never an error and never a level above 1.
- :func:`prediction_sets`: ``{y : s(x, y) <= q}``; ``<=``, so ties (such as the
  saturated ``p_y = 1.0`` of float32 softmax, where LAC scores are exactly 0) keep
  their coverage instead of giving empty sets.
- :func:`risk_control_threshold`: conformal risk control (Angelopoulos et al. 2022)
  for the false-negative rate of a class mask.

Examples
--------
>>> import torch
>>> q = conformal_quantile(torch.tensor([0.1, 0.4, 0.2, 0.3], dtype=torch.float64), alpha=0.25)  # k = 4
>>> float(q)
0.4
>>> probs = torch.tensor([[0.7, 0.1], [0.2, 0.5], [0.1, 0.4]])  # (K=3, 2 pixels)
>>> prediction_sets(probs, q, score="lac").T.tolist()          # 1 - p <= 0.4 -> p >= 0.6
[[True, False, False], [False, False, False]]
"""

from __future__ import annotations

import math
import warnings

import torch

from .._checks import check_choice, check_float, check_int, not_allowed

SCORES = ("lac", "aps", "raps")


class ConformalWarning(UserWarning):
    """Too few calibration points for the asked-for level: the guarantee holds only trivially."""


def check_alpha(alpha) -> float:
    """``alpha`` in the open interval (0, 1)."""
    value = check_float("alpha", alpha)
    if not 0 < value < 1:
        raise not_allowed("alpha", alpha, "a miscoverage level in (0, 1), e.g. 0.1")
    return value


def quantile_rank(n: int, alpha: float) -> int:
    """``k = ceil((n + 1)(1 - alpha))``, computed so that float rounding cannot add one.

    Examples
    --------
    >>> quantile_rank(9, 0.1)  # (9 + 1) * 0.9 is 9.000000000000002 in floats; k is 9
    9
    """
    check_int("n", n, minimum=0)
    alpha = check_alpha(alpha)
    return math.ceil(round((n + 1) * (1 - alpha), 9))


def conformal_quantile(scores, alpha: float) -> torch.Tensor:
    """The split-conformal threshold of calibration ``scores``: their ``k``-th smallest value.

    Parameters
    ----------
    scores : (n,) tensor
        Non-conformity scores of the true labels of the calibration points.
    alpha : float in (0, 1)
        Target miscoverage: sets cover the truth with probability >= 1 - alpha.

    Returns
    -------
    0-d float64 tensor
        ``sorted(scores)[k - 1]`` with ``k = ceil((n + 1)(1 - alpha))``, or ``+inf`` when ``k > n``
        (a :class:`ConformalWarning` says that every set is then every class).
    """
    s = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    if torch.isnan(s).any():
        raise ValueError("scores hold NaN values")
    n = int(s.numel())
    k = quantile_rank(n, alpha)
    if k > n:
        warnings.warn(f"{n} calibration points are too few for alpha={alpha}: it needs at least "
                      f"{math.ceil(1 / alpha - 1)}; the threshold is +inf (every class in every set)",
                      ConformalWarning, stacklevel=2)
        return torch.tensor(math.inf, dtype=torch.float64)
    return torch.kthvalue(s, k).values


def _classes_first(probs) -> torch.Tensor:
    p = torch.as_tensor(probs)
    if p.ndim < 1:
        raise ValueError(f"probs must be (K, *spatial), got shape {tuple(p.shape)}")
    return p.to(torch.float64)


def check_score_options(score: str, options: dict) -> None:
    """Only APS and RAPS are randomised: ``randomized=True`` with LAC is refused, naming it."""
    if options.get("randomized") and score == "lac":
        raise not_allowed("randomized", True, "False for score='lac' (only aps and raps are randomised)")


def pixel_uniforms(shape, *, region=None, seed: int = 0) -> torch.Tensor:
    """One U[0, 1) number per pixel, a hash of the pixel's global coordinates and ``seed``: ``shape`` float64.

    Randomised scores at prediction time draw their ``u`` here, so a block, a tile or a
    slice gets the numbers the whole image would give at the same pixels (block-wise
    prediction equals in-memory prediction, and a resumed store equals a fresh one).

    Parameters
    ----------
    shape : tuple of int
        Spatial shape of the array the numbers are for.
    region : tuple of slice, optional
        Where that array lies in the whole image (default: at the origin). It may have
        more axes than ``shape`` when the extra ones have length 1 (one slice of a volume).
    seed : int

    Examples
    --------
    >>> whole = pixel_uniforms((4, 5), seed=3)
    >>> part = pixel_uniforms((2, 2), region=(slice(1, 3), slice(2, 4)), seed=3)
    >>> bool(torch.equal(whole[1:3, 2:4], part))
    True
    """
    import numpy as np

    shape = tuple(int(v) for v in shape)
    region = tuple(slice(0, n) for n in shape) if region is None else tuple(region)
    lengths = tuple(r.stop - r.start for r in region)
    if tuple(v for v in lengths if v != 1) != tuple(v for v in shape if v != 1):
        raise ValueError(f"region {region} does not hold an array of shape {shape}")
    h = np.full((1,) * len(region), np.uint64(check_int("seed", seed, minimum=0)), dtype=np.uint64)
    for axis, r in enumerate(region):  # one coordinate axis at a time, broadcast: no full index grids
        coordinate = np.arange(r.start, r.stop, dtype=np.uint64).reshape([-1 if i == axis else 1
                                                                            for i in range(len(region))])
        h = _splitmix64(h ^ coordinate)
    return torch.from_numpy(((h >> np.uint64(11)).astype(np.float64) * 2.0 ** -53).reshape(shape))


def _splitmix64(x):
    """The SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    import numpy as np

    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def class_scores(probs, *, score: str = "lac", generator: torch.Generator | None = None,
                 randomized: bool = False, lam: float = 0.01, k_reg: int = 1,
                 uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """The score ``s(x, y)`` of every class ``y`` at every pixel: ``(K, *spatial)`` float64.

    Parameters
    ----------
    probs : (K, *spatial) tensor
        Class probabilities.
    score : {"lac", "aps", "raps"}
    randomized : bool
        APS/RAPS: subtract ``u * p_y`` with ``u ~ U(0, 1)`` (exact coverage instead of at least).
    generator : torch.Generator, optional
        For the randomisation (when ``uniforms`` is not given).
    uniforms : (*spatial) tensor, optional
        The ``u`` of every pixel (for example :func:`pixel_uniforms`).
    lam, k_reg : float, int
        RAPS: penalty ``lam * max(0, rank(y) - k_reg)``, ``rank`` 1 for the most likely class.
    """
    check_choice("score", score, SCORES)
    p = _classes_first(probs)
    if score == "lac":
        check_score_options(score, {"randomized": randomized})
        return 1.0 - p
    order = torch.argsort(p, dim=0, descending=True, stable=True)
    sorted_p = torch.gather(p, 0, order)
    cumulative = torch.cumsum(sorted_p, dim=0)
    s = torch.empty_like(p).scatter_(0, order, cumulative)  # mass of classes ranked up to y, y included
    if randomized:
        u = (torch.rand(p.shape[1:], generator=generator, dtype=torch.float64) if uniforms is None
             else torch.as_tensor(uniforms, dtype=torch.float64))
        if tuple(u.shape) != tuple(p.shape[1:]):
            raise ValueError(f"uniforms of shape {tuple(u.shape)} do not match probs of shape {tuple(p.shape)}")
        s = s - u * p
    if score == "raps":
        check_float("lam", lam, minimum=0)
        check_int("k_reg", k_reg, minimum=0)
        rank = torch.empty_like(order).scatter_(0, order, torch.arange(1, p.shape[0] + 1).view(
            -1, *(1,) * (p.ndim - 1)).expand_as(order).contiguous())
        s = s + lam * torch.clamp(rank.to(torch.float64) - k_reg, min=0)
    return s


def true_class_scores(probs, target, *, ignore_index: int = -1, **score_options) -> torch.Tensor:
    """Scores of the true labels at the labelled pixels: ``(n,)`` float64 (unlabelled pixels skipped)."""
    scores = class_scores(probs, **score_options)
    t = torch.as_tensor(target).to(torch.int64)
    if tuple(t.shape) != tuple(scores.shape[1:]):
        raise ValueError(f"target of shape {tuple(t.shape)} does not match probs of shape {tuple(scores.shape)}")
    keep = t != ignore_index
    labels = t[keep]
    if labels.numel() and (labels.min() < 0 or labels.max() >= scores.shape[0]):
        raise ValueError(f"target holds labels outside 0..{scores.shape[0] - 1} (ignore_index={ignore_index})")
    return scores.movedim(0, -1)[keep].gather(1, labels[:, None])[:, 0]


def prediction_sets(probs, threshold, *, score: str = "lac", **score_options) -> torch.Tensor:
    """``(K, *spatial)`` bool: class ``y`` is in the set where ``s(x, y) <= threshold``.

    ``threshold`` is one value, or ``(K,)`` values (class-conditional calibration).
    """
    scores = class_scores(probs, score=score, **score_options)
    q = torch.as_tensor(threshold, dtype=torch.float64)
    if q.ndim == 1:
        q = q.view(-1, *(1,) * (scores.ndim - 1))
    return scores <= q


def set_bitmask(sets) -> "np.ndarray":
    """``(K, *spatial)`` bool -> ``(*spatial)`` NumPy bitmask (bit ``y`` set when ``y`` is in the set):
    uint8 up to 8 classes, uint16 up to 16, uint32 up to 32."""
    import numpy as np

    sets = torch.as_tensor(sets)
    k = sets.shape[0]
    if k > 32:
        raise ValueError(f"a set bitmask holds at most 32 classes, got {k}")
    dtype = np.uint8 if k <= 8 else (np.uint16 if k <= 16 else np.uint32)
    weights = (2 ** torch.arange(k, dtype=torch.int64)).view(-1, *(1,) * (sets.ndim - 1))
    return (sets.to(torch.int64) * weights).sum(0).numpy().astype(dtype)


def bitmask_dtype(classes: int) -> str:
    """The dtype name :func:`set_bitmask` gives for ``classes`` classes."""
    return "uint8" if classes <= 8 else ("uint16" if classes <= 16 else "uint32")


def class_conditional_quantiles(scores, labels, *, num_classes: int, alpha: float,
                                min_count: int = 1) -> torch.Tensor:
    """Mondrian calibration: one threshold per class from the scores of the pixels of that class.

    A class with fewer than ``min_count`` calibration pixels gets ``+inf`` (always in the
    set) with a :class:`ConformalWarning` naming it.

    Returns
    -------
    (num_classes,) float64 tensor
    """
    check_int("min_count", min_count, minimum=1)
    s, y = torch.as_tensor(scores, dtype=torch.float64), torch.as_tensor(labels).to(torch.int64)
    out = torch.full((num_classes,), math.inf, dtype=torch.float64)
    for c in range(num_classes):
        mine = s[y == c]
        if mine.numel() < min_count:
            warnings.warn(f"class {c} has {mine.numel()} calibration pixels (< min_count={min_count}): "
                          "its threshold is +inf (always in the set)", ConformalWarning, stacklevel=2)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConformalWarning)
            out[c] = conformal_quantile(mine, alpha)
        if math.isinf(out[c]):
            warnings.warn(f"class {c}: {mine.numel()} calibration pixels are too few for alpha={alpha}; "
                          "its threshold is +inf", ConformalWarning, stacklevel=2)
    return out


def risk_control_threshold(class_probs, masks, *, alpha: float, bound: float = 1.0) -> float:
    """Conformal risk control of the false-negative rate of a class mask ``{p >= 1 - lambda}``.

    For calibration images ``i = 1..n`` with class probability maps ``p_i`` and true
    masks ``m_i``, the loss ``FNR_i(lambda) = 1 - |{p_i >= 1 - lambda} & m_i| / |m_i|`` (0
    for an image without true pixels) is non-increasing in ``lambda`` and bounded by
    ``bound`` = 1, so ``lambda_hat = inf{lambda : n/(n+1) R_n(lambda) + B/(n+1) <= alpha}``
    gives ``E[FNR] <= alpha`` on a new exchangeable image.

    Parameters
    ----------
    class_probs : sequence of tensors
        ``p_i``, one per image or tile, any shape.
    masks : sequence of bool tensors
        ``m_i``, same shapes.
    alpha : float in (0, 1)
    bound : float
        ``B``, the largest loss (1 for a rate).

    Returns
    -------
    float
        ``lambda_hat`` in [0, 1]; 1.0 (the whole image in the mask) with a
        :class:`ConformalWarning` when even that cannot meet ``alpha`` (``n < B / alpha - 1``).
    """
    alpha = check_alpha(alpha)
    n = len(class_probs)
    if n != len(masks) or n == 0:
        raise ValueError(f"risk control needs as many masks as probability maps (and at least one), got "
                         f"{n} and {len(masks)}")
    losses_scores, weights, empty = [], [], 0
    for p, m in zip(class_probs, masks):
        p, m = torch.as_tensor(p, dtype=torch.float64), torch.as_tensor(m, dtype=torch.bool)
        if p.shape != m.shape:
            raise ValueError(f"a probability map of shape {tuple(p.shape)} has a mask of shape {tuple(m.shape)}")
        true = p[m]
        if true.numel() == 0:
            empty += 1
            continue
        losses_scores.append(1.0 - true)  # a true pixel is found once lambda >= 1 - p
        weights.append(torch.full_like(true, 1.0 / true.numel()))
    if bound / (n + 1) > alpha:  # even lambda = 1 (risk 0) cannot meet alpha
        warnings.warn(f"{n} calibration images are too few for alpha={alpha} (risk control needs "
                      f"n >= {math.ceil(bound / alpha - 1)}): lambda is 1, the whole image", ConformalWarning,
                      stacklevel=2)
        return 1.0
    if not losses_scores:
        return 0.0
    s, w = torch.cat(losses_scores), torch.cat(weights)
    order = torch.argsort(s, stable=True)
    s, found = s[order], torch.cumsum(w[order], 0)
    last_of_ties = torch.ones_like(s, dtype=torch.bool)
    last_of_ties[:-1] = s[1:] != s[:-1]
    risk_zero = 1.0 - empty / n  # R_n(lambda) below every score: every true pixel missed
    risk = 1.0 - (empty + found) / n  # R_n at lambda = s_j (ties resolved at their last index)
    ok = (n / (n + 1) * risk + bound / (n + 1) <= alpha) & last_of_ties
    if n / (n + 1) * risk_zero + bound / (n + 1) <= alpha:
        return 0.0
    return float(s[ok][0]) if ok.any() else 1.0
