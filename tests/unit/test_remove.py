"""``segsynth remove`` in-process: mirrored names, options, bad files counted, exit status."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from segsynth import io
from segsynth.serve.remove import add_arguments, main, plan


def _tiny_checkpoint(folder) -> str:
    from segsynth.model import ModelSpec, build_model, preprocessing, save_model_folder

    spec = ModelSpec(encoder_name="tu-mobilenetv3_small_050", decoder_pyramid_channels=32, decoder_segmentation_channels=32)
    model = build_model(spec, encoder_weights=None)
    card = {"name": "tiny", "model": spec.__dict__, "preprocessing": preprocessing(64)}
    return save_model_folder(str(folder), model, card)


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(argv)


def _write(path, w, h, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(w * h).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path)


def test_plan_mirrors_names(tmp_path):
    _write(tmp_path / "in" / "a.jpg", 20, 10)
    _write(tmp_path / "in" / "sub" / "b.png", 10, 20)
    _write(tmp_path / "c.webp", 8, 8)
    jobs = plan([str(tmp_path / "in"), str(tmp_path / "c.webp")], str(tmp_path / "out"), ".png")
    assert [j.dest for j in jobs] == [str(tmp_path / "out" / n) for n in ("a.png", "sub/b.png", "c.png")]
    _write(tmp_path / "other" / "a.jpg", 8, 8)
    with pytest.raises(ValueError, match="both be written"):
        plan([str(tmp_path / "in"), str(tmp_path / "other")], str(tmp_path / "out"), ".png")
    with pytest.raises(FileNotFoundError):
        plan([str(tmp_path / "missing.jpg")], str(tmp_path / "out"), ".png")


def test_in_process_remove(tmp_path, caplog):
    model = _tiny_checkpoint(tmp_path / "ckpt")
    src = tmp_path / "photos"
    _write(src / "wide.jpg", 96, 48)
    _write(src / "tall" / "gray.png", 40, 72, mode="L")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    rc = main(_args([str(src), "--out", str(out), "--model", model, "--no-progress"]))
    assert rc == 1  # one bad file
    assert "broken.jpg" in caplog.text
    wide = Image.open(out / "wide.png")
    gray = Image.open(out / "tall" / "gray.png")
    assert (wide.size, wide.mode) == ((96, 48), "RGBA") and (gray.size, gray.mode) == ((40, 72), "RGBA")
    assert not (out / "broken.png").exists()

    # options; existing outputs are skipped unless --overwrite
    rc = main(_args([str(src / "wide.jpg"), "--out", str(tmp_path / "masks"), "--model", model, "--output", "mask",
                     "--threshold", "0.5", "--format", "jpeg", "--no-progress"]))
    assert rc == 0
    m = np.asarray(Image.open(tmp_path / "masks" / "wide.jpg"))
    assert m.shape == (48, 96)
    assert main(_args([str(src / "wide.jpg"), "--out", str(out), "--model", model, "--no-progress"])) == 0


def test_bad_arguments_are_exit_2(tmp_path):
    _write(tmp_path / "a.jpg", 8, 8)
    assert main(_args([str(tmp_path / "a.jpg"), "--out", str(tmp_path / "o"), "--no-progress"])) == 2  # no model, no url
    assert main(_args([str(tmp_path / "a.jpg"), "--out", str(tmp_path / "o"), "--model", "x", "--format", "jpeg"])) == 2
    assert not io.exists(str(tmp_path / "o"))


# ---------------------------------------------------------------- the rembg-like Python API
def test_python_api_returns_the_input_type(tmp_path, monkeypatch):
    from segsynth import new_session, remove

    photo = np.full((60, 80, 3), 255, np.uint8)
    photo[15:45, 20:50] = (40, 80, 160)  # a product on white: the white-background rule is exact here
    session = new_session(kind="white-threshold")
    out = remove(photo, session=session)
    assert out.shape == (60, 80, 4) and out[30, 30, 3] == 255 and out[2, 2, 3] == 0
    mask = remove(photo, session=session, only_mask=True)
    assert mask.shape == (60, 80) and mask.dtype == np.uint8
    pil = remove(Image.fromarray(photo), session=session, bgcolor=(0, 255, 0, 255))
    assert isinstance(pil, Image.Image) and pil.mode == "RGB" and pil.getpixel((2, 2)) == (0, 255, 0)
    png = remove(io.encode_png(photo), session=session, crop=True)
    cropped = io.decode_rgba(png)
    assert png[:4] == b"\x89PNG" and cropped.shape[:2] == (34, 34)  # the 30 px box and 5% (2 px) around it
    # a real checkpoint through the same call; bytes in, WebP out
    ckpt = new_session(_tiny_checkpoint(tmp_path / "ckpt"))
    webp = remove(io.encode_jpeg(photo), session=ckpt, fmt="webp")
    assert webp[:4] == b"RIFF" and Image.open(__import__("io").BytesIO(webp)).size == (80, 60)
    with pytest.raises(TypeError, match="bytes, a PIL image or a numpy array"):
        remove("chair.jpg", session=session)
    monkeypatch.delenv("SEGSYNTH_MODEL", raising=False)
    with pytest.raises(ValueError, match="SEGSYNTH_MODEL"):
        new_session()


def test_cli_only_mask_bg_and_crop(tmp_path):
    src = tmp_path / "in" / "a.png"
    src.parent.mkdir(parents=True)
    photo = np.full((60, 80, 3), 255, np.uint8)
    photo[15:45, 20:50] = (40, 80, 160)
    Image.fromarray(photo).save(src)
    assert main(_args([str(src), "--out", str(tmp_path / "m"), "--kind", "white-threshold", "--only-mask", "--crop",
                       "--no-progress"])) == 0
    assert io.read_mask(tmp_path / "m" / "a.png").shape == (34, 34)
    assert main(_args([str(src), "--out", str(tmp_path / "c"), "--kind", "white-threshold", "--bg", "#00ff00",
                       "--format", "jpeg", "--no-progress"])) == 0
    assert io.read_image(tmp_path / "c" / "a.jpg")[2, 2, 1] > 240
    assert main(_args([str(src), "--out", str(tmp_path / "x"), "--kind", "white-threshold", "--only-mask",
                       "--output", "rgba"])) == 2


def test_cli_background_photo_shadow_and_an_output_too_wide_for_its_format(tmp_path, caplog):
    src = tmp_path / "in"
    src.mkdir()
    photo = np.full((60, 80, 3), 255, np.uint8)
    photo[15:45, 20:50] = (40, 80, 160)
    Image.fromarray(photo).save(src / "a.png")
    wide = np.full((6, 16_400, 3), 255, np.uint8)
    wide[2:4, 10:40] = 0
    Image.fromarray(wide).save(src / "wide.png")  # a WebP cannot be 16400 px wide
    backdrop = np.zeros((10, 10, 3), np.uint8)
    backdrop[:] = (0, 0, 200)
    Image.fromarray(backdrop).save(tmp_path / "blue.png")
    out = tmp_path / "out"
    rc = main(_args([str(src), "--out", str(out), "--kind", "white-threshold", "--bg-image", str(tmp_path / "blue.png"),
                     "--shadow", "--format", "webp", "--no-progress"]))
    assert rc == 1 and "wide.png" in caplog.text and "16383" in caplog.text  # skipped, named, the run went on
    comp = io.read_image(out / "a.webp")
    assert comp.shape == (60, 80, 3) and comp[2, 2, 2] > 150 and comp[2, 2, 0] < 60  # over the blue photo
    assert not (out / "wide.webp").exists()
    assert main(_args([str(src / "a.png"), "--out", str(tmp_path / "m"), "--kind", "white-threshold",
                       "--bg-image", str(tmp_path / "blue.png"), "--only-mask"])) == 2
