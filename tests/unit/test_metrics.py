"""segsynth.metrics against independent implementations (scikit-image, pysodmetrics, scikit-learn)."""
from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest

from segsynth import metrics as M


def _disc(h=96, w=128, cy=50, cx=60, r=25) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).astype(np.uint8) * 255


def _soft_pred(gt: np.ndarray, seed: int = 0, shift: int = 5, blur: float = 3.0) -> np.ndarray:
    """A plausible imperfect soft prediction: blurred, shifted, with sparse noise."""
    rng = np.random.default_rng(seed)
    p = cv2.GaussianBlur((gt >= 128).astype(np.float32), (0, 0), blur)
    p = np.roll(p, shift, axis=1)
    noise = rng.normal(0, 0.15, p.shape).astype(np.float32) * (rng.random(p.shape) < 0.1)
    return np.clip(p + noise, 0, 1).astype(np.float32)


def _pairs(shared=None, n=6):
    """(pred, gt) pairs: synthetic discs, plus real masks from the shared dev set when present."""
    out = [(_soft_pred(_disc(r=r), seed=r), _disc(r=r)) for r in (8, 20, 33)]
    if shared is not None:
        from segsynth import io

        for i, it in enumerate(io.labelled_folder(shared / "eval" / "ecssd_dev")[:n]):
            gt = io.read_mask(it["mask"])
            out.append((_soft_pred(gt, seed=i, shift=3 + i), gt))
    return out


def test_perfect_and_empty():
    gt = _disc()
    pred = (gt / 255.0).astype(np.float32)
    r = M.sample_metrics(pred, gt)
    for k in ("ssim_box", "iou", "accuracy", "boundary_iou", "ap", "max_f", "s_measure"):
        assert r[k] == pytest.approx(1.0, abs=1e-6), k
    assert r["mae"] == 0.0
    assert r["e_measure"] > 0.99  # the mean over thresholds includes threshold 0 (all foreground)
    assert r["weighted_f"] == pytest.approx(1.0, abs=1e-6)
    empty = np.zeros_like(gt)
    e = M.sample_metrics(np.zeros(gt.shape, np.float32), empty)
    assert e["iou"] == 1.0 and e["accuracy"] == 1.0 and e["boundary_iou"] == 1.0 and math.isnan(e["ap"])
    assert M.iou(pred, empty) == 0.0


def test_input_checks():
    gt = _disc()
    with pytest.raises(ValueError, match="differ in size"):
        M.iou(np.zeros((10, 10), np.float32), gt)
    with pytest.raises(ValueError, match="0..1"):
        M.mae(np.full(gt.shape, 2.0, np.float32), gt)
    # uint8 predictions and bool/float truths are accepted
    assert M.iou(gt, gt > 0) == 1.0 and M.iou(gt, (gt > 0).astype(np.float32)) == 1.0


def test_ssim_box_crops_to_truth_box():
    gt = _disc(r=10)
    pred = _soft_pred(gt)
    y0, y1, x0, x1 = M.truth_box(gt)
    assert (y0, y1, x0, x1) == (40, 61, 50, 71)
    assert M.truth_box(gt, margin=5) == (35, 66, 45, 76)
    # the box ignores the easy background, so it is harsher than whole-image SSIM
    assert M.ssim_box(pred, gt) < M.ssim(pred, gt / 255.0)
    assert M.ssim_box(pred, gt, margin=1000) == pytest.approx(M.ssim(pred, gt / 255.0))
    tiny = np.zeros((40, 40), np.uint8)
    tiny[20:22, 20:22] = 255  # a box narrower than the 11x11 window is widened
    assert 0.0 < M.ssim_box(tiny / 255.0, tiny) <= 1.0


def test_against_skimage_and_sklearn(request):
    skm = pytest.importorskip("skimage.metrics")
    skl = pytest.importorskip("sklearn.metrics")
    from tests.conftest import shared_data_dir

    for pred, gt in _pairs(shared_data_dir()):
        g = gt >= 128
        y0, y1, x0, x1 = M.truth_box(gt)
        ref = skm.structural_similarity(pred[y0:y1, x0:x1].astype(np.float64), g[y0:y1, x0:x1].astype(np.float64),
                                        data_range=1.0, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, K1=0.01, K2=0.03)
        assert M.ssim_box(pred, gt) == pytest.approx(ref, abs=1e-9)
        b = pred >= 0.5
        assert M.iou(pred, gt) == pytest.approx(skl.jaccard_score(g.ravel(), b.ravel()), abs=1e-12)
        assert M.accuracy(pred, gt) == pytest.approx(skl.accuracy_score(g.ravel(), b.ravel()), abs=1e-12)
        q = (pred.astype(np.float64) * 255).astype(np.uint8)  # AP is over the 256 quantised levels
        assert M.average_precision(pred, gt) == pytest.approx(skl.average_precision_score(g.ravel(), q.ravel()), abs=1e-9)


def test_against_pysodmetrics():
    ps = pytest.importorskip("py_sod_metrics")
    from tests.conftest import shared_data_dir

    warnings.filterwarnings("ignore", message=".*FmeasureV2.*")
    for pred, gt in _pairs(shared_data_dir()):
        p, g = pred.astype(np.float64), gt >= 128
        r = M.sample_metrics(pred, gt)
        mae, sm, em, wfm, fm = ps.MAE(), ps.Smeasure(), ps.Emeasure(), ps.WeightedFmeasure(), ps.Fmeasure()
        for m in (mae, sm, em, wfm, fm):
            m.step(p, g, normalize=False)
        assert r["mae"] == pytest.approx(mae.get_results()["mae"], abs=1e-9)
        assert r["s_measure"] == pytest.approx(sm.get_results()["sm"], abs=1e-9)
        assert r["e_measure"] == pytest.approx(em.get_results()["em"]["curve"].mean(), abs=1e-9)
        assert r["weighted_f"] == pytest.approx(wfm.get_results()["wfm"], abs=1e-9)
        assert r["max_f"] == pytest.approx(fm.get_results()["fm"]["curve"].max(), abs=1e-9)


def test_dataset_max_f_matches_pysodmetrics():
    ps = pytest.importorskip("py_sod_metrics")
    warnings.filterwarnings("ignore", message=".*FmeasureV2.*")
    fm = ps.Fmeasure()
    curves = []
    for pred, gt in _pairs():
        fm.step(pred.astype(np.float64), gt >= 128, normalize=False)
        curves.append(M.pr_curves(pred, gt).f)
    assert M.dataset_max_f(curves) == pytest.approx(fm.get_results()["fm"]["curve"].max(), abs=1e-9)


def test_boundary_iou_against_distance_transform():
    ndi = pytest.importorskip("scipy.ndimage")
    for pred, gt in _pairs():
        g, b = gt >= 128, pred >= 0.5
        h, w = g.shape
        width = max(int(round(0.02 * math.hypot(h, w))), 1)

        def band(m):  # pixels of m within `width` chessboard steps of the outside (border = outside)
            d = ndi.distance_transform_cdt(np.pad(m, 1), metric="chessboard")[1:-1, 1:-1]
            return m & (d <= width)

        bg, bp = band(g), band(b)
        ref = np.count_nonzero(bg & bp) / np.count_nonzero(bg | bp)
        assert M.boundary_iou(pred, gt) == pytest.approx(ref, abs=1e-12)


def test_summarize_and_intervals():
    rows = [{"model": m, "category": c, "iou": v, "mae": 1 - v, "f_curve": [v] * 256}
            for m, base in (("a", 0.8), ("b", 0.6)) for c in ("x", "y") for v in base + np.linspace(-0.1, 0.1, 7)]
    rows.append({"model": "a", "category": "x", "iou": float("nan"), "mae": 0.2})
    out = M.summarize(rows, by=["model"])
    assert [r["model"] for r in out] == ["a", "b"]
    a = out[0]
    assert a["n"] == 15 and a["iou"] == pytest.approx(0.8)
    assert a["iou_lo"] < 0.8 < a["iou_hi"]
    assert a["max_f_dataset"] == pytest.approx(0.8)
    assert M.summarize(rows, by=["model"]) == out  # deterministic bootstrap
    by_cat = M.summarize(rows, by=["model", "category"], metrics=["iou"])
    assert len(by_cat) == 4 and by_cat[0]["category"] == "x"
    m, lo, hi, n = M.mean_ci([0.1, 0.2, 0.3, 0.4], method="t")
    assert n == 4 and m == pytest.approx(0.25) and lo == pytest.approx(0.25 - 3.182446 * 0.129099 / 2, abs=1e-4)
    assert M.mean_ci([0.5]) == (0.5, 0.5, 0.5, 1)
    with pytest.raises(KeyError, match="group-by"):
        M.summarize(rows, by=["nope"])
    worst = M.worst(rows, "iou", 3)
    assert worst[0]["iou"] == pytest.approx(0.5)
    assert M.worst(rows, "mae", 1)[0]["mae"] == pytest.approx(0.5)
