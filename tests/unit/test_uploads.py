"""Upload decoding (every mode, EXIF, every refusal) and cutout rendering; no server."""
from __future__ import annotations

import io as pyio
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from segsynth.serve.uploads import CutoutOptions, UploadError, cutout_pixels, decode_upload, encode_output, render_cutout


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = pyio.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _gradient(w=40, h=30) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full_like(x, 128)]).astype(np.uint8)


def _status(data: bytes, **kw) -> tuple[int, str]:
    with pytest.raises(UploadError) as e:
        decode_upload(data, "x", **kw)
    return e.value.status, e.value.code


# ---------------------------------------------------------------- accepted inputs
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF"])
def test_rgb_formats_decode_at_their_size(fmt):
    rgb = decode_upload(_save(Image.fromarray(_gradient()), fmt))
    assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8


def test_grayscale_palette_cmyk_and_bilevel():
    g = Image.fromarray(_gradient()[:, :, 0])
    for im, fmt in [(g, "PNG"), (g.convert("P"), "PNG"), (Image.fromarray(_gradient()).convert("CMYK"), "JPEG"),
                    (g.convert("1"), "PNG"), (Image.fromarray(_gradient()).convert("P"), "GIF")]:
        rgb = decode_upload(_save(im, fmt))
        assert rgb.shape == (30, 40, 3), (im.mode, fmt)
    gray = decode_upload(_save(g, "PNG"))
    assert np.array_equal(gray[:, :, 0], gray[:, :, 2]) and gray[0, -1, 0] == 255


def test_sixteen_bit_is_scaled_not_clipped():
    arr = np.linspace(0, 65535, 30 * 40).reshape(30, 40).astype(np.uint16)
    rgb = decode_upload(_save(Image.fromarray(arr), "PNG"))
    assert rgb.shape == (30, 40, 3)
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255 and 100 < rgb[15, 20, 0] < 155  # midtones survive


def test_alpha_is_composited_over_white():
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[:, :6] = (200, 10, 10, 255)  # opaque red on the left, fully transparent black on the right
    rgb = decode_upload(_save(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert tuple(rgb[0, 0]) == (200, 10, 10) and tuple(rgb[0, -1]) == (255, 255, 255)
    la = Image.fromarray(rgba[:, :, [0, 3]], "LA")
    assert tuple(decode_upload(_save(la, "PNG"))[0, -1]) == (255, 255, 255)


def test_exif_orientation_is_applied():
    im = Image.fromarray(_gradient(40, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the upright image is 30 wide, 40 high
    rgb = decode_upload(_save(im, "JPEG", exif=exif))
    assert rgb.shape == (40, 30, 3)


# ---------------------------------------------------------------- refused inputs
def test_empty_and_not_an_image():
    assert _status(b"") == (400, "empty")
    assert _status(b"hello, this is text, not a picture") == (415, "not_an_image")
    assert _status(b"%PDF-1.4\n...") == (415, "not_an_image")


def test_truncated_file_is_422():
    data = _save(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "PNG")
    status, code = _status(data[: len(data) // 2])
    assert status == 422 and code in ("truncated", "corrupt")
    jpeg = _save(Image.fromarray(_gradient(64, 64)), "JPEG")
    assert _status(jpeg[: len(jpeg) // 2])[0] == 422


def test_byte_and_pixel_limits():
    data = _save(Image.fromarray(_gradient()), "PNG")
    assert _status(data, max_bytes=len(data) - 1) == (413, "too_large")
    assert _status(data, max_pixels=40 * 30 - 1) == (413, "too_many_pixels")
    assert decode_upload(data, max_pixels=40 * 30).shape == (30, 40, 3)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` but holds almost no data (a bomb's shape)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [8_000, 100_000])
def test_decompression_bomb_refused_from_the_header(side):
    # 8k x 8k passes PIL's own check and is caught by ours; 100k x 100k trips PIL's in open()
    assert _status(_png_header_only(side, side), max_pixels=40_000_000) == (413, "too_many_pixels")


# ---------------------------------------------------------------- options and rendering
def test_options_parse_and_refuse():
    o = CutoutOptions.parse({"output": "composite", "bg": "#00ff80", "threshold": "0.5", "format": "jpg"})
    assert (o.output, o.bg, o.threshold, o.format, o.media_type) == ("composite", (0, 255, 128), 0.5, "jpeg", "image/jpeg")
    assert CutoutOptions.parse({"output": None, "bg": None, "threshold": "", "format": None}) == CutoutOptions()
    for bad in [{"output": "cutout"}, {"bg": "red"}, {"threshold": "x"}, {"threshold": "2"}, {"format": "gif"},
                {"format": "jpeg"}, {"colour": "x"}]:
        with pytest.raises(UploadError) as e:
            CutoutOptions.parse(bad)
        assert e.value.status == 400 and e.value.code == "bad_option"


def test_cutout_pixels_per_output():
    rgb = _gradient(8, 6)
    mask = np.tile(np.linspace(0, 1, 8, dtype=np.float32), (6, 1))
    rgba = cutout_pixels(rgb, mask, CutoutOptions())
    assert rgba.shape == (6, 8, 4) and rgba[0, 0, 3] == 0 and rgba[0, -1, 3] == 255 and 0 < rgba[0, 3, 3] < 255
    hard = cutout_pixels(rgb, mask, CutoutOptions(output="mask", threshold=0.5))
    assert hard.shape == (6, 8) and set(np.unique(hard)) == {0, 255}
    comp = cutout_pixels(rgb, mask, CutoutOptions(output="composite", bg=(0, 0, 255)))
    assert tuple(comp[0, 0]) == (0, 0, 255) and np.array_equal(comp[:, -1], rgb[:, -1])


@pytest.mark.parametrize("output,fmt,mode", [("rgba", "png", "RGBA"), ("rgba", "webp", "RGBA"), ("mask", "png", "L"),
                                             ("mask", "jpeg", "L"), ("composite", "jpeg", "RGB")])
def test_render_round_trips_through_pil(output, fmt, mode):
    rgb, mask = _gradient(20, 10), np.full((10, 20), 0.75, np.float32)
    body, media_type = render_cutout(rgb, mask, CutoutOptions(output=output, format=fmt))
    im = Image.open(pyio.BytesIO(body))
    assert im.size == (20, 10) and im.mode == mode and media_type == f"image/{fmt}"


def test_encode_output_refuses_alpha_jpeg():
    with pytest.raises(ValueError, match="alpha"):
        encode_output(np.zeros((4, 4, 4), np.uint8), "jpeg")


def _studio_shot(with_shadow: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A box on a white backdrop casting a soft shadow to its right: (rgb, product mask, true shadow opacity)."""
    h, w = 120, 160
    rgb = np.full((h, w, 3), 250, np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    shadow = np.zeros((h, w), np.float32)
    if with_shadow:
        shadow = np.clip(0.6 - np.hypot((xx - 95) / 24.0, (yy - 88) / 8.0) * 0.6, 0, None)
    rgb *= (1.0 - shadow)[:, :, None]
    product = np.zeros((h, w), np.float32)
    product[40:90, 50:90] = 1.0
    rgb[product > 0] = (30, 90, 150)
    shadow[product > 0] = 0
    return np.rint(rgb).astype(np.uint8), product, shadow


def test_contact_shadow_is_kept_on_a_plain_backdrop_only():
    from segsynth.shadow import contact_shadow

    rgb, product, truth = _studio_shot()
    got = contact_shadow(rgb, product)
    strong = truth > 0.2
    assert np.abs(got[strong] - truth[strong]).max() < 0.05  # a = 1 - L / B, where the shadow is clear
    assert got[product > 0].max() == 0 and got[:, :10].max() == 0  # not on the product, not far from it
    clean, product, _ = _studio_shot(with_shadow=False)
    assert contact_shadow(clean, product).max() == 0  # no shadow, nothing invented
    busy = np.random.default_rng(0).integers(0, 255, rgb.shape, np.uint8)  # a textured scene: no backdrop to read
    busy[40:90, 50:90] = (30, 90, 150)
    assert contact_shadow(busy, product).max() == 0


def test_shadow_option_in_every_output():
    rgb, product, truth = _studio_shot()
    plain = CutoutOptions.parse({"refine": "false"})
    shaded = CutoutOptions.parse({"shadow": "true", "refine": "false"})
    assert cutout_pixels(rgb, product, plain)[88, 100, 3] == 0  # a shadow is background by default
    rgba = cutout_pixels(rgb, product, shaded)
    assert abs(int(rgba[88, 100, 3]) - round(truth[88, 100] * 255)) <= 13 and tuple(rgba[88, 100, :3]) == (0, 0, 0)
    assert tuple(rgba[60, 70]) == (30, 90, 150, 255)  # the product as it was
    mask = cutout_pixels(rgb, product, CutoutOptions.parse({"shadow": "true", "refine": "false", "output": "mask"}))
    assert mask[88, 100] == rgba[88, 100, 3]
    comp = cutout_pixels(rgb, product, CutoutOptions.parse({"shadow": "true", "refine": "false", "output": "composite",
                                                            "bg": "#00ff00"}))
    assert 0 < comp[88, 100, 1] < 255 * (1 - truth[88, 100]) + 13 and comp[5, 5, 1] == 255  # the new bg, darkened


def test_background_photo_covers_the_output():
    from segsynth.serve.uploads import cover

    bg = np.zeros((10, 40, 3), np.uint8)
    bg[:, :20] = 255  # left half white, right half black
    out = cover(bg, (20, 20))  # scaled x2 to cover 20 px of height, centred: the middle 20 columns
    assert out.shape == (20, 20, 3) and out[:, :9].min() == 255 and out[:, 11:].max() == 0
    rgb = np.full((20, 20, 3), 255, np.uint8)
    mask = np.zeros((20, 20), np.float32)
    comp = cutout_pixels(rgb, mask, CutoutOptions(output="composite", refine=False), background=bg)
    assert np.array_equal(comp, out)


def test_outputs_beyond_an_encoders_size_limit_are_422_naming_a_format_that_fits():
    with pytest.raises(UploadError) as e:
        encode_output(np.zeros((2, 16_384), np.uint8), "webp")
    assert e.value.status == 422 and e.value.code == "too_large_for_format" and "format=png" in e.value.message
    with pytest.raises(UploadError):
        encode_output(np.zeros((65_536, 1, 3), np.uint8), "jpeg")
    assert encode_output(np.zeros((2, 16_383), np.uint8), "webp")[:4] == b"RIFF"


# ---------------------------------------------------------------- working memory, measured
def _peak_rss_above_now(fn) -> tuple[object, int]:
    """``fn()`` and the peak resident memory it added to this process (Linux: VmHWM, reset first)."""
    def status(key: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak (VmHWM) starts again from the current resident size
    before = status("VmRSS")
    out = fn()
    return out, status("VmHWM") - before


def _can_measure_peak_rss() -> bool:
    try:
        _peak_rss_above_now(lambda: None)
        return True
    except OSError:
        return False


needs_peak_rss = pytest.mark.skipif(not _can_measure_peak_rss(), reason="needs Linux /proc/self/clear_refs")


def _flat_scene(w: int, h: int) -> Image.Image:
    """What compresses to almost nothing: a flat backdrop, a box, a half-transparent disc (RGBA)."""
    from PIL import ImageDraw

    im = Image.new("RGBA", (w, h), (240, 240, 240, 255))
    draw = ImageDraw.Draw(im)
    draw.rectangle([w // 5, h // 5, w * 3 // 4, h * 4 // 5], fill=(40, 60, 90, 255))
    draw.ellipse([w // 2, h // 2, w - 1, h - 1], fill=(200, 20, 20, 120))
    return im


@needs_peak_rss
def test_decoding_stays_within_the_budget_its_header_declares():
    """Issue 23: a flat RGBA PNG of a few hundred KB decoded at ~56 bytes/pixel (float32 over the whole
    image) while the budget counted 32. Every mode's decode peak must stay within what
    decode_bytes_per_pixel(mode) reserves from the header alone."""
    from segsynth.serve.uploads import (FIXED_WORKING_BYTES, decode_bytes_per_pixel, load_upload, open_upload,
                                        working_bytes)

    w, h = 3000, 2000
    scene = _flat_scene(w, h)
    palette = scene.convert("RGB").quantize(colors=8, dither=Image.Dither.NONE)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated on decode: a second full-size copy for a moment
    cases = {"RGBA": _save(scene, "PNG"), "RGBA rotated": _save(scene, "PNG", exif=exif),
             "LA": _save(scene.convert("LA"), "PNG"), "P with transparency": _save(palette, "PNG", transparency=0),
             "16-bit gray": _save(Image.fromarray(np.asarray(scene.convert("L")).astype(np.uint16) * 257), "PNG"),
             "RGB": _save(scene.convert("RGB"), "PNG"), "CMYK": _save(scene.convert("RGB").convert("CMYK"), "JPEG")}
    for label, data in cases.items():
        assert len(data) < 400_000, label  # small uploads: the bytes say nothing about the memory
        im = open_upload(data, label)
        mode, (iw, ih) = im.mode, im.size
        rgb, peak = _peak_rss_above_now(lambda: load_upload(im, label))
        assert rgb.shape[2] == 3 and rgb.shape[0] * rgb.shape[1] == w * h, label
        assert peak <= decode_bytes_per_pixel(mode) * iw * ih + FIXED_WORKING_BYTES, (label, round(peak / (w * h), 1))
        assert peak <= working_bytes(iw, ih, mode), label  # what a bg_image reserves; an output reserves more
        del rgb


@needs_peak_rss
@pytest.mark.parametrize("opts, with_background", [
    (CutoutOptions(), False), (CutoutOptions(output="composite"), False), (CutoutOptions(output="composite"), True),
    (CutoutOptions(format="webp"), False), (CutoutOptions(output="mask", shadow=True), False)])
def test_rendering_stays_within_the_budget_of_its_options(opts, with_background):
    """The render phase (mask -> refine -> render -> encode, with the photo and its mask held) within
    working_bytes for the options asked; a composite once counted the 32 bytes/pixel of rgba."""
    from segsynth.serve.uploads import working_bytes

    w, h = 1600, 1200
    rng = np.random.default_rng(0)
    rgb = np.full((h, w, 3), 245, np.uint8)
    rgb[300:900, 400:1200] = rng.integers(0, 255, (600, 800, 3), np.uint8)  # a textured product
    rgb[900:960, 400:1300] -= 60  # and its shadow on the backdrop
    mask = np.zeros((h, w), np.float32)
    mask[300:900, 400:1200] = 1.0
    background = rng.integers(0, 255, (500, 700, 3), np.uint8) if with_background else None
    render_cutout(rgb[:100, :100], mask[:100, :100], opts, None if background is None else background[:50, :50])
    _, peak = _peak_rss_above_now(lambda: render_cutout(rgb, mask, opts, background))
    held = rgb.nbytes + mask.nbytes  # decoded before, held through the render
    assert held + peak <= working_bytes(w, h, "RGB", opts, background=with_background), round((held + peak) / 1e6)
