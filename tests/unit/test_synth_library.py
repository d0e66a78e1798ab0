"""load_cutouts / load_backgrounds: sorted, filtered, corrupt inputs skipped and reported."""
from __future__ import annotations

import numpy as np
import pytest

from segsynth import io
from segsynth.synth import load_backgrounds, load_cutouts


def _rgba(h, w, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    img[:, :, 3] = 255
    return img


def _write_manifest(path, rows):
    io.write_parquet([{"cutout_id": cid, "category": cat, "source": f"src/{cid}.jpg", "source_kind": "rgba",
                       "width": 8, "height": 6, "quality": 1.0, "rgba": data} for cid, cat, data in rows], path)


def test_load_cutouts_sorts_filters_and_skips_corrupt(tmp_path):
    empty = _rgba(6, 8)
    empty[:, :, 3] = 0
    rows = [
        ("b/2", "chair", io.encode_png(_rgba(6, 8, 1))),
        ("a/1", "Chair", io.encode_png(_rgba(6, 8, 2))),
        ("c/3", "lamp", io.encode_png(_rgba(6, 8, 3))),
        ("d/4", "chair", b"not a png"),
        ("e/5", "chair", io.encode_png(empty)),
    ]
    _write_manifest(tmp_path / "manifest.parquet", rows)
    cutouts, skipped = load_cutouts(str(tmp_path))  # the folder holding manifest.parquet
    assert [c.cutout_id for c in cutouts] == ["a/1", "b/2", "c/3"]
    assert cutouts[0].rgba.shape == (6, 8, 4) and cutouts[0].rgba.dtype == np.uint8
    assert [s[0] for s in skipped] == ["d/4", "e/5"]
    assert "not a readable image" in skipped[0][1] and "alpha is empty" in skipped[1][1]

    chairs, _ = load_cutouts(str(tmp_path / "manifest.parquet"), categories=["chair"])
    assert [c.cutout_id for c in chairs] == ["a/1", "b/2"]


def test_load_backgrounds_from_folder_and_parquet(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "rooms"
    (folder / "sub").mkdir(parents=True)
    big = rng.integers(0, 256, (60, 200, 3), dtype=np.uint8)
    io.write_bytes(folder / "z.jpg", io.encode_jpeg(big))
    io.write_bytes(folder / "sub" / "a.png", io.encode_png(big[:40, :40]))
    io.write_bytes(folder / "broken.jpg", b"\xff\xd8 truncated")
    lib = tmp_path / "lib" / "backgrounds.parquet"
    io.write_parquet([{"bg_id": "gen-001", "image": io.encode_jpeg(big[:, :50]), "width": 50, "height": 60,
                       "prompt": "p", "negative_prompt": "", "seed": 1, "model": "m"},
                      {"bg_id": "z", "image": io.encode_jpeg(big[:, :50]), "width": 50, "height": 60,
                       "prompt": "p", "negative_prompt": "", "seed": 2, "model": "m"}], lib)

    bgs, skipped = load_backgrounds([str(folder), str(tmp_path / "lib")], max_side=100)
    assert [b.bg_id for b in bgs] == ["gen-001", "sub/a", "z"]
    by_id = {b.bg_id: b for b in bgs}
    assert by_id["z"].rgb.shape == (30, 100, 3)  # downscaled: longer side 200 -> 100
    assert by_id["sub/a"].rgb.shape == (40, 40, 3)
    reasons = dict(skipped)
    assert "broken" in reasons and "not a readable image" in reasons["broken"]
    assert "duplicate bg_id" in reasons["z"]  # the parquet's "z" after the folder's "z"

    # a `segsynth rooms` folder: its backgrounds.parquet alone, not the parts it was combined from
    io.write_parquet([{"bg_id": "blank-002", "image": io.encode_jpeg(big[:, :50] * 0)}],
                     tmp_path / "lib" / "parts" / "part-00000.parquet")
    assert [b.bg_id for b in load_backgrounds([str(tmp_path / "lib")])[0]] == ["gen-001", "z"]


def test_load_backgrounds_empty_folder_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no images"):
        load_backgrounds([str(tmp_path)])


def test_shared_rooms_load(shared_data):
    bgs, skipped = load_backgrounds([str(shared_data / "backgrounds" / "empty_rooms_small")], max_side=128)
    assert len(bgs) == 100 and not skipped
    assert max(bgs[0].rgb.shape[:2]) <= 128
