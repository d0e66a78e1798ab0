"""The HTTP API behind ``segsynth serve``: FastAPI routes on :class:`RemovalService`, no Ray.

:mod:`segsynth.serve.job` makes it a Ray Serve deployment (``BackgroundRemoval``: the ingress,
one deployment, no second hop to a model deployment).

Endpoints (under ``route_prefix``):

- ``POST /v1/remove``: one image (multipart field ``file``, or the raw request body) -> the
  cutout at the input's size. Query options: ``output=rgba|mask|composite`` (default rgba;
  composite when a ``bg_image`` is sent), ``bg=#rrggbb`` (composite), ``threshold`` (0..1; soft
  alpha when absent), ``format=png|webp|jpeg`` (default png), ``crop=true`` (the product's box
  with a margin), ``refine=false`` (no guided-filter edges), ``shadow=true`` (keep the product's
  contact shadow as partial alpha). A multipart field ``bg_image`` is a background photo to
  composite over (scaled to cover, centred).
- ``POST /v1/remove:batch``: several ``file`` fields (and an optional ``bg_image`` for all) -> a
  zip (default) or, with ``response=json``, JSON with base64 results; a bad file is reported, the
  others still return.
- with an ``auth_token`` (or ``$SEGSYNTH_AUTH_TOKEN``) every route but ``/healthz`` and ``/readyz``
  (the docs too) needs ``Authorization: Bearer <token>``, else 401;
- ``GET /healthz`` (process up), ``GET /readyz`` (model loaded), ``GET /v1/model`` (model card
  and serving settings), ``GET /v1/stats`` (requests, batch sizes, time per hop, memory),
  ``GET /docs`` and ``/openapi.json``.

The request path, in order: :class:`segsynth.webapi.RequestGuard` (header limits 431, token 401,
body read deadlines 408), the body read (413 over the byte limit, before and while reading; its
size, twice for a multipart body, held in the replica's
:class:`~segsynth.serve.budget.MemoryBudget`), the multipart parse in memory
(:mod:`segsynth.serve.multipart`), the header-only open of each image (413 over the pixel limit),
one reservation for all the request's images from their headers (:func:`working_bytes`: pixels x
the worst bytes per pixel of their mode and the output asked for; 413 when the request could
never fit, else it waits, then 503 with Retry-After), decoding and letterboxing to the network's
input in a worker thread, the :class:`~segsynth.serve.batcher.Batcher` (one forward pass for the
images that arrived while the previous one ran, and nothing else: each mask comes back at the
network's scale), resizing (or refining) the mask to the photo, rendering and encoding in a worker thread (422 for an output beyond its
format's size; 413 for a response over ``max_response_bytes`` or what Ray Serve's proxy accepts,
per file in a batch). Each response carries a
``Server-Timing`` header with the time of each of those hops (``read``, ``decode``, ``queue``,
``model``, ``encode``, ``app`` for all of them); ``/v1/stats`` sums them.

Every refused input is a 4xx with ``{"error": {"code", "message"}}`` (see
:mod:`segsynth.serve.uploads`); the replica keeps serving. The images of a batch, whatever their
sizes, are resized (longer side to the model's size) and padded into one ``(N, S, S)`` tensor, so
one forward pass serves them all and the shapes the runtime sees are fixed (memory does not creep
with every new aspect ratio); each mask goes back to its own image's size outside the model thread
(``PaddedModelPredictor.prepare`` / ``forward_boxed``; other predictors run ``predict`` whole).
"""
# No `from __future__ import annotations` here: FastAPI must see the route signatures'
# types (Request) at runtime, and Serve's ingress rewrites the methods out of this module's scope.
import asyncio
import base64
import collections
import contextlib
import json
import logging
import math
import os
import posixpath
import tempfile
import time
import zipfile
from io import BytesIO
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from segsynth import io
from segsynth.config import ConfigError
from segsynth.predict import ORT_SPIN_ENV, infer_kind
from segsynth.serve.batcher import Batcher, ModelThread
from segsynth.serve.budget import MemoryBudget
from segsynth.serve.config import ServeConfig
from segsynth.serve.multipart import MEMORY_FACTOR, parse_multipart
from segsynth.serve.uploads import (FIXED_WORKING_BYTES, OPTION_NAMES, CutoutOptions, UploadError, load_upload,
                                    open_upload, render_cutout, working_bytes)
from segsynth.webapi import (bearer_token, install_error_handlers, install_request_guard, json_error, request_limits,
                             set_bearer_token, set_request_limits)

log = logging.getLogger(__name__)

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers on top of the files themselves
# Ray Serve's proxy takes a replica's answer as gRPC messages of at most this many bytes (the variable, read
# by the proxy and the replica alike from their node's environment; gRPC's default of 4 MiB without it),
# and the replica sends a response as one message: a larger one reaches the client as the proxy's 500
RESPONSE_LIMIT_ENV = "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH"
RESPONSE_LIMIT_DEFAULT = 4 * 1024 * 1024
RESPONSE_HEADROOM = 64 * 1024  # the status, headers and pickling around the body in that message

api = FastAPI(
    title="segsynth background removal",
    version="1",
    description="Send an image, get its cutout. Batched on Ray Serve; see /docs for every option.",
)


install_error_handlers(api, UploadError, validation_status=400, validation_code="bad_option")
install_request_guard(api, token=bearer_token, limits=request_limits)  # both set when a replica starts
BACKGROUND_FIELD = "bg_image"  # the multipart field of a background photo; every other file field is an image


# ---------------------------------------------------------------- model
def fetch_model(path: str) -> str:
    """A local path for ``path``: exported ``.onnx`` URIs are copied (with their ``.json`` card)
    to a temp folder, since the runtime reads local files; checkpoint folders load through
    :mod:`segsynth.io` and need no copy."""
    if not io.is_uri(path) or not path.endswith(".onnx"):
        return path
    local = tempfile.mkdtemp(prefix="segsynth-model-")
    for src in (path, path[: -len(".onnx")] + ".json"):
        if io.exists(src):
            io.write_bytes(os.path.join(local, posixpath.basename(src)), io.read_bytes(src))
    log.info("copied %s to %s", path, local)
    return os.path.join(local, posixpath.basename(path))


def model_threads(num_cpus: float) -> int:
    """The model's intra-op threads for a replica of ``num_cpus`` CPUs: as many as it asked for
    (rounded up), at least one; never every core of the node, which other replicas share."""
    return max(1, math.ceil(num_cpus))


def predictor_options(cfg: ServeConfig) -> dict[str, Any]:
    """``cfg.predictor_options``, with ``threads`` from the replica's ``num_cpus``
    (:func:`model_threads`) unless set there; a kind without threads (white-threshold) gets none."""
    options = dict(cfg.predictor_options)
    if "threads" not in options and (cfg.kind or infer_kind(cfg.model)) != "white-threshold":
        options["threads"] = model_threads(cfg.num_cpus)
    return options


def response_limit(cfg: ServeConfig) -> int:
    """The largest response body a replica sends: ``cfg.max_response_bytes``, within what Ray
    Serve's proxy accepts (:data:`RESPONSE_LIMIT_ENV`)."""
    try:
        transport = int(os.environ.get(RESPONSE_LIMIT_ENV) or RESPONSE_LIMIT_DEFAULT)
    except ValueError:
        raise ConfigError(f"${RESPONSE_LIMIT_ENV}={os.environ[RESPONSE_LIMIT_ENV]!r}; expected a number of "
                          "bytes") from None
    return max(1, min(cfg.max_response_bytes, transport - RESPONSE_HEADROOM))


def load_model(cfg: ServeConfig):
    """The predictor for ``cfg.model`` (kind inferred unless ``cfg.kind``), created once."""
    from segsynth.predict import load_predictor

    predictor = load_predictor(fetch_model(cfg.model) if cfg.model else None, kind=cfg.kind, **predictor_options(cfg))
    if hasattr(predictor, "batch_size"):  # a whole batch in one forward pass (sizes mix freely)
        predictor.batch_size = max(predictor.batch_size, cfg.max_batch_size)
    return predictor


def rss_bytes() -> int | None:
    """This process's resident memory (Linux ``/proc``), None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


# ---------------------------------------------------------------- deployment
_OPTION_DOCS = {
    "output": "rgba (cutout with alpha, default), mask (8-bit gray) or composite (over bg)",
    "bg": "background colour for output=composite, #rrggbb (default #ffffff)",
    "threshold": "0..1: alpha = mask >= threshold; absent: soft alpha",
    "format": "png (default), webp or jpeg (jpeg only for mask or composite)",
    "crop": "true: only the product's box with a 5% margin; false (default): the whole image",
    "refine": "true (default): the mask's edges follow the full-resolution photo (guided filter, photos over "
              "640 px); false: the model's mask resized as is",
    "shadow": "true: keep the product's contact shadow (on a plain backdrop) as partial black alpha; false (default): "
              "shadows are background",
}
assert set(_OPTION_DOCS) == set(OPTION_NAMES)  # every option a request may set is documented
_FILE_DOC = "the image (JPEG, PNG, WebP, BMP, TIFF, GIF)"
_BG_IMAGE_DOC = ("optional background photo: the cutout composited over it (scaled to cover, centred); implies "
                 "output=composite")


def _request_body(many: bool) -> dict:
    """The OpenAPI request body of a route that reads its body itself (multipart or raw)."""
    file_schema = {"type": "string", "format": "binary", "description": _FILE_DOC}
    files = {"type": "array", "items": file_schema, "description": "one field per image"} if many else file_schema
    content = {"multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": files, BACKGROUND_FIELD: {"type": "string", "format": "binary", "description": _BG_IMAGE_DOC}}}}}
    if not many:
        content["image/*"] = {"schema": {"type": "string", "format": "binary"},
                              "example": "the raw image bytes as the body (no bg_image then)"}
    return {"requestBody": {"required": True, "content": content}}


_ERRORS = {s: {"description": d, "content": {"application/json": {"example": {"error": {"code": c, "message": "..."}}}}}
           for s, d, c in [(400, "empty upload or bad option", "empty"), (413, "over the byte, pixel, memory or response limit", "too_large"),
                           (415, "not an image", "not_an_image"), (422, "corrupt or truncated image, or an output too large for its format", "truncated"),
                           (408, "the body arrived too slowly", "body_timeout"),
                           (431, "request headers too large", "headers_too_large"),
                           (503, "the replica's memory budget stayed full (retry after Retry-After)", "busy")]}


class RemovalService:
    """One replica: the model, loaded once, behind the HTTP API (see the module docstring)."""

    def __init__(self, cfg: ServeConfig):
        started = time.perf_counter()
        self.cfg = cfg = cfg.with_token()
        set_bearer_token(cfg.auth_token)
        set_request_limits(cfg.request_limits)
        os.environ.setdefault(ORT_SPIN_ENV, "0")  # this process's cores are shared: see segsynth.predict
        # the model is loaded, warmed up and run on one thread (see ModelThread)
        self.model_thread = ModelThread()
        self.predictor = self.model_thread.submit(load_model, cfg).result()
        # warm-up with a FULL batch: the runtime's memory arena reaches its largest shape now, so
        # resident memory does not creep up later as bigger batches happen (and request 1 is not slow)
        self.model_thread.submit(self.predictor.predict, [np.zeros((64, 48, 3), np.uint8)] * cfg.max_batch_size).result()
        # the model thread does the forward passes alone when the predictor can split them off: the
        # decode thread letterboxes each image, the encode thread resizes (or refines) each mask
        self.staged = hasattr(self.predictor, "forward_boxed")
        run = self.predictor.forward_boxed if self.staged else self.predictor.predict
        self.batcher = Batcher(run, cfg.max_batch_size, cfg.batch_wait_timeout_s, executor=self.model_thread)
        self.budget = MemoryBudget(cfg.memory_budget_bytes, cfg.memory_wait_s)
        self.max_response_bytes = response_limit(cfg)
        self.model_threads = predictor_options(cfg).get("threads")
        self.load_s = round(time.perf_counter() - started, 2)
        self.counts: collections.Counter = collections.Counter()
        self.errors: collections.Counter = collections.Counter()
        self.hops: collections.Counter = collections.Counter()  # hop -> seconds, summed over single-image requests
        log.info("replica ready: %s in %.1f s (pid %d)", self.predictor.name, self.load_s, os.getpid())

    # ---------------------------------------------------------- helpers
    @staticmethod
    def _multipart(request: Request) -> bool:
        return request.headers.get("content-type", "").lower().startswith("multipart/form-data")

    def _body_limit(self, request: Request, max_files: int) -> tuple[int, bool]:
        multipart = self._multipart(request)
        limit = self.cfg.max_upload_bytes * max_files + (MULTIPART_OVERHEAD if multipart else 0)
        return min(limit, self.cfg.max_request_bytes), multipart

    @contextlib.asynccontextmanager
    async def _body(self, request: Request, max_files: int):
        """Reads the body within the memory budget and yields ``(files, background, reserved)``:
        ``files`` is ``[(name, bytes)]`` from a multipart body's file fields (or the raw body),
        ``background`` the ``bg_image`` field's ``(name, bytes)`` or None, ``reserved`` the bytes
        held for the body. Reserved before a byte is read: the
        declared length (else the limit), twice for a multipart body, whose parts are copies of its
        slices (:mod:`segsynth.serve.multipart`: parsed in memory, no temp files). Bodies over the
        byte limit are refused before and while reading them."""
        limit, multipart = self._body_limit(request, max_files)
        declared = request.headers.get("content-length", "")
        too_large = f"the request body is over the limit of {limit} bytes; send a smaller image"
        if declared.isdigit() and int(declared) > limit:
            raise UploadError(413, "too_large", too_large)
        reserved = (int(declared) if declared.isdigit() else limit) * (MEMORY_FACTOR if multipart else 1)
        async with self.budget.reserve(reserved, "the request body"):
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise UploadError(413, "too_large", too_large)
                chunks.append(chunk)
            body = b"".join(chunks)
            del chunks
            if not multipart:
                yield [("body", body)], None, reserved
                return
            yield (*self._form_files(body, request.headers.get("content-type", ""), max_files), reserved)

    @staticmethod
    def _form_files(body: bytes, content_type: str, max_files: int):
        parts = parse_multipart(body, content_type, max_files=max_files + 1)  # + 1: the bg_image field
        files, background = [], None
        for part in parts:
            if part.filename is None:  # a plain form field: options travel in the query string
                continue
            if part.field == BACKGROUND_FIELD:
                background = (f"{BACKGROUND_FIELD} ({part.filename})", part.data)
            else:
                files.append((part.filename or f"file{len(files)}", part.data))
        if not files:
            raise UploadError(400, "no_file", "the multipart body holds no image; send it as field 'file'")
        if len(files) > max_files:
            raise UploadError(400, "bad_multipart", f"{len(files)} images; send at most {max_files} per request")
        return files, background

    def _open(self, name: str, data: bytes):
        """The upload's header, checked (:func:`open_upload`: its size and mode, no pixels yet)."""
        return open_upload(data, name, self.cfg.max_upload_bytes, self.cfg.max_pixels)

    @contextlib.asynccontextmanager
    async def _admitted(self, images: list, background, opts: CutoutOptions, what: str, body_bytes: int):
        """Holds, before a pixel is decoded, the working memory of every image of a request at once
        (``images``: ``[(name, header)]``, ``background``: ``(name, header)`` or None), from their
        headers (:func:`working_bytes`): a request needing more than the whole budget with its body
        (``body_bytes``, held already) is 413 at once, one that does not fit now waits, then 503.
        All at once, because a request's images are decoded and rendered together, and two requests
        each holding part of what they need could wait on each other."""
        needs = [(name, im, working_bytes(*im.size, im.mode, opts, background is not None)) for name, im in images]
        if background is not None:
            needs.append((*background, working_bytes(*background[1].size, background[1].mode)))
        total = sum(need for _, _, need in needs)
        if body_bytes + total > self.budget.limit:
            raise self._over_budget(needs, total, body_bytes)
        async with self.budget.reserve(total, what):
            yield

    def _over_budget(self, needs: list, total: int, body_bytes: int) -> UploadError:
        limit = self.budget.limit - body_bytes  # what the images may have
        budget = (f"the replica's memory budget of {self.budget.limit / 1e6:.0f} MB (memory_budget_bytes, "
                  f"{body_bytes / 1e6:.0f} MB of it for the request's body)")
        name, im, need = max(needs, key=lambda n: n[2])
        w, h = im.size
        if need > limit:
            per_pixel = (need - FIXED_WORKING_BYTES) // (w * h)
            fits = max(limit - FIXED_WORKING_BYTES, 0) // per_pixel
            return UploadError(413, "over_memory_budget",
                               f"{name}: {w}x{h} ({im.mode}) needs about {need / 1e6:.0f} MB in flight ({per_pixel} "
                               f"bytes/pixel for this output), over {budget}; downscale it to at most {fits} pixels")
        return UploadError(413, "over_memory_budget",
                           f"the request's {len(needs)} images need about {total / 1e6:.0f} MB in flight together, "
                           f"over {budget}; each fits on its own: send them in separate requests, or fewer per request")

    async def _decode(self, name: str, im) -> np.ndarray:
        """An opened upload's pixels (a background image), decoded in a worker thread (its memory
        is held already)."""
        return await asyncio.to_thread(load_upload, im, name)

    def _model_input(self, im, name: str) -> tuple[np.ndarray, Any]:
        """An upload's pixels and what the batcher takes for them (letterboxed when staged)."""
        rgb = load_upload(im, name)
        return rgb, (self.predictor.prepare(rgb) if self.staged else rgb)

    async def _cutout(self, name: str, im, opts: CutoutOptions, background: np.ndarray | None,
                      timing: dict | None = None) -> tuple[bytes, str, tuple[int, int]]:
        t = time.perf_counter()
        with self.batcher.incoming():  # a partial batch may wait for this one
            rgb, item = await asyncio.to_thread(self._model_input, im, name)
        if timing is not None:
            timing["decode"] = time.perf_counter() - t
        mask, batch = await self.batcher.submit(item)  # staged: at the network's scale, resized in render_cutout
        t = time.perf_counter()
        body, media_type = await asyncio.to_thread(render_cutout, rgb, mask, opts, background)
        if timing is not None:
            timing.update(queue=batch.queue_s, model=batch.model_s, encode=time.perf_counter() - t)
        self.counts["images"] += 1
        return body, media_type, (rgb.shape[1], rgb.shape[0])

    def _response_too_large(self, name: str, size: int, alone: bool) -> UploadError:
        where = ("" if alone else " together with the files before it") + f", over the {self.max_response_bytes} " \
                "bytes one response may carry (max_response_bytes, and Ray Serve's proxy limit " \
                f"${RESPONSE_LIMIT_ENV} on the cluster's nodes)"
        fix = "ask for format=webp or jpeg, or crop=true, or downscale the image" if alone else \
            "send it in a request of its own"
        return UploadError(413, "response_too_large", f"{name}: its cutout is {size} bytes{where}; {fix}")

    def _background(self, background: tuple[str, bytes] | None, opts: CutoutOptions):
        """The ``bg_image``'s ``(name, header)``, or None."""
        if background is None:
            return None
        if opts.output != "composite":
            raise UploadError(400, "bad_option", f"{BACKGROUND_FIELD} is a background to composite over; leave out "
                                                 f"output={opts.output} (or send output=composite)")
        return background[0], self._open(*background)

    @staticmethod
    def _options(output, bg, threshold, fmt, crop=None, refine=None, shadow=None,
                 background: bool = False) -> CutoutOptions:
        params = {"output": output, "bg": bg, "threshold": threshold, "format": fmt, "crop": crop, "refine": refine,
                  "shadow": shadow}
        if background and not output:
            params["output"] = "composite"  # a background photo is sent to be composited over
        return CutoutOptions.parse(params)

    def _record(self, timing: dict) -> str:
        """``Server-Timing`` for one request's hops (milliseconds), also summed for /v1/stats."""
        self.counts["timed"] += 1
        for hop, seconds in timing.items():
            self.hops[hop] += seconds
        return ", ".join(f"{hop};dur={seconds * 1000:.2f}" for hop, seconds in timing.items())

    # ---------------------------------------------------------- endpoints
    @api.post("/v1/remove", response_class=Response, summary="Remove the background of one image",
              openapi_extra=_request_body(many=False),
              responses={200: {"content": {"image/png": {}, "image/webp": {}, "image/jpeg": {}},
                               "description": "the cutout, at the input's size (the product's box with crop=true)"},
                         **_ERRORS})
    async def remove(self, request: Request,
                     output: str | None = Query(None, description=_OPTION_DOCS["output"]),
                     bg: str | None = Query(None, description=_OPTION_DOCS["bg"]),
                     threshold: str | None = Query(None, description=_OPTION_DOCS["threshold"]),
                     fmt: str | None = Query(None, alias="format", description=_OPTION_DOCS["format"]),
                     crop: str | None = Query(None, description=_OPTION_DOCS["crop"]),
                     refine: str | None = Query(None, description=_OPTION_DOCS["refine"]),
                     shadow: str | None = Query(None, description=_OPTION_DOCS["shadow"])) -> Response:
        """The image as multipart field ``file`` (with an optional ``bg_image``) or as the raw body."""
        started = time.perf_counter()
        self.counts["requests"] += 1
        timing: dict = {}
        try:
            # a bad option costs no body read (a multipart body may hold a bg_image: checked after it)
            self._options(output, bg, threshold, fmt, crop, refine, shadow, background=self._multipart(request))
            async with self._body(request, max_files=1) as (files, background, body_bytes):
                timing["read"] = time.perf_counter() - started
                opts = self._options(output, bg, threshold, fmt, crop, refine, shadow, background is not None)
                (name, data), = files
                with contextlib.ExitStack() as opened:  # headers only, closed whatever happens
                    im = self._open(name, data)
                    opened.callback(im.close)
                    bg_im = self._background(background, opts)
                    if bg_im is not None:
                        opened.callback(bg_im[1].close)
                    async with self._admitted([(name, im)], bg_im, opts, name, body_bytes):
                        bg_rgb = None if bg_im is None else await self._decode(*bg_im)
                        body, media_type, (w, h) = await self._cutout(name, im, opts, bg_rgb, timing)
                        del bg_rgb
                if len(body) > self.max_response_bytes:
                    raise self._response_too_large(name, len(body), alone=True)
        except UploadError as e:
            self.errors[e.code] += 1
            raise
        timing["app"] = time.perf_counter() - started
        return Response(body, media_type=media_type, headers={"X-Image-Size": f"{w}x{h}",
                                                              "Server-Timing": self._record(timing)})

    @api.post("/v1/remove:batch", summary="Remove the backgrounds of several images",
              openapi_extra=_request_body(many=True),
              responses={200: {"content": {"application/zip": {}, "application/json": {}}}, **_ERRORS})
    async def remove_batch(self, request: Request,
                           output: str | None = Query(None, description=_OPTION_DOCS["output"]),
                           bg: str | None = Query(None, description=_OPTION_DOCS["bg"]),
                           threshold: str | None = Query(None, description=_OPTION_DOCS["threshold"]),
                           fmt: str | None = Query(None, alias="format", description=_OPTION_DOCS["format"]),
                           crop: str | None = Query(None, description=_OPTION_DOCS["crop"]),
                           refine: str | None = Query(None, description=_OPTION_DOCS["refine"]),
                           shadow: str | None = Query(None, description=_OPTION_DOCS["shadow"]),
                           response: str = Query("zip", description="zip (default) or json (base64 results)")) -> Response:
        """Several multipart ``file`` fields (and an optional ``bg_image`` for all). A zip holds
        ``<stem>.<ext>`` per image and ``errors.json`` for files that were refused; JSON holds
        ``results`` in upload order."""
        self.counts["batch_requests"] += 1
        try:
            self._options(output, bg, threshold, fmt, crop, refine, shadow, background=self._multipart(request))
            if response not in ("zip", "json"):
                raise UploadError(400, "bad_option", f"response={response!r}; valid: zip, json")
            async with self._body(request, max_files=self.cfg.max_files_per_request) as (files, background,
                                                                                        body_bytes):
                opts = self._options(output, bg, threshold, fmt, crop, refine, shadow, background is not None)
                with contextlib.ExitStack() as opened:  # headers only, closed whatever happens
                    bg_im = self._background(background, opts)
                    if bg_im is not None:
                        opened.callback(bg_im[1].close)
                    headers = []  # (name, its header or why it was refused)
                    for name, data in files:
                        try:
                            headers.append((name, self._open(name, data)))
                            opened.callback(headers[-1][1].close)
                        except UploadError as e:
                            self.errors[e.code] += 1
                            headers.append((name, e))
                    images = [(n, im) for n, im in headers if not isinstance(im, UploadError)]
                    async with self._admitted(images, bg_im, opts, f"{len(images)} image(s) of a batch", body_bytes):
                        bg_rgb = None if bg_im is None or not images else await self._decode(*bg_im)
                        results = await asyncio.gather(*(self._one(n, im, opts, bg_rgb) for n, im in headers))
                        del bg_rgb
                        # assembled while the memory is still held: the outputs and the response are copies
                        return self._batch_response(results, opts, response)
        except UploadError as e:
            self.errors[e.code] += 1
            raise

    def _batch_response(self, results: list[dict], opts: CutoutOptions, response: str) -> Response:
        """The zip (or JSON) of a batch's results in upload order; a result that would take the
        response past ``max_response_bytes`` becomes that file's 413 and the rest still return."""
        size = RESPONSE_HEADROOM  # the envelope, errors.json and names, on top of the outputs
        for i, r in enumerate(results):
            if not r["ok"]:
                size += 1024
                continue
            cost = (len(r["body"]) + 2) // 3 * 4 if response == "json" else len(r["body"])
            if size + cost + 1024 > self.max_response_bytes:
                e = self._response_too_large(r["name"], len(r["body"]), alone=False)
                self.errors[e.code] += 1
                results[i] = {"name": r["name"], "ok": False, "status": e.status, **e.as_dict()}
                size += 1024
            else:
                size += cost + 1024
        errors = [{k: v for k, v in r.items() if k != "ok"} for r in results if not r["ok"]]
        if len(errors) == len(results):  # nothing to return: answer with the first problem
            first = errors[0]
            return JSONResponse({"error": first["error"], "files": errors}, status_code=first["status"])
        if response == "json":
            out = [{**{k: v for k, v in r.items() if k != "body"}, "data": base64.b64encode(r["body"]).decode()}
                   if r["ok"] else r for r in results]
            return JSONResponse({"results": out})
        buf, used = BytesIO(), set()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:  # PNG/WebP are compressed already
            for i, r in enumerate(results):
                if not r["ok"]:
                    continue
                stem = io.stem(r["name"]) or f"image{i}"
                entry = stem + opts.extension
                if entry in used:
                    entry = f"{stem}-{i}{opts.extension}"
                used.add(entry)
                zf.writestr(entry, r["body"])
            if errors:
                zf.writestr("errors.json", json.dumps(errors, indent=2))
        return Response(buf.getvalue(), media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="cutouts.zip"'})

    async def _one(self, name: str, im, opts: CutoutOptions, background: np.ndarray | None) -> dict:
        """One file of a batch request: its result, or its error (the others go on); ``im`` is its
        opened header, or the :class:`UploadError` that refused it."""
        if isinstance(im, UploadError):  # counted when its header was refused
            return {"name": name, "ok": False, "status": im.status, **im.as_dict()}
        try:  # they meet in the same forward passes
            body, media_type, (w, h) = await self._cutout(name, im, opts, background)
            return {"name": name, "ok": True, "media_type": media_type, "width": w, "height": h, "body": body}
        except UploadError as e:
            self.errors[e.code] += 1
            return {"name": name, "ok": False, "status": e.status, **e.as_dict()}

    @api.get("/healthz", summary="The replica process is up")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/readyz", summary="The model is loaded and answers")
    async def readyz(self) -> JSONResponse:
        if getattr(self, "predictor", None) is None:
            return json_error(503, "not_ready", "the model is still loading")
        return JSONResponse({"ready": True, "model": self.predictor.name})

    @api.get("/v1/model", summary="The model card and serving settings")
    async def model(self) -> JSONResponse:
        c = self.cfg
        serving = {**{k: getattr(c, k) for k in SERVING_KEYS}, "max_response_bytes": self.max_response_bytes,
                   "model_threads": self.model_threads, "load_s": self.load_s}
        return JSONResponse(_jsonable({**self.predictor.card, "serving": serving}))

    @api.get("/v1/stats", summary="Requests, batch sizes, time per hop and memory of this replica")
    async def stats(self) -> dict:
        sizes = self.batcher.sizes
        timed = max(self.counts["timed"], 1)
        return {"pid": os.getpid(), "rss_bytes": rss_bytes(), "requests": dict(self.counts),
                "errors": dict(self.errors), "batches": sum(sizes.values()),
                "batch_sizes": {str(k): v for k, v in sorted(sizes.items())},
                "max_batch_size_seen": max(sizes, default=0),
                "hops_ms_mean": {hop: round(total * 1000 / timed, 3) for hop, total in self.hops.items()},
                "memory_budget": {"limit_bytes": self.budget.limit, "in_use_bytes": self.budget.used,
                                  "peak_bytes": self.budget.peak, "waited": self.budget.waited,
                                  "refused": self.budget.refused}}


# what /v1/model reports of the config (the limits a client may hit; never the token)
SERVING_KEYS = ("max_batch_size", "batch_wait_timeout_s", "max_ongoing_requests", "max_upload_bytes", "max_pixels",
                "max_files_per_request", "max_request_bytes", "memory_budget_bytes", "memory_wait_s",
                "body_timeout_s", "min_body_rate", "max_header_bytes")
