"""The ``segsynth cutouts`` Ray job on a small copy of the demo kit, with a corrupt photo."""
from __future__ import annotations

import csv
import json
import logging
import shutil

import numpy as np
import pytest

from segsynth import io
from segsynth.config import load_config

MANIFEST_COLUMNS = ["cutout_id", "category", "source", "source_kind", "width", "height", "quality", "rgba"]


@pytest.fixture
def small_kit(repo, tmp_path):
    """4 kit photos + a corrupt JPEG + a photo on a grey background; 2 eval pairs; 1 RGBA file."""
    kit = repo / "demo_kit"
    cat = tmp_path / "catalog"
    (cat / "images").mkdir(parents=True)
    rows = list(csv.DictReader(open(kit / "catalog/products.csv", encoding="utf-8")))
    keep = [r for r in rows if r["stem"] in ("002.460.78", "002.675.08", "799.019.69", "101.484.64")]
    assert len(keep) == 4
    for r in keep:
        shutil.copyfile(kit / "catalog/images" / r["file"], cat / "images" / r["file"])
    (cat / "images/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 200)  # a truncated JPEG
    grey = np.full((96, 96, 3), 128, np.uint8)
    grey[30:60, 30:60] = (200, 40, 40)
    (cat / "images/on_grey.jpg").write_bytes(io.encode_jpeg(grey))
    with open(cat / "products.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    rgba_dir = tmp_path / "rgba"
    rgba_dir.mkdir()
    rgba = np.zeros((48, 32, 4), np.uint8)
    rgba[4:44, 6:26] = (30, 140, 40, 255)
    (rgba_dir / "plant.png").write_bytes(io.encode_png(rgba))
    return {"catalog": cat, "eval": kit / "eval", "rgba": rgba_dir}


def kit_sources(small_kit) -> str:
    """The ``sources=`` override of the small kit: its catalog photos, two pairs, its RGBA files."""
    return ("sources=[{kind: catalog, path: %s, categories_csv: %s}, {kind: pairs, path: %s, limit: 2},"
            " {kind: rgba, path: %s, category: plant pot}]"
            % (small_kit["catalog"], small_kit["catalog"] / "products.csv", small_kit["eval"], small_kit["rgba"]))


@pytest.mark.ray
def test_cutouts_job(ray_local, small_kit, tmp_path, caplog):
    from segsynth.cutouts.config import CutoutsConfig
    from segsynth.cutouts.job import run

    out = tmp_path / "out"
    overrides = [
        f"out={out}", "workers=2", "batch_size=2", "write_png=true",
        kit_sources(small_kit),
    ]
    cfg = load_config(CutoutsConfig, None, overrides)
    with caplog.at_level(logging.WARNING, logger="segsynth"):
        summary = run(cfg)

    assert summary["total"] == 6 + 2 + 1
    assert summary["corrupt"] == 1 and summary["corrupt_files"][0].endswith("broken.jpg")
    assert "broken.jpg" in caplog.text  # named in the driver's log
    assert summary["rejected_not_white"] == 1
    assert summary["written"] + summary["rejected_quality"] == 4 + 2 + 1
    assert summary["written"] >= 6
    assert summary["per_category"]["chair"] == 1 and summary["per_category"]["plant pot"] == 1
    assert json.loads((out / "summary.json").read_text()) == summary

    table = io.read_parquet(out / "manifest.parquet")
    assert table.column_names[:len(MANIFEST_COLUMNS)] == MANIFEST_COLUMNS
    rows = table.to_pylist()
    assert len(rows) == summary["written"]
    ids = [r["cutout_id"] for r in rows]
    assert ids[:4] == ["catalog/002.460.78", "catalog/002.675.08", "catalog/101.484.64", "catalog/799.019.69"]
    assert "catalog/broken" not in ids and "rgba/plant" in ids
    kinds = {r["cutout_id"].split("/")[0]: r["source_kind"] for r in rows}
    assert kinds["catalog"] == "catalog" and kinds["rgba"] == "rgba"
    for r in rows:
        img = io.decode_rgba(r["rgba"])
        assert img.shape == (r["height"], r["width"], 4)
        assert 0.0 <= r["quality"] <= 1.0 and img[:, :, 3].max() == 255
        assert (out / "png" / (r["cutout_id"] + ".png")).is_file()
    chair = next(r for r in rows if r["cutout_id"] == "catalog/002.460.78")
    assert chair["category"] == "chair" and chair["source"].endswith("002.460.78.jpg")

    rejects = list(csv.DictReader(open(out / "rejects.csv")))
    assert {r["cutout_id"]: r["status"] for r in rejects if r["status"] != "low_quality"} == {
        "catalog/broken": "corrupt", "catalog/on_grey": "not_white"}

    again = load_config(CutoutsConfig, out / "config.yaml")  # the resolved config, loadable as is
    assert again == cfg


@pytest.mark.ray
def test_cutouts_job_resumes_part_by_part(ray_local, small_kit, tmp_path):
    """Parts of 3 items: a run that lost a part (and its manifest and summary) makes only that part
    again, leaves the others untouched, and ends with the same manifest, rejects and counts."""
    from segsynth.config import ConfigError
    from segsynth.cutouts.config import CutoutsConfig
    from segsynth.cutouts.job import run

    out = tmp_path / "out"
    overrides = [
        f"out={out}", "workers=2", "batch_size=2", "part_size=3",
        kit_sources(small_kit),
    ]
    cfg = load_config(CutoutsConfig, None, overrides)
    first = run(cfg)
    assert (first["parts"], first["parts_written"], first["parts_skipped"]) == (3, 3, 0)
    parts = sorted((out / "parts").iterdir())
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    part_rows = [io.read_parquet(p).to_pylist() for p in parts]
    assert sum(len(r) for r in part_rows) == first["total"]  # written and rejected rows both
    assert {r["status"] for rows in part_rows for r in rows} >= {"written", "corrupt", "not_white"}
    manifest = io.read_parquet(out / "manifest.parquet")
    rejects = (out / "rejects.csv").read_text()

    # the run "failed" before part 1 was written, and so before the manifest and the summary
    for name in ("parts/part-00001.parquet", "manifest.parquet", "rejects.csv", "summary.json"):
        (out / name).unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in parts if p.name != "part-00001.parquet"}
    with pytest.raises(ConfigError, match="different min_quality"):
        run(load_config(CutoutsConfig, None, overrides + ["min_quality=0.5"]))
    again = run(load_config(CutoutsConfig, None, overrides + ["workers=1"]))  # a pool size is no output setting
    assert (again["parts"], again["parts_written"], again["parts_skipped"]) == (3, 1, 2)
    assert {p: (out / "parts" / p).stat().st_mtime_ns for p in kept} == kept  # not made again
    assert io.read_parquet(out / "parts/part-00001.parquet").to_pylist() == part_rows[1]
    assert io.read_parquet(out / "manifest.parquet").equals(manifest)
    assert (out / "rejects.csv").read_text() == rejects
    timing = ("seconds", "parts_written", "parts_skipped")
    assert {k: v for k, v in again.items() if k not in timing} == {k: v for k, v in first.items() if k not in timing}
    assert json.loads((out / "summary.json").read_text()) == again
