"""segsynth.evaluate.report: preferences, tables, bar chart, galleries, the report folder; evalset builder."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from segsynth import io
from segsynth.evaluate import report as R


def _write_prefs(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item", "annotator", "choice"])
        w.writerows(rows)
    return str(path)


def test_preferences_both_views(tmp_path):
    rows = [
        ("1", "ann", "ours"), ("1", "bob", "ours"), ("1", "cat", "dis"),     # agreed: ours
        ("2", "ann", "dis"), ("2", "bob", "dis"),                             # agreed: dis
        ("3", "ann", "ours"), ("3", "bob", "dis"), ("3", "cat", "white"),    # no agreement
        ("4", "ann", "ours"), ("4", "bob", "ours"), ("4", "cat", "dis"), ("4", "dan", "dis"),  # tie
        ("5", "ann", "ours"), ("5", "ann", "dis"), ("5", "bob", "dis"),       # ann changed her mind: dis
        ("6", "ann", ""),                                                     # empty choice: left out
    ]
    prefs = R.load_preferences(_write_prefs(tmp_path / "p.csv", rows))
    assert len(prefs) == 15 and prefs[0] == {"item": "1", "annotator": "ann", "choice": "ours"}
    s = R.preference_summary(prefs)
    assert s["items"] == 5 and s["agreed_items"] == 3 and s["ties"] == 1
    agree = {p["choice"]: p for p in s["agreement"]}
    assert agree["dis"]["items"] == 2 and agree["ours"]["items"] == 1 and agree["white"]["items"] == 0
    assert agree["dis"]["share"] == pytest.approx(2 / 3)
    mentions = {p["choice"]: p for p in s["mentions"]}
    assert s["mentions_total"] == 14  # ann's first answer on item 5 is replaced by her last
    assert mentions["dis"]["mentions"] == 8 and mentions["ours"]["mentions"] == 5
    assert sum(p["share"] for p in s["mentions"]) == pytest.approx(1.0)


def test_preferences_aliases_and_errors(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("stem,user,model\n7,a,x\n")
    assert R.load_preferences(str(p)) == [{"item": "7", "annotator": "a", "choice": "x"}]
    bad = tmp_path / "b.csv"
    bad.write_text("item,who,choice\n1,a,x\n")
    with pytest.raises(ValueError, match="annotator"):
        R.load_preferences(str(bad))


def test_tables_and_formatting():
    row = {"model": "m", "n": 3, "iou": 0.81234, "iou_lo": 0.7, "iou_hi": 0.9, "mae": float("nan")}
    assert R.fmt_ci(row, "iou") == "0.812 [0.700, 0.900]"
    assert R.fmt_ci(row, "mae") == "–" and R.fmt_ci(row, "ap") == "–"
    t = R.overall_table([row], ["iou"])
    assert t.markdown().splitlines()[0] == "| model | n | IoU |"
    assert "<td>0.812 [0.700, 0.900]</td>" in t.html()


def _fixture(tmp_path, n=6):
    """A labelled folder, predictions of two models, and per-sample rows."""
    from segsynth import metrics as M

    data, preds = tmp_path / "data", tmp_path / "pred"
    rows, items = [], []
    for i in range(n):
        img = np.full((48, 64, 3), 30 + 10 * i, np.uint8)
        gt = np.zeros((48, 64), np.uint8)
        gt[10:30, 15:40 + i] = 255
        img[gt > 0] = 220
        stem = f"{i:04d}"
        io.write_bytes(str(data / "images" / f"{stem}.jpg"), io.encode_jpeg(img))
        io.write_bytes(str(data / "masks" / f"{stem}.png"), io.encode_png(gt))
        items.append({"stem": stem, "image": str(data / "images" / f"{stem}.jpg"), "mask": str(data / "masks" / f"{stem}.png")})
        for m, shift in (("good", 0), ("bad", 3 + i)):
            pred = np.roll(gt, shift, axis=1)
            io.write_bytes(str(preds / m / f"{stem}.png"), io.encode_png(pred))
            r = {"model": m, "stem": stem, "category": "a" if i % 2 else "b", "bg_kind": "plain"}
            r.update(M.sample_metrics(pred / 255.0, gt, curves=True))
            rows.append(r)
    return rows, items, str(preds)


def test_write_report(tmp_path):
    rows, items, preds = _fixture(tmp_path)
    prefs = [{"item": "0000", "annotator": a, "choice": "good"} for a in ("x", "y")]
    out = R.write_report(str(tmp_path / "report"), rows, items=items, models=["good", "bad"], predictions=preds,
                         config={"data": "data", "models": []}, command="segsynth eval --config x.yaml",
                         cards={"good": {"kind": "test"}}, gallery_size=3, preferences=prefs)
    files = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"report.md", "index.html", "ssim_box_by_model.png", "gallery_good.png", "gallery_bad.png", "overall.csv",
            "by_category.csv", "by_bg_kind.csv", "samples.csv", "config.yaml", "command.txt", "models.json",
            "preferences.json"} <= files
    md = (tmp_path / "report" / "report.md").read_text()
    assert "segsynth eval --config x.yaml" in md and "## Per category" in md and "agreed items" in md
    assert md.index("| good |") < md.index("| bad |")  # models in config order
    # the bad model's worst case (largest shift) comes first in its gallery
    sheet = io.read_image(str(tmp_path / "report" / "gallery_bad.png"))
    assert sheet.shape[0] > 3 * 128 and sheet.shape[1] > 4 * 64
    html = (tmp_path / "report" / "index.html").read_text()
    assert '<img src="gallery_bad.png"' in html and "<table>" in html
    assert out == str(tmp_path / "report")


def test_gallery_order(tmp_path):
    from segsynth import metrics as M

    rows, items, preds = _fixture(tmp_path)
    worst = M.worst([r for r in rows if r["model"] == "bad"], "ssim_box", 2)
    assert [r["stem"] for r in worst] == ["0005", "0004"]


def test_build_test_set_from_labelled_folder(tmp_path):
    from segsynth.evaluate.evalset import build_test_set

    data = tmp_path / "src"
    cats = ["stem,category"]
    for i in range(11):
        img = np.full((32, 32, 3), 200, np.uint8)
        gt = np.zeros((32, 32), np.uint8)
        gt[8:20, 8:20] = 255
        io.write_bytes(str(data / "images" / f"{i:03d}.jpg"), io.encode_jpeg(img))
        if i != 0:  # item 000 has no mask: not eligible
            io.write_bytes(str(data / "masks" / f"{i:03d}.png"), io.encode_png(gt))
        cats.append(f"{i:03d},{'big' if i < 9 else 'small'}")
    (data / "categories.csv").write_text("\n".join(cats) + "\n")
    kw = dict(per_category=3, seed=1, masks_dir=str(data / "masks"), category_column="category")
    s = build_test_set(str(data / "categories.csv"), str(data / "images"), str(tmp_path / "out"), **kw)
    assert s["items"] == 5 and s["categories"] == 2 and s["label_source"] == "mask"
    got = io.labelled_folder(str(tmp_path / "out"))
    by_cat = {}
    for it in got:
        by_cat.setdefault(it["category"], []).append(it["stem"])
    assert len(by_cat["big"]) == 3 and sorted(by_cat["small"]) == ["009", "010"] and "000" not in by_cat["big"]
    s2 = build_test_set(str(data / "categories.csv"), str(data / "images"), str(tmp_path / "out2"), **kw)
    assert [it["stem"] for it in io.labelled_folder(str(tmp_path / "out2"))] == [it["stem"] for it in got]
    with pytest.raises(ValueError, match="needs masks"):
        build_test_set(str(data / "categories.csv"), str(data / "images"), str(tmp_path / "o3"), category_column="category")
