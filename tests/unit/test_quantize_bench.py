"""benchmarks/quantize.py without running it: its verdict follows the numbers, and its section
passes the benchmark-prose rule (every number from the results; see test_benchmark_prose)."""
from __future__ import annotations

import copy

import pytest

from test_benchmark_prose import fixed_numbers, literals, load, perturb


def results(ssim_lo: float = -0.004, mae_hi: float = 0.002, ratio: tuple = (0.81, 0.78, 0.85),
            int8_parity: float = 0.041) -> dict:
    table = [{"set": s, "metric": m, "n": n, "fp32": f, "int8": f + d, "delta": d, "lo": lo, "hi": hi}
             for s, n, rows in (("ecssd_51-100", 50, [("ssim_box", 0.506, -0.002, ssim_lo, 0.001),
                                                       ("iou", 0.543, -0.001, -0.003, 0.002),
                                                       ("mae", 0.157, 0.001, -0.001, mae_hi)]),
                                ("pascal_s_1-100", 100, [("ssim_box", 0.385, -0.001, -0.002, 0.0005),
                                                         ("iou", 0.297, 0.0005, -0.002, 0.003),
                                                         ("mae", 0.232, 0.0004, -0.0002, 0.001)]))
             for m, f, d, lo, hi in rows]
    return {"command": "python benchmarks/quantize.py --write", "date": "2026-12-02", "cores": 2, "gpu": False,
            "load_avg": [1.2, 1.9], "onnxruntime": "1.32.0", "ckpt": "outputs/cpu/train/best", "model_px": 320,
            "held_out": [{"set": "ecssd_51-100", "data": "ecssd_dev", "stems": "51-100"},
                         {"set": "pascal_s_1-100", "data": "pascal_s_dev", "stems": None}],
            "interval": 0.95, "tolerance": 0.01, "export_refuses_above": 0.25,
            "files": {"fp32": {"path": "x/model.onnx", "mb": 40.2, "parity_max_abs_diff": 2.4e-6},
                      "int8": {"path": "x/model-int8.onnx", "mb": 10.9, "parity_max_abs_diff": int8_parity}},
            "table": table,
            "drops": [{"set": "ecssd_51-100", "n": 50, "max_iou_drop": 0.021, "stem": "0063", "over_tolerance": 2},
                      {"set": "pascal_s_1-100", "n": 100, "max_iou_drop": 0.034, "stem": "57", "over_tolerance": 4}],
            "speed": {"images": 150, "threads": 1, "fp32_ms": 151.2, "int8_ms": 122.4, "ratio": ratio[0],
                      "lo": ratio[1], "hi": ratio[2]}}


def test_verdict_follows_the_numbers():
    q = load("quantize")
    assert q.judge(results()).worth == "yes"
    assert "**worth it** here" in q.section(results())
    slow = q.judge(results(ratio=(1.3, 1.2, 1.4)))
    assert (slow.speed, slow.worth) == ("slower", "size-only")
    assert q.judge(results(ratio=(0.98, 0.9, 1.05))).speed == "unclear"
    lossy = q.judge(results(ssim_lo=-0.02, mae_hi=0.015))  # SSIM can lose 0.02, MAE can grow 0.015
    assert lossy.worth == "no"
    assert [(s, m) for s, m, _ in lossy.beyond] == [("ecssd_51-100", "ssim_box"), ("ecssd_51-100", "mae")]
    assert "**not worth it** here" in q.section(results(ssim_lo=-0.02))
    refused = q.judge(results(int8_parity=0.9))  # accurate and fast on the photos, but the export refuses it
    assert (refused.refused, refused.worth) == (True, "no")
    assert "**refuses** this checkpoint" in q.section(results(int8_parity=0.9))


@pytest.mark.parametrize("kwargs", [{}, {"int8_parity": 0.9, "ssim_lo": -0.03, "ratio": (1.9, 1.8, 2.0)}])
def test_every_number_comes_from_the_results(kwargs):
    q = load("quantize")
    r = results(**kwargs)
    changed = perturb(copy.deepcopy(r))
    a, b = q.section(copy.deepcopy(r)), q.section(changed)
    assert a.startswith(q.HEADING + "\n") and b.startswith(q.HEADING + "\n")
    assert "`" in next(line for line in a.splitlines()[1:] if line.strip()), "the command line comes first"
    bad = fixed_numbers(a, b, literals(r) & literals(changed))
    assert not bad, "numbers that did not follow the results:\n" + "\n".join(bad)
