"""Untrusted image uploads in, cutouts out: the part of serving that needs no server.

    rgb = decode_upload(data, name="photo.jpg", max_bytes=20_000_000, max_pixels=40_000_000)
    opts = CutoutOptions.parse({"output": "composite", "bg": "#ffffff"})
    body, media_type = render_cutout(rgb, mask, opts)         # mask: (H, W) float32 0..1

Used by the HTTP endpoint (:mod:`segsynth.serve.service`), the ``segsynth remove`` client
in-process, and anything else that takes images from users. numpy, PIL and OpenCV only.

Every problem with an upload is an :class:`UploadError` carrying an HTTP status (400 empty or bad
option, 413 too large, 415 not an image, 422 corrupt or truncated) and a short ``code``; the
message names the input and says what would work. Sizes are checked from the header *before*
any pixel is decoded, so a decompression bomb costs nothing.
"""
from __future__ import annotations

import io as _pyio
import re
import warnings
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segsynth import io
from segsynth.preprocess import to_size

# What Image.open may try: common photo formats only (no EPS/PDF, which shell out, nor exotic codecs).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")  # JPEG covers MPO (multi-picture)
OUTPUTS = ("rgba", "mask", "composite")
FORMATS = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
EXTENSIONS = {"png": ".png", "webp": ".webp", "jpeg": ".jpg"}
DEFAULT_MAX_BYTES = 20_000_000
DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP: bigger than any phone photo, far below a bomb


class UploadError(ValueError):
    """An upload or option the endpoint refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def as_dict(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


def decode_upload(data: bytes, name: str = "upload", max_bytes: int = DEFAULT_MAX_BYTES,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Upload bytes -> ``(H, W, 3) uint8`` RGB, upright (EXIF orientation applied).

    Grayscale, palette, CMYK, 16-bit and images with alpha (RGBA, LA, PA, palette transparency)
    are accepted; alpha is composited over white, so transparent pixels read as background. The
    first frame of an animation is used. Raises :class:`UploadError` (400 empty, 413 over
    ``max_bytes`` or ``max_pixels``, 415 not an image, 422 corrupt or truncated). The same as
    ``load_upload(open_upload(...))``, for callers that reserve memory in between.
    """
    return load_upload(open_upload(data, name, max_bytes, max_pixels), name)


def open_upload(data: bytes, name: str = "upload", max_bytes: int = DEFAULT_MAX_BYTES,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The upload's header only, checked: a PIL image whose ``size`` is known and whose pixels
    are not decoded yet (:func:`load_upload` decodes them). Cheap: a server reserves memory for
    ``size`` before paying for the pixels."""
    if not data:
        raise UploadError(400, "empty", f"{name}: the upload is empty; send an image (JPEG, PNG, WebP) "
                                        "as multipart field 'file' or as the request body")
    if len(data) > max_bytes:
        raise UploadError(413, "too_large", f"{name}: {len(data)} bytes is over the limit of {max_bytes} bytes; "
                                            "send a smaller file")
    try:
        with warnings.catch_warnings():  # our own max_pixels check below replaces PIL's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(_pyio.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise UploadError(415, "not_an_image", f"{name}: not an image in a supported format "
                                               f"({', '.join(ALLOWED_FORMATS)})") from None
    except Image.DecompressionBombError:  # PIL's own header check (> 2x its MAX_IMAGE_PIXELS)
        raise UploadError(413, "too_many_pixels", f"{name}: the image header declares more than "
                                                  f"{max_pixels} pixels; send an image of at most "
                                                  f"{max_pixels} pixels") from None
    except (OSError, ValueError, SyntaxError) as e:  # a header PIL recognises but cannot parse
        raise UploadError(422, "corrupt", f"{name}: unreadable image header ({e})") from None
    w, h = im.size
    if w * h > max_pixels:  # from the header only: nothing decoded yet
        im.close()
        raise UploadError(413, "too_many_pixels", f"{name}: {w}x{h} = {w * h} pixels is over the limit of "
                                                  f"{max_pixels} pixels; downscale it first")
    if w < 1 or h < 1:
        im.close()
        raise UploadError(422, "corrupt", f"{name}: the image has no pixels ({w}x{h})")
    return im


def load_upload(im: Image.Image, name: str = "upload") -> np.ndarray:
    """An image from :func:`open_upload` -> ``(H, W, 3) uint8`` RGB, upright; closes ``im``."""
    with im:
        try:
            im.load()  # decode the pixels (first frame); a truncated file fails here
            im = ImageOps.exif_transpose(im) or im
            return _to_rgb(im)
        except UploadError:
            raise
        except Exception as e:  # noqa: BLE001  untrusted bytes: any codec failure is the upload's fault
            msg = str(e)
            code = "truncated" if "truncated" in msg or isinstance(e, EOFError) else "corrupt"
            raise UploadError(422, code, f"{name}: the image data is {code} ({type(e).__name__}: {msg}); "
                                         "re-export or re-upload the file") from None


# Working memory of one image through the endpoint, in two phases that do not overlap: decoding (PIL's
# buffer, an EXIF-rotated or converted copy, the numpy view of it and the RGB result), then mask ->
# refine -> render -> encode (the RGB photo and its full-size mask held, the renderer's float planes,
# the encoded output). Peak resident memory above the process's baseline (Linux VmHWM), 2026-12-06:
# per pixel (the slope over 0.5, 1.9 and 7.7 MP photos) rgba or mask as PNG 21 bytes, WebP 31,
# composite 45, composite over a bg_image 54, shadow=true 64; decoding a 12 MP photo RGB 13, L 10,
# 16-bit gray 8, CMYK 17, RGBA 16, LA 19, palette with transparency 13 (RGBA, LA and palette with alpha
# took 53-59 while their alpha was composited over the whole image at once in float32). On top of that
# a part that does not grow with the photo: up to 15 MB (refine's working resolution, the encoders'
# buffers, the bands alpha is composited in).
BYTES_PER_PIXEL = 32  # output rgba or mask, as PNG, no shadow
RICH_BYTES_PER_PIXEL = 64  # composite (over a colour or a bg_image), or a WebP or JPEG encoder
SHADOW_BYTES_PER_PIXEL = 80  # shadow=true, whatever the output
FIXED_WORKING_BYTES = 24_000_000  # per image, whatever its size
DECODE_BASE_BYTES_PER_PIXEL = 16  # the RGB array (3), the numpy copy PIL hands over (3-4), a converted copy (4), slack
COMPOSITE_BAND_PIXELS = 1 << 18  # alpha is composited over white this many pixels at a time (~14 MB of float32)


def stored_bytes_per_pixel(mode: str) -> int:
    """What PIL holds per pixel for an image of ``mode`` (1, L and P: one byte; 16-bit gray: two;
    every other mode, RGB included, is stored in four)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def decode_bytes_per_pixel(mode: str) -> int:
    """Peak bytes per pixel of :func:`load_upload` for an image of ``mode`` (the header's): PIL's
    buffer and its EXIF-rotated copy (two of the mode's stored size) on top of
    :data:`DECODE_BASE_BYTES_PER_PIXEL`."""
    return 2 * stored_bytes_per_pixel(mode) + DECODE_BASE_BYTES_PER_PIXEL


def working_bytes(width: int, height: int, mode: str = "RGB", opts: "CutoutOptions | None" = None,
                  background: bool = False) -> int:
    """The memory one ``width x height`` upload of PIL ``mode`` (from its header) needs in flight,
    for the output ``opts`` asks for (None: decoding only, as for a ``bg_image``); ``background``:
    composited over a ``bg_image``. What a replica's budget counts before a pixel is decoded: the
    larger of the decode phase (:func:`decode_bytes_per_pixel`) and the render phase
    (:data:`BYTES_PER_PIXEL`, :data:`RICH_BYTES_PER_PIXEL` or :data:`SHADOW_BYTES_PER_PIXEL`) per
    pixel, plus :data:`FIXED_WORKING_BYTES`."""
    per_pixel = decode_bytes_per_pixel(mode)
    if opts is not None:
        if opts.shadow:
            per_pixel = max(per_pixel, SHADOW_BYTES_PER_PIXEL)
        elif opts.output == "composite" or opts.format != "png" or background:
            per_pixel = max(per_pixel, RICH_BYTES_PER_PIXEL)
        else:
            per_pixel = max(per_pixel, BYTES_PER_PIXEL)
    return int(width) * int(height) * per_pixel + FIXED_WORKING_BYTES


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL mode -> ``(H, W, 3) uint8`` RGB; alpha composited over white. Float arithmetic
    runs on bands of rows (:data:`COMPOSITE_BAND_PIXELS`), so its intermediates stay a few MB
    whatever the image's size (:func:`decode_bytes_per_pixel` counts on it)."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):  # 16-bit and float: scale, don't clip
        arr = np.asarray(im)
        if mode == "F":
            hi = float(np.nanmax(arr)) if arr.size else 1.0
            scale = 255.0 if hi <= 1.0 else 255.0 / hi
        else:  # 16-bit data (PNG 16-bit gray opens as "I" or "I;16")
            scale = 1.0 / 257.0 if arr.max(initial=0) > 255 else None

        def gray(rows: np.ndarray) -> np.ndarray:
            if mode == "F":
                rows = np.nan_to_num(rows) * scale
            elif scale is not None:
                rows = rows / 257.0
            return np.clip(np.rint(rows), 0, 255).astype(np.uint8)[:, :, None]

        return _by_bands(arr, gray)
    if (mode == "P" and "transparency" in im.info) or mode in ("PA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        def over_white(rows: np.ndarray) -> np.ndarray:
            rgba = rows.astype(np.float32)
            alpha = rgba[:, :, 3:4] / 255.0
            return np.rint(rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)

        return _by_bands(np.asarray(im), over_white)
    if im.mode != "RGB":  # 1, L, P, CMYK, YCbCr, LAB, HSV
        im = im.convert("RGB")
    return np.array(im, dtype=np.uint8)


def _by_bands(arr: np.ndarray, fn) -> np.ndarray:
    """``fn`` over bands of ``arr``'s rows into one ``(H, W, 3) uint8`` (``fn`` may return one
    channel: it is repeated)."""
    h, w = arr.shape[:2]
    out = np.empty((h, w, 3), np.uint8)
    step = max(1, COMPOSITE_BAND_PIXELS // max(w, 1))
    for y in range(0, h, step):
        out[y:y + step] = fn(arr[y:y + step])
    return out


# ---------------------------------------------------------------- output options and rendering
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


@dataclass(frozen=True)
class CutoutOptions:
    """What to return for one image.

    ``output``: ``rgba`` (the input with the mask as alpha), ``mask`` (8-bit gray) or
    ``composite`` (the cutout over ``bg``); ``threshold``: None keeps the soft alpha, else
    ``mask >= threshold`` is opaque; ``format``: png, webp or jpeg (jpeg has no alpha, so
    ``rgba`` with jpeg is refused rather than silently flattened); ``crop``: only the product's
    box with a margin (the whole image when the mask is empty); ``refine``: the mask's edges
    sharpened by the full-resolution photo (:func:`segsynth.refine.refine_mask`); ``shadow``: the
    product's own contact shadow kept as partial alpha (:func:`segsynth.shadow.contact_shadow`).
    """

    output: str = "rgba"
    bg: tuple[int, int, int] = (255, 255, 255)
    threshold: float | None = None
    format: str = "png"
    crop: bool = False  # crop to the product's box (alpha >= 50%) grown by CROP_MARGIN of its longer side
    refine: bool = True  # sharpen the mask's edges with the full-resolution photo (segsynth.refine) when it is large
    shadow: bool = False  # keep the product's contact shadow on a plain backdrop as partial (black) alpha

    def __post_init__(self):
        if self.output not in OUTPUTS:
            raise UploadError(400, "bad_option", f"output={self.output!r}; valid: {', '.join(OUTPUTS)}")
        if self.format not in FORMATS:
            raise UploadError(400, "bad_option", f"format={self.format!r}; valid: {', '.join(FORMATS)}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise UploadError(400, "bad_option", f"threshold={self.threshold}; expected a number in 0..1 "
                                                 "(leave it out for a soft alpha)")
        if self.output == "rgba" and self.format == "jpeg":
            raise UploadError(400, "bad_option", "format=jpeg has no alpha channel; use format=png or webp, "
                                                 "or output=composite (with bg=#rrggbb) or output=mask")

    @property
    def media_type(self) -> str:
        return FORMATS[self.format]

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]

    @classmethod
    def parse(cls, params: Mapping[str, str | None]) -> "CutoutOptions":
        """From query/form strings: ``output``, ``bg`` (``#rrggbb``), ``threshold``, ``format``,
        ``crop``, ``refine``, ``shadow`` (true/false)."""
        unknown = sorted(set(params) - set(OPTION_NAMES))
        if unknown:
            raise UploadError(400, "bad_option", f"unknown option {unknown[0]!r}; valid: {', '.join(OPTION_NAMES)}")
        kw: dict = {}
        for flag_name in ("crop", "refine", "shadow"):
            if params.get(flag_name) not in (None, ""):
                flag = str(params[flag_name]).lower()
                if flag not in ("true", "false", "1", "0"):
                    raise UploadError(400, "bad_option", f"{flag_name}={params[flag_name]!r}; expected true or false")
                kw[flag_name] = flag in ("true", "1")
        if params.get("output"):
            kw["output"] = str(params["output"]).lower()
        if params.get("format"):
            fmt = str(params["format"]).lower()
            kw["format"] = "jpeg" if fmt == "jpg" else fmt
        if params.get("bg"):
            m = _HEX.match(str(params["bg"]).strip())
            if not m:
                raise UploadError(400, "bad_option", f"bg={params['bg']!r}; expected a colour like #ffffff")
            v = m.group(1)
            kw["bg"] = (int(v[0:2], 16), int(v[2:4], 16), int(v[4:6], 16))
        if params.get("threshold") not in (None, ""):
            try:
                kw["threshold"] = float(params["threshold"])  # type: ignore[arg-type]
            except ValueError:
                raise UploadError(400, "bad_option", f"threshold={params['threshold']!r}; expected a number "
                                                     "in 0..1") from None
        return cls(**kw)


OPTION_NAMES = ("output", "bg", "threshold", "format", "crop", "refine", "shadow")
CROP_MARGIN = 0.05  # crop=true keeps this share of the product box's longer side around it


def crop_box(alpha: np.ndarray, margin: float = CROP_MARGIN) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)``: the box of ``alpha >= 128`` grown by ``margin`` times its longer
    side, within the image; the whole image when nothing is that opaque."""
    h, w = alpha.shape
    ys, xs = np.nonzero(alpha >= 128)
    if ys.size == 0:
        return 0, h, 0, w
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    g = round(margin * max(y1 - y0, x1 - x0))
    return max(0, y0 - g), min(h, y1 + g), max(0, x0 - g), min(w, x1 + g)


def cutout_pixels(rgb: np.ndarray, mask: np.ndarray, opts: CutoutOptions,
                  background: np.ndarray | None = None) -> np.ndarray:
    """``rgb (H, W, 3) uint8`` + ``mask (H, W) float32 0..1`` -> the output's pixels:
    ``(H, W, 4)`` for rgba, ``(H, W)`` for mask, ``(H, W, 3)`` for composite (all uint8; the
    product's box instead of ``(H, W)`` with ``crop``). ``background (h, w, 3) uint8``, any size:
    composite over it (scaled to cover the output and centred) instead of ``opts.bg``. ``mask``
    may be at the network's scale (the image's aspect, smaller): it is resized here, or refined
    straight from it."""
    m = mask.astype(np.float32, copy=False)
    if opts.refine:
        from segsynth.refine import refine_mask

        m = refine_mask(rgb, m)  # photos up to 640 px: only resized, the model's own edges are at that scale
    elif m.shape != rgb.shape[:2]:
        m = to_size(m, rgb.shape[:2])
    if opts.threshold is not None:
        m = (m >= opts.threshold).astype(np.float32)
    alpha = np.rint(np.clip(m, 0.0, 1.0) * 255.0).astype(np.uint8)
    shade = None  # the contact shadow's alpha, uint8, where the product is not
    if opts.shadow:
        from segsynth.shadow import contact_shadow

        shade = np.rint(contact_shadow(rgb, m) * 255.0).astype(np.uint8)
    if opts.crop:
        y0, y1, x0, x1 = crop_box(alpha if shade is None else np.maximum(alpha, shade))
        rgb, alpha = rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1]
        shade = None if shade is None else shade[y0:y1, x0:x1]
    if opts.output == "mask":
        return alpha if shade is None else np.maximum(alpha, shade)
    if opts.output == "rgba":
        if shade is None:
            return np.dstack([rgb, alpha])
        shadow_only = shade > alpha  # black at the shadow's opacity: it darkens whatever goes behind
        return np.dstack([np.where(shadow_only[:, :, None], 0, rgb), np.maximum(alpha, shade)]).astype(np.uint8)
    a = alpha[:, :, None].astype(np.float32) / 255.0
    bg = np.asarray(opts.bg, np.float32) if background is None else cover(background, rgb.shape[:2]).astype(np.float32)
    if shade is not None:
        bg = bg * (1.0 - shade[:, :, None].astype(np.float32) / 255.0)
    return np.rint(rgb.astype(np.float32) * a + bg * (1.0 - a)).astype(np.uint8)


def cover(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image (h, w, 3) uint8`` scaled to cover ``size = (H, W)`` and centre-cropped to it."""
    import cv2

    H, W = size
    h, w = image.shape[:2]
    scale = max(H / h, W / w)
    nh, nw = max(H, round(h * scale)), max(W, round(w * scale))
    if (nh, nw) != (h, w):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    y0, x0 = (nh - H) // 2, (nw - W) // 2
    return image[y0:y0 + H, x0:x0 + W]


# The largest side each encoder writes (libwebp: 16383 px; JPEG's header: 65535 px; PNG: 2^31 - 1)
MAX_SIDE = {"png": 2**31 - 1, "webp": 16383, "jpeg": 65535}


def encode_output(pixels: np.ndarray, fmt: str = "png", quality: int = 90) -> bytes:
    """``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` uint8 -> PNG, WebP or JPEG bytes. An output
    wider or taller than the format allows (:data:`MAX_SIDE`) is an :class:`UploadError` (422)
    naming a format that can hold it."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    h, w = pixels.shape[:2]
    if max(h, w) > MAX_SIDE[fmt]:
        fits = [f for f in FORMATS if max(h, w) <= MAX_SIDE[f] and not (f == "jpeg" and pixels.ndim == 3
                                                                         and pixels.shape[2] == 4)]
        raise UploadError(422, "too_large_for_format", f"the output is {w}x{h} px; {fmt} holds at most "
                                                       f"{MAX_SIDE[fmt]} px a side; use format={fits[0]}"
                                                       " or downscale the image")
    if fmt == "png":
        return io.encode_png(pixels)  # the fast (level 1) encoder every stage uses
    buf = _pyio.BytesIO()
    im = Image.fromarray(pixels)
    if fmt == "webp":
        im.save(buf, format="WEBP", quality=quality, method=4)
    else:
        if im.mode == "RGBA":
            raise ValueError("JPEG has no alpha: composite the cutout first")
        im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def render_cutout(rgb: np.ndarray, mask: np.ndarray, opts: CutoutOptions,
                  background: np.ndarray | None = None) -> tuple[bytes, str]:
    """The encoded output for one image and its media type (``background``: see :func:`cutout_pixels`)."""
    return encode_output(cutout_pixels(rgb, mask, opts, background), opts.format), opts.media_type
