"""Image codecs, URIs and labelled folders."""
from __future__ import annotations

import numpy as np
import pytest

from segsynth import io


def test_roundtrip_png_rgba_and_mask(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 255, (7, 9, 4), dtype=np.uint8)
    assert np.array_equal(io.decode_rgba(io.encode_png(rgba)), rgba)
    rgb = rgba[:, :, :3].copy()
    assert np.array_equal(io.decode_image(io.encode_png(rgb)), rgb)
    mask = rgba[:, :, 0].copy()
    assert np.array_equal(io.decode_mask(io.encode_png(mask)), mask)
    assert io.decode_mask(io.encode_png(rgba)).tolist() == rgba[:, :, 3].tolist()


def test_decode_errors_name_the_input():
    with pytest.raises(io.ImageDecodeError, match="photo.jpg: empty"):
        io.decode_image(b"", name="photo.jpg")
    with pytest.raises(io.ImageDecodeError, match="photo.jpg: not a readable image"):
        io.decode_image(b"not an image at all", name="photo.jpg")
    jpeg = io.encode_jpeg(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(io.ImageDecodeError):
        io.decode_image(jpeg[:20], name="truncated.jpg")


def test_sixteen_bit_and_gray_become_rgb_uint8():
    import cv2

    gray16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    ok, buf = cv2.imencode(".png", gray16)
    rgb = io.decode_image(buf.tobytes())
    assert rgb.dtype == np.uint8 and rgb.shape == (8, 8, 3)
    assert abs(int(rgb[7, 7, 0]) - 63000 / 257) <= 1


def test_files_uris_and_parquet(tmp_path):
    base = f"file://{tmp_path}"
    io.write_bytes(io.join(str(tmp_path), "a", "x.png"), b"1")
    assert io.exists(str(tmp_path / "a" / "x.png")) and io.read_bytes(base + "/a/x.png") == b"1"
    assert io.list_files(str(tmp_path / "a"), [".png"]) == [str(tmp_path / "a" / "x.png")]
    io.write_parquet([{"a": 1, "b": b"x"}, {"a": 2, "b": b"y"}], str(tmp_path / "t" / "p1.parquet"))
    io.write_parquet([{"a": 3, "b": b"z"}], str(tmp_path / "t" / "p2.parquet"))
    assert io.read_parquet(str(tmp_path / "t")).column("a").to_pylist() == [1, 2, 3]


def test_labelled_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for stem in ("0001", "0002", "0003"):
        (tmp_path / "images" / f"{stem}.jpg").write_bytes(io.encode_jpeg(np.zeros((4, 4, 3), np.uint8)))
    for stem in ("0001", "0002"):
        (tmp_path / "masks" / f"{stem}.png").write_bytes(io.encode_png(np.zeros((4, 4), np.uint8)))
    (tmp_path / "categories.csv").write_text("stem,category\n0001,chair\n")
    items = io.labelled_folder(str(tmp_path))
    assert [i["stem"] for i in items] == ["0001", "0002"]
    assert [i["category"] for i in items] == ["chair", "unknown"]


def test_parquet_index_reads_only_the_row_groups_it_needs(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    rows = [{"key": f"k{i:02d}", "kind": "even" if i % 2 == 0 else "odd", "blob": bytes([i]) * 1000} for i in range(20)]
    rows.append({"key": "k03", "kind": "again", "blob": b"x"})  # a repeated key keeps its first row
    path = str(tmp_path / "rows.parquet")
    io.write_parquet(rows, path, row_group_size=4)
    index = io.ParquetIndex([path], "key", keep=["kind"])
    assert len(index) == 20 and index.values["k03"] == {"kind": "odd"} and index.duplicates == [("k03", path)]
    reads = []
    real = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group",
                        lambda self, g, columns=None, **kw: reads.append((g, tuple(columns))) or real(self, g, columns=columns, **kw))
    got = index.fetch(["k05", "k04", "k17"], ["blob"])
    assert {k: v["blob"] for k, v in got.items()} == {k: bytes([int(k[1:])]) * 1000 for k in ("k04", "k05", "k17")}
    assert reads == [(1, ("blob",)), (4, ("blob",))]  # two groups of four rows read, not five
