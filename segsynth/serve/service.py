"""The HTTP API behind ``segsynth serve``: FastAPI routes on :class:`RemovalService`, no Ray.

:mod:`segsynth.serve.job` makes it a Ray Serve deployment (``BackgroundRemoval``: ingress and
``@serve.batch`` on :meth:`RemovalService.predict_one`).

Endpoints (under ``route_prefix``):

- ``POST /v1/remove``: one image (multipart field ``file``, or the raw request body) -> the
  cutout at the input's size. Query options: ``output=rgba|mask|composite`` (default rgba),
  ``bg=#rrggbb`` (composite), ``threshold`` (0..1; soft alpha when absent),
  ``format=png|webp|jpeg`` (default png), ``crop=true`` (the product's box with a margin), ``refine=false`` (no guided-filter edges).
- ``POST /v1/remove:batch``: several ``file`` fields -> a zip (default) or, with
  ``response=json``, JSON with base64 results; a bad file is reported, the others still return.
- with an ``auth_token`` (or ``$SEGSYNTH_AUTH_TOKEN``) every route but ``/healthz`` and ``/readyz``
  (the docs too) needs ``Authorization: Bearer <token>``, else 401;
- ``GET /healthz`` (process up), ``GET /readyz`` (model loaded), ``GET /v1/model`` (model card
  and serving settings), ``GET /v1/stats`` (requests, observed batch sizes, resident memory),
  ``GET /docs`` and ``/openapi.json``.

Every refused input is a 4xx with ``{"error": {"code", "message"}}`` (see
:mod:`segsynth.serve.uploads`); the replica keeps serving. The model is loaded once per replica in
``__init__``. Requests meet in :meth:`RemovalService.predict_one` (``@serve.batch`` on Serve): the
images of a batch, whatever their sizes, are resized (longer side to the model's size) and padded
into one ``(N, S, S)`` tensor, so one forward pass serves them all and the shapes the runtime sees
are fixed (memory does not creep with every new aspect ratio); each mask goes back to its own
image's size.
"""
# No `from __future__ import annotations` here: FastAPI must see the route signatures'
# types (Request) at runtime, and Serve's ingress rewrites the methods out of this module's scope.
import asyncio
import base64
import collections
import json
import logging
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
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from segsynth import io
from segsynth.serve.config import ServeConfig
from segsynth.serve.uploads import CutoutOptions, UploadError, decode_upload, render_cutout
from segsynth.webapi import bearer_token, install_bearer_auth, install_error_handlers, json_error, set_bearer_token

log = logging.getLogger(__name__)

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers on top of the files themselves

api = FastAPI(
    title="segsynth background removal",
    version="1",
    description="Send an image, get its cutout. Batched on Ray Serve; see /docs for every option.",
)


install_error_handlers(api, UploadError, validation_status=400, validation_code="bad_option")
install_bearer_auth(api, bearer_token)  # a no-op until a replica starts with an auth_token


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


def load_model(cfg: ServeConfig):
    """The predictor for ``cfg.model`` (kind inferred unless ``cfg.kind``), created once."""
    from segsynth.predict import load_predictor

    predictor = load_predictor(fetch_model(cfg.model) if cfg.model else None, kind=cfg.kind, **cfg.predictor_options)
    if hasattr(predictor, "batch_size"):  # a whole @serve.batch in one forward pass (sizes mix freely)
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
}
_ERRORS = {s: {"description": d, "content": {"application/json": {"example": {"error": {"code": c, "message": "..."}}}}}
           for s, d, c in [(400, "empty upload or bad option", "empty"), (413, "over the byte or pixel limit", "too_large"),
                           (415, "not an image", "not_an_image"), (422, "corrupt or truncated image", "truncated")]}


class RemovalService:
    """One replica: the model, loaded once, behind the HTTP API (see the module docstring).

    Without Ray Serve's batching (:meth:`predict_one` unwrapped) each request is its own batch.
    """

    def __init__(self, cfg: ServeConfig):
        started = time.perf_counter()
        self.cfg = cfg = cfg.with_token()
        set_bearer_token(cfg.auth_token)
        self.predictor = load_model(cfg)
        # warm-up with a FULL batch: the runtime's memory arena reaches its largest shape now, so
        # resident memory does not creep up later as bigger batches happen (and request 1 is not slow)
        self.predictor.predict([np.zeros((64, 48, 3), np.uint8)] * cfg.max_batch_size)
        self.load_s = round(time.perf_counter() - started, 2)
        self.counts: collections.Counter = collections.Counter()
        self.errors: collections.Counter = collections.Counter()
        self.batch_sizes: collections.Counter = collections.Counter()
        log.info("replica ready: %s in %.1f s (pid %d)", self.predictor.name, self.load_s, os.getpid())

    # ---------------------------------------------------------- batching
    async def predict_images(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """One forward pass for the images of up to ``max_batch_size`` concurrent requests."""
        self.batch_sizes[len(images)] += 1
        # in a worker thread: the event loop keeps decoding and encoding other requests meanwhile
        return await asyncio.to_thread(self.predictor.predict, images)

    async def predict_one(self, image: np.ndarray) -> np.ndarray:
        """One request's mask; Serve's ``@serve.batch`` gathers concurrent calls into one batch."""
        return (await self.predict_images([image]))[0]

    # ---------------------------------------------------------- helpers
    async def _read_files(self, request: Request, max_files: int) -> list[tuple[str, bytes]]:
        """``[(name, bytes)]`` from a multipart body (fields of any name holding files) or the raw
        body; refuses bodies over the byte limit before and while reading them."""
        multipart = request.headers.get("content-type", "").lower().startswith("multipart/form-data")
        limit = self.cfg.max_upload_bytes * max_files + (MULTIPART_OVERHEAD if multipart else 0)
        declared = request.headers.get("content-length", "")
        too_large = f"the request body is over the limit of {limit} bytes; send a smaller image"
        if declared.isdigit() and int(declared) > limit:
            raise UploadError(413, "too_large", too_large)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise UploadError(413, "too_large", too_large)
            chunks.append(chunk)
        body = b"".join(chunks)
        if not multipart:
            return [("body", body)]

        async def stream():
            yield body

        try:
            form = await MultiPartParser(request.headers, stream(), max_files=max_files, max_fields=32).parse()
        except MultiPartException as e:
            raise UploadError(400, "bad_multipart", f"the multipart body could not be parsed ({e.message}); "
                                                    f"send at most {max_files} image(s) as field 'file'") from None
        files = []
        for _, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.append((value.filename or f"file{len(files)}", await value.read()))
                await value.close()
        if not files:
            raise UploadError(400, "no_file", "the multipart body holds no file; send the image as field 'file'")
        return files

    async def _cutout(self, name: str, data: bytes, opts: CutoutOptions) -> tuple[bytes, str, tuple[int, int]]:
        rgb = await asyncio.to_thread(decode_upload, data, name, self.cfg.max_upload_bytes, self.cfg.max_pixels)
        mask = await self.predict_one(rgb)
        body, media_type = await asyncio.to_thread(render_cutout, rgb, mask, opts)
        self.counts["images"] += 1
        return body, media_type, (rgb.shape[1], rgb.shape[0])

    @staticmethod
    def _options(output, bg, threshold, fmt, crop=None, refine=None) -> CutoutOptions:
        return CutoutOptions.parse({"output": output, "bg": bg, "threshold": threshold, "format": fmt, "crop": crop,
                                    "refine": refine})

    # ---------------------------------------------------------- endpoints
    @api.post("/v1/remove", response_class=Response, summary="Remove the background of one image",
              responses={200: {"content": {"image/png": {}, "image/webp": {}, "image/jpeg": {}},
                               "description": "the cutout, at the input's size"}, **_ERRORS})
    async def remove(self, request: Request,
                     output: str | None = Query(None, description=_OPTION_DOCS["output"]),
                     bg: str | None = Query(None, description=_OPTION_DOCS["bg"]),
                     threshold: str | None = Query(None, description=_OPTION_DOCS["threshold"]),
                     fmt: str | None = Query(None, alias="format", description=_OPTION_DOCS["format"]),
                     crop: str | None = Query(None, description=_OPTION_DOCS["crop"]),
                     refine: str | None = Query(None, description=_OPTION_DOCS["refine"])) -> Response:
        """The image as multipart field ``file`` or as the raw request body."""
        self.counts["requests"] += 1
        try:
            opts = self._options(output, bg, threshold, fmt, crop, refine)
            (name, data), = await self._read_files(request, max_files=1)
            body, media_type, (w, h) = await self._cutout(name, data, opts)
        except UploadError as e:
            self.errors[e.code] += 1
            raise
        return Response(body, media_type=media_type, headers={"X-Image-Size": f"{w}x{h}"})

    @api.post("/v1/remove:batch", summary="Remove the backgrounds of several images",
              responses={200: {"content": {"application/zip": {}, "application/json": {}}}, **_ERRORS})
    async def remove_batch(self, request: Request,
                           output: str | None = Query(None, description=_OPTION_DOCS["output"]),
                           bg: str | None = Query(None, description=_OPTION_DOCS["bg"]),
                           threshold: str | None = Query(None, description=_OPTION_DOCS["threshold"]),
                           fmt: str | None = Query(None, alias="format", description=_OPTION_DOCS["format"]),
                           crop: str | None = Query(None, description=_OPTION_DOCS["crop"]),
                           refine: str | None = Query(None, description=_OPTION_DOCS["refine"]),
                           response: str = Query("zip", description="zip (default) or json (base64 results)")) -> Response:
        """Several multipart ``file`` fields. A zip holds ``<stem>.<ext>`` per image and
        ``errors.json`` for files that were refused; JSON holds ``results`` in upload order."""
        self.counts["batch_requests"] += 1
        try:
            opts = self._options(output, bg, threshold, fmt, crop, refine)
            if response not in ("zip", "json"):
                raise UploadError(400, "bad_option", f"response={response!r}; valid: zip, json")
            files = await self._read_files(request, max_files=self.cfg.max_files_per_request)
        except UploadError as e:
            self.errors[e.code] += 1
            raise

        async def one(name: str, data: bytes) -> dict:
            try:
                body, media_type, (w, h) = await self._cutout(name, data, opts)
                return {"name": name, "ok": True, "media_type": media_type, "width": w, "height": h, "body": body}
            except UploadError as e:
                self.errors[e.code] += 1
                return {"name": name, "ok": False, "status": e.status, **e.as_dict()}

        results = await asyncio.gather(*(one(n, d) for n, d in files))  # they meet in the same batches
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
        serving = {"max_batch_size": c.max_batch_size, "batch_wait_timeout_s": c.batch_wait_timeout_s,
                   "max_ongoing_requests": c.max_ongoing_requests, "max_upload_bytes": c.max_upload_bytes,
                   "max_pixels": c.max_pixels, "max_files_per_request": c.max_files_per_request,
                   "load_s": self.load_s}
        return JSONResponse(_jsonable({**self.predictor.card, "serving": serving}))

    @api.get("/v1/stats", summary="Requests, observed batch sizes and resident memory of this replica")
    async def stats(self) -> dict:
        return {"pid": os.getpid(), "rss_bytes": rss_bytes(), "requests": dict(self.counts),
                "errors": dict(self.errors), "batches": sum(self.batch_sizes.values()),
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                "max_batch_size_seen": max(self.batch_sizes, default=0)}

