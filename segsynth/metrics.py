"""Mask quality metrics: per-sample statistics first, reductions later.

Every metric takes one prediction and one truth of the same ``(H, W)`` shape:

- ``pred``: ``float32``/``float64`` in 0..1 (a soft mask), or ``uint8`` 0..255 (divided by 255);
- ``gt``: ``uint8`` 0..255, ``bool``, or float 0..1. Truth is binarised at half its range
  (``gt >= 128`` for uint8, ``gt > 0.5`` for floats): the evaluation sets hold binary masks.

    row = sample_metrics(pred, gt)           # {"ssim_box": 0.91, "iou": 0.95, ...}
    table = [ {...row, "model": m, "category": c} for ... ]
    summarize(table, by=["model"])            # mean and 95% interval per metric and group

Per-sample metrics (``METRICS``, higher is better except ``mae``):

- ``ssim_box``: SSIM of prediction and truth cropped to the truth's bounding box (plus
  ``margin`` pixels), Gaussian window sigma 1.5 (11x11), K1 0.01, K2 0.03, data range 1;
  the mean of the SSIM map without its 5-pixel border, as ``skimage.metrics.structural_similarity``
  (``gaussian_weights=True, use_sample_covariance=False``) computes it. This is the method's
  headline number: it looks at the object, not at the easy background around it.
- ``iou``, ``accuracy``: intersection over union and pixel accuracy of ``pred >= threshold``.
- ``mae``: mean absolute error of the soft prediction (lower is better).
- ``max_f``: the best F-measure (beta^2 = 0.3) over 256 thresholds, for this sample alone.
  The salient-object literature's "max F" is the maximum of the *mean* curve; get it from
  :func:`pr_curves` rows with :func:`dataset_max_f`.
- ``weighted_f``: weighted F-measure (Margolin et al. 2014, beta = 1).
- ``s_measure``: structure measure (Fan et al. 2017, alpha 0.5).
- ``e_measure``: enhanced-alignment measure (Fan et al. 2018), mean over 256 thresholds.
- ``boundary_iou``: IoU of the thin bands inside each mask's contour (Cheng et al. 2021),
  band width 2% of the image diagonal.
- ``ap``: average precision of the pixels ranked by the soft prediction (area under the
  precision-recall curve over the 256 thresholds); its mean over samples is the mAP.

Conventions for an empty truth: IoU, accuracy and boundary IoU are 1 when the prediction is
empty too; ``ap`` is NaN (undefined), and reductions skip NaN values and report their count.

Only numpy and OpenCV are needed; ``weighted_f`` imports ``scipy.ndimage`` when called.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import cv2
import numpy as np

EPS = float(np.spacing(1))  # MATLAB's eps, as the reference implementations use

# name -> True when higher is better
METRICS: dict[str, bool] = {
    "ssim_box": True,
    "iou": True,
    "accuracy": True,
    "mae": False,
    "max_f": True,
    "weighted_f": True,
    "s_measure": True,
    "e_measure": True,
    "boundary_iou": True,
    "ap": True,
}

SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_WIN = 2 * int(3.5 * SSIM_SIGMA + 0.5) + 1  # 11: scipy's truncate=3.5, as skimage uses
F_BETA2 = 0.3  # beta^2 of the F-measure in salient-object detection (Achanta et al. 2009)
N_THRESHOLDS = 256


# ---------------------------------------------------------------- inputs
def as_pred(pred: np.ndarray) -> np.ndarray:
    """A prediction as ``(H, W) float64`` in 0..1 (``uint8`` is divided by 255)."""
    pred = np.asarray(pred)
    if pred.ndim == 3 and pred.shape[2] == 1:
        pred = pred[:, :, 0]
    if pred.ndim != 2:
        raise ValueError(f"prediction must be a (H, W) mask, got shape {pred.shape}")
    if pred.dtype == np.uint8:
        return pred.astype(np.float64) / 255.0
    if pred.dtype == bool:
        return pred.astype(np.float64)
    pred = pred.astype(np.float64)
    if pred.size and (pred.min() < 0.0 or pred.max() > 1.0):
        raise ValueError(f"prediction values must lie in 0..1, got {pred.min():.3g}..{pred.max():.3g}; "
                         "pass a soft mask (float 0..1) or a uint8 mask (0..255)")
    return pred


def as_truth(gt: np.ndarray) -> np.ndarray:
    """A truth mask as ``(H, W) bool`` (uint8 >= 128, float > 0.5, bool as is)."""
    gt = np.asarray(gt)
    if gt.ndim == 3 and gt.shape[2] == 1:
        gt = gt[:, :, 0]
    if gt.ndim != 2:
        raise ValueError(f"truth must be a (H, W) mask, got shape {gt.shape}; decode it with segsynth.io.decode_mask")
    if gt.dtype == bool:
        return gt
    if gt.dtype == np.uint8:
        return gt >= 128
    return gt.astype(np.float64) > 0.5


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, g = as_pred(pred), as_truth(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and truth {g.shape} differ in size; "
                         "predict at the image's own size (Predictor.predict does)")
    return p, g


# ---------------------------------------------------------------- SSIM on the truth's box
def truth_box(gt: np.ndarray, margin: int = 0) -> tuple[int, int, int, int] | None:
    """``(y0, y1, x0, x1)`` (end exclusive) of the truth's foreground plus ``margin`` pixels,
    clipped to the image; None for an empty truth."""
    g = as_truth(gt)
    rows, cols = np.flatnonzero(g.any(axis=1)), np.flatnonzero(g.any(axis=0))
    if rows.size == 0:
        return None
    h, w = g.shape
    m = int(margin)
    return max(rows[0] - m, 0), min(rows[-1] + 1 + m, h), max(cols[0] - m, 0), min(cols[-1] + 1 + m, w)


def _grow(lo: int, hi: int, size: int, need: int) -> tuple[int, int]:
    """Widen ``[lo, hi)`` symmetrically to at least ``need`` within ``[0, size)``."""
    if hi - lo >= need or size <= need:
        return (0, size) if size <= need else (lo, hi)
    extra = need - (hi - lo)
    lo = max(lo - extra // 2, 0)
    hi = min(lo + need, size)
    return hi - need, hi


def ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM of two ``(H, W)`` float images with data range 1 (Gaussian window sigma 1.5).

    Same definition as ``skimage.metrics.structural_similarity(x, y, data_range=1,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``. Images smaller than the
    11x11 window are reflect-padded to it.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"ssim needs two (H, W) images of one size, got {x.shape} and {y.shape}")
    pad_h, pad_w = max(SSIM_WIN - x.shape[0], 0), max(SSIM_WIN - x.shape[1], 0)
    if pad_h or pad_w:
        widths = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
        x, y = np.pad(x, widths, mode="symmetric"), np.pad(y, widths, mode="symmetric")

    def blur(a):  # scipy's mode="reflect" is OpenCV's BORDER_REFLECT
        return cv2.GaussianBlur(a, (SSIM_WIN, SSIM_WIN), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    ux, uy = blur(x), blur(y)
    vx, vy, vxy = blur(x * x) - ux * ux, blur(y * y) - uy * uy, blur(x * y) - ux * uy
    c1, c2 = (SSIM_K1 * 1.0) ** 2, (SSIM_K2 * 1.0) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    r = (SSIM_WIN - 1) // 2
    return float(s[r:-r, r:-r].mean(dtype=np.float64))


def ssim_box(pred: np.ndarray, gt: np.ndarray, margin: int = 0) -> float:
    """SSIM of prediction and truth, both cropped to the truth's bounding box (+``margin`` px).

    A box narrower than the 11-pixel window is widened to it (within the image); an empty
    truth is compared over the whole image.
    """
    p, g = _pair(pred, gt)
    box = truth_box(g, margin)
    if box is not None:
        y0, y1, x0, x1 = box
        y0, y1 = _grow(y0, y1, g.shape[0], SSIM_WIN)
        x0, x1 = _grow(x0, x1, g.shape[1], SSIM_WIN)
        p, g = p[y0:y1, x0:x1], g[y0:y1, x0:x1]
    return ssim(p, g.astype(np.float64))


# ---------------------------------------------------------------- thresholded
def iou(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> float:
    """Intersection over union of ``pred >= threshold`` and the truth (1.0 when both empty)."""
    p, g = _pair(pred, gt)
    b = p >= threshold
    union = np.count_nonzero(b | g)
    return 1.0 if union == 0 else float(np.count_nonzero(b & g) / union)


def accuracy(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> float:
    """Share of pixels where ``pred >= threshold`` equals the truth."""
    p, g = _pair(pred, gt)
    return float(np.count_nonzero((p >= threshold) == g)) / max(g.size, 1)


def mae(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute error between the soft prediction and the binary truth."""
    p, g = _pair(pred, gt)
    return float(np.mean(np.abs(p - g)))


def mask_boundary(mask: np.ndarray, width: int) -> np.ndarray:
    """The band of ``mask`` within ``width`` pixels (chessboard distance) of its contour.

    As the Boundary IoU reference code: mask minus its erosion by a 3x3 square ``width`` times,
    the image border counting as background. ``(H, W) bool`` -> ``(H, W) bool``.
    """
    m = np.pad(mask.astype(np.uint8), 1)
    eroded = cv2.erode(m, np.ones((3, 3), np.uint8), iterations=max(int(width), 1),
                       borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return (m - eroded)[1:-1, 1:-1].astype(bool)


def boundary_iou(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5, dilation_ratio: float = 0.02) -> float:
    """Boundary IoU (Cheng et al. 2021): IoU of the contour bands, width = ratio x diagonal."""
    p, g = _pair(pred, gt)
    h, w = g.shape
    width = max(int(round(dilation_ratio * math.hypot(h, w))), 1)
    bp, bg = mask_boundary(p >= threshold, width), mask_boundary(g, width)
    union = np.count_nonzero(bp | bg)
    return 1.0 if union == 0 else float(np.count_nonzero(bp & bg) / union)


# ---------------------------------------------------------------- threshold sweeps
@dataclass(frozen=True)
class PRCurves:
    """Counts over 256 thresholds, from 255/255 down to 0 (index i: ``pred*255 >= 255 - i``).

    ``tp``, ``fp``: ``(256,) int64`` true/false positive counts; ``positives``: truth pixels;
    ``total``: all pixels.
    """

    tp: np.ndarray
    fp: np.ndarray
    positives: int
    total: int

    @property
    def precision(self) -> np.ndarray:
        pos = self.tp + self.fp
        return self.tp / np.where(pos == 0, 1, pos)

    @property
    def recall(self) -> np.ndarray:
        return self.tp / max(self.positives, 1)

    @property
    def f(self) -> np.ndarray:
        """F-measure with beta^2 = 0.3 at each threshold, ``(256,) float64``."""
        p, r = self.precision, self.recall
        num = (1 + F_BETA2) * p * r
        return num / np.where(num == 0, 1, F_BETA2 * p + r)


def pr_curves(pred: np.ndarray, gt: np.ndarray) -> PRCurves:
    """Per-threshold counts of the prediction quantised to 256 levels (``uint8(pred * 255)``)."""
    p, g = _pair(pred, gt)
    q = (p * 255).astype(np.uint8)
    fg = np.bincount(q[g], minlength=N_THRESHOLDS)
    bg = np.bincount(q[~g], minlength=N_THRESHOLDS)
    return PRCurves(tp=np.cumsum(fg[::-1]), fp=np.cumsum(bg[::-1]), positives=int(np.count_nonzero(g)), total=g.size)


def max_f(pred: np.ndarray, gt: np.ndarray) -> float:
    """The best F-measure (beta^2 0.3) of this sample over the 256 thresholds."""
    return float(pr_curves(pred, gt).f.max())


def average_precision(pred: np.ndarray, gt: np.ndarray) -> float:
    """Area under this sample's precision-recall curve over the 256 thresholds
    (``sum (R_n - R_{n-1}) P_n``); NaN when the truth is empty."""
    c = pr_curves(pred, gt)
    if c.positives == 0:
        return float("nan")
    return _ap_from_curves(c)


def _ap_from_curves(c: PRCurves) -> float:
    if c.positives == 0:
        return float("nan")
    recall = np.concatenate([[0.0], c.recall])
    return float(np.sum(np.diff(recall) * c.precision))


def e_measure(pred: np.ndarray, gt: np.ndarray) -> float:
    """Enhanced-alignment measure (Fan et al. 2018), mean over the 256 thresholds."""
    return float(_e_curve(pr_curves(pred, gt)).mean())


def _e_curve(c: PRCurves) -> np.ndarray:
    n, pos = c.total, c.positives
    pred_fg = c.tp + c.fp
    pred_bg = n - pred_fg
    if pos == 0:
        enhanced = pred_bg.astype(np.float64)
    elif pos == n:
        enhanced = pred_fg.astype(np.float64)
    else:
        mp, mg = pred_fg / n, pos / n  # the demeaned binary maps take two values each
        parts = [  # (pixel count, pred value - mean, truth value - mean)
            (c.tp, 1 - mp, 1 - mg),
            (c.fp, 1 - mp, -mg),
            (pos - c.tp, -mp, 1 - mg),
            (pred_bg - (pos - c.tp), -mp, -mg),
        ]
        enhanced = np.zeros(N_THRESHOLDS)
        for count, a, b in parts:
            align = 2 * a * b / (a * a + b * b + EPS)
            enhanced += (align + 1) ** 2 / 4 * count
    return enhanced / (n - 1 + EPS)


# ---------------------------------------------------------------- structure measures
def _s_object(x: np.ndarray) -> float:
    mean = float(np.mean(x)) if x.size else 0.0
    std = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    return 2 * mean / (mean * mean + 1 + std + EPS)


def _region_ssim(p: np.ndarray, g: np.ndarray) -> float:
    """The single-window SSIM of the S-measure's region term."""
    n = p.size
    x, y = float(p.mean()), float(g.mean())
    sx = float(np.sum((p - x) ** 2)) / (n - 1 + EPS)
    sy = float(np.sum((g - y) ** 2)) / (n - 1 + EPS)
    sxy = float(np.sum((p - x) * (g - y))) / (n - 1 + EPS)
    alpha = 4 * x * y * sxy
    beta = (x * x + y * y) * (sx + sy)
    if alpha != 0:
        return alpha / (beta + EPS)
    return 1.0 if beta == 0 else 0.0


def s_measure(pred: np.ndarray, gt: np.ndarray, alpha: float = 0.5) -> float:
    """Structure measure (Fan et al. 2017): object-aware and region-aware similarity."""
    p, g = _pair(pred, gt)
    y = float(g.mean())
    if y == 0:
        return float(1 - p.mean())
    if y == 1:
        return float(p.mean())
    gf = g.astype(np.float64)
    obj = _s_object(p[g]) * y + _s_object(1 - p[~g]) * (1 - y)
    h, w = g.shape
    cy, cx = np.argwhere(g).mean(axis=0).round()
    cy, cx = int(cy) + 1, int(cx) + 1  # MATLAB's 1-based centroid splits the quadrants
    area = h * w
    weights = (cx * cy / area, cy * (w - cx) / area, (h - cy) * cx / area)
    weights = (*weights, 1 - sum(weights))
    quads = ((slice(0, cy), slice(0, cx)), (slice(0, cy), slice(cx, w)),
             (slice(cy, h), slice(0, cx)), (slice(cy, h), slice(cx, w)))
    region = 0.0
    for wt, (sy, sx) in zip(weights, quads):
        qp, qg = p[sy, sx], gf[sy, sx]
        if qp.size:
            region += _region_ssim(qp, qg) * wt
    return float(max(0.0, alpha * obj + (1 - alpha) * region))


def _gauss7() -> np.ndarray:
    """MATLAB ``fspecial('gaussian', 7, 5)``."""
    ax = np.arange(-3, 4, dtype=np.float64)
    k = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * 5.0 ** 2))
    k[k < np.finfo(np.float64).eps * k.max()] = 0
    return k / k.sum()


def weighted_f(pred: np.ndarray, gt: np.ndarray, beta2: float = 1.0) -> float:
    """Weighted F-measure (Margolin et al. 2014); 0 for an empty truth."""
    p, g = _pair(pred, gt)
    if not g.any():
        return 0.0
    try:
        from scipy.ndimage import distance_transform_edt
    except ImportError as e:  # scipy comes with scikit-image
        raise ImportError("weighted_f needs scipy: pip install 'segsynth[eval]'") from e
    gf = g.astype(np.float64)
    dist, idx = distance_transform_edt(~g, return_indices=True)
    err = np.abs(p - gf)
    err_t = err.copy()
    bgm = ~g
    err_t[bgm] = err[idx[0][bgm], idx[1][bgm]]  # background errors take the nearest edge's
    ea = cv2.filter2D(err_t, -1, _gauss7(), borderType=cv2.BORDER_CONSTANT)
    min_e = np.where(g & (ea < err), ea, err)
    b = np.where(bgm, 2 - np.exp(np.log(0.5) / 5 * dist), 1.0)
    ew = min_e * b
    tpw = gf.sum() - ew[g].sum()
    fpw = ew[bgm].sum()
    r = 1 - ew[g].mean()
    pr = tpw / (tpw + fpw + EPS)
    return float((1 + beta2) * r * pr / (r + beta2 * pr + EPS))


# ---------------------------------------------------------------- all at once
def sample_metrics(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5, ssim_margin: int = 0,
                   curves: bool = False) -> dict[str, Any]:
    """Every per-sample metric of ``METRICS`` for one pair -> ``{name: float}``.

    ``curves=True`` adds ``f_curve`` (``list`` of 256 floats, F-measure per threshold) so that
    the dataset-level max F can be computed later with :func:`dataset_max_f`.
    """
    p, g = _pair(pred, gt)
    c = pr_curves(p, g)
    f = c.f
    out: dict[str, Any] = {
        "ssim_box": ssim_box(p, g, ssim_margin),
        "iou": iou(p, g, threshold),
        "accuracy": accuracy(p, g, threshold),
        "mae": float(np.mean(np.abs(p - g))),
        "max_f": float(f.max()),
        "weighted_f": weighted_f(p, g),
        "s_measure": s_measure(p, g),
        "e_measure": float(_e_curve(c).mean()),
        "boundary_iou": boundary_iou(p, g, threshold),
        "ap": _ap_from_curves(c),
    }
    if curves:
        out["f_curve"] = f.astype(np.float32).tolist()
    return out


# ---------------------------------------------------------------- reductions
def dataset_max_f(f_curves: Iterable[Sequence[float]]) -> float:
    """The literature's max F: maximum over thresholds of the mean F curve of many samples."""
    arr = np.asarray(list(f_curves), np.float64)
    if arr.size == 0:
        return float("nan")
    return float(arr.mean(axis=0).max())


def mean_ci(values: Sequence[float], method: str = "bootstrap", level: float = 0.95,
            n_boot: int = 2000, seed: object = 0) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)`` of the non-NaN ``values`` with a ``level`` interval.

    ``method="bootstrap"``: percentile bootstrap of the mean (``n_boot`` resamples, a generator
    from ``rng_for("mean_ci", seed)``); ``"t"``: Student-t interval. One value gives
    ``(v, v, v, 1)``; none gives NaNs and 0.
    """
    v = np.asarray(values, np.float64)
    v = v[~np.isnan(v)]
    n = int(v.size)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    m = float(v.mean())
    if n == 1:
        return m, m, m, 1
    alpha = (1 - level) / 2
    if method == "t":
        half = _t_quantile(1 - alpha, n - 1) * float(v.std(ddof=1)) / math.sqrt(n)
        return m, m - half, m + half, n
    if method != "bootstrap":
        raise ValueError(f"unknown interval method {method!r}; valid: bootstrap, t")
    from segsynth.rng import rng_for

    rng = rng_for("mean_ci", seed)
    means = v[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return m, float(lo), float(hi), n


def _t_quantile(q: float, dof: int) -> float:
    try:
        from scipy.stats import t
        return float(t.ppf(q, dof))
    except ImportError:  # normal approximation with a small-sample correction (Cornish-Fisher)
        z = math.sqrt(2) * _erfinv(2 * q - 1)
        return z + (z ** 3 + z) / (4 * dof)


def _erfinv(y: float) -> float:
    a = 0.147
    ln = math.log(1 - y * y)
    s = 2 / (math.pi * a) + ln / 2
    return math.copysign(math.sqrt(math.sqrt(s * s - ln / a) - s), y)


def _rows(table: Any) -> list[dict]:
    if hasattr(table, "to_pylist"):  # pyarrow.Table
        return table.to_pylist()
    if hasattr(table, "to_dict") and hasattr(table, "columns"):  # pandas.DataFrame
        return table.to_dict("records")
    return list(table)


def summarize(table: Any, by: Sequence[str] = ("model",), metrics: Sequence[str] | None = None,
              method: str = "bootstrap", level: float = 0.95, n_boot: int = 2000) -> list[dict]:
    """Mean and interval of each metric per group: a group-by over per-sample rows.

    ``table``: rows (dicts), a ``pyarrow.Table`` or a ``pandas.DataFrame`` with the ``by``
    columns and metric columns. Returns one dict per group, sorted by the group keys:
    ``{**group, "n": rows, m: mean, m + "_lo": low, m + "_hi": high, ...}`` for each metric
    ``m`` (default: the ``METRICS`` present). When rows carry ``f_curve``, ``max_f_dataset``
    (max of the mean F curve) is added with a bootstrap interval too.
    """
    rows = _rows(table)
    if metrics is None:
        present = set(rows[0]) if rows else set()
        metrics = [m for m in METRICS if m in present]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        missing = [k for k in by if k not in r]
        if missing:
            raise KeyError(f"summarize: rows lack the group-by column {missing[0]!r}; columns: {sorted(r)}")
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    out = []
    for key in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
        g = groups[key]
        row: dict[str, Any] = dict(zip(by, key))
        row["n"] = len(g)
        for m in metrics:
            vals = [np.nan if r.get(m) is None else float(r[m]) for r in g]
            mean, lo, hi, _ = mean_ci(vals, method, level, n_boot, seed=(key, m))
            row[m], row[m + "_lo"], row[m + "_hi"] = mean, lo, hi
        curves = [r["f_curve"] for r in g if r.get("f_curve") is not None]
        if curves:
            row.update(_max_f_dataset_ci(curves, level, n_boot, seed=key))
        out.append(row)
    return out


def _max_f_dataset_ci(curves: list, level: float, n_boot: int, seed: object) -> dict[str, float]:
    from segsynth.rng import rng_for

    arr = np.asarray(curves, np.float64)
    n = arr.shape[0]
    point = float(arr.mean(axis=0).max())
    if n == 1:
        return {"max_f_dataset": point, "max_f_dataset_lo": point, "max_f_dataset_hi": point}
    rng = rng_for("max_f_dataset", seed)
    boots = np.empty(n_boot)
    for i in range(0, n_boot, 250):  # chunks keep memory at 250 x n x 256
        idx = rng.integers(0, n, size=(min(250, n_boot - i), n))
        boots[i:i + len(idx)] = arr[idx].mean(axis=1).max(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return {"max_f_dataset": point, "max_f_dataset_lo": float(lo), "max_f_dataset_hi": float(hi)}


def worst(rows: Iterable[Mapping], metric: str = "ssim_box", k: int = 12) -> list[Mapping]:
    """The ``k`` rows worst on ``metric`` (lowest, or highest for ``mae``), worst first; NaN last."""
    higher_better = METRICS.get(metric, True)
    def key(r):
        v = r.get(metric)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return math.inf
        return float(v) if higher_better else -float(v)
    return sorted(rows, key=key)[:k]
