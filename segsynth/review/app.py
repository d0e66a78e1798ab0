"""The review web app: a FastAPI app over one task folder (no Ray: static pages, precomputed
images and SQLite).

    segsynth review serve TASK_DIR [--host 127.0.0.1] [--port 8300]

Pages: ``GET /`` (the keyboard-first page), ``GET /healthz`` (the probe). JSON API (the page
uses it, and so can scripts):

- ``GET /api/task``: kind, question, candidates per item, whether a token is needed;
- ``GET /api/next?annotator=NAME``: the item leased to NAME (``item_id``, image URLs,
  ``candidates`` each with an ``id`` "1".."9" and its view URLs, ``choices``), or 204;
- ``POST /api/answers`` ``{"item_id", "annotator", "choice", "latency_ms"?}``: ``choice`` is a
  candidate ``id``, ``"none"``, ``"tie"`` (compare) or ``"skip"``; 201;
- ``PATCH /api/answers/{item_id}`` ``{"annotator", "choice"}``: change one's own answer;
- ``POST /api/undo`` ``{"annotator"}``: take back one's last answer, get that item again;
- ``POST /api/flag`` ``{"item_id", "annotator", "note"?}``;
- ``GET /api/item/{item_id}?annotator=NAME``: an item one answered, with the answer (to edit it);
- ``GET /api/history?annotator=NAME``, ``GET /api/progress``.

Images: ``GET /media/{item_id}/photo.jpg`` (and ``photo_thumb.jpg``) and a candidate's views
``GET /media/view/{view_id}/{checker|white|outline}.jpg``, where ``view_id`` is opaque, one per
(item, annotator, candidate): no URL says which model made a mask. ``?size=full`` renders an
image at the photo's own size on first use (one writer, an atomic rename) and keeps it.

In front of every route, :class:`segsynth.webapi.RequestGuard` (the serving endpoint's): header
limits (431), bodies over :data:`REVIEW_LIMITS` ``max_body_bytes`` (413) or too slow (408), and
with a task ``token`` the header ``Authorization: Bearer <token>`` on every route but ``/`` (the
page, the same static file for every task) and ``/healthz`` (401; never from the query string).
Every refusal is a 4xx with ``{"error": {"code", "message"}}``.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import quote

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from segsynth import io
from segsynth.review.build import MEDIA, VIEWS, render_view
from segsynth.review.store import Lease, ReviewError, Store
from segsynth.webapi import RequestLimits, install_error_handlers, install_request_guard

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
PHOTO_FILES = ("photo.jpg", "photo_thumb.jpg")
VIEW_FILE = re.compile(r"^(" + "|".join(VIEWS) + r")\.jpg$")
FULL_JPEG_QUALITY = 90
OPEN_PATHS = ("/", "/healthz")  # the page (no task data in it: it asks for the token) and the probe
# the endpoint's header limits and body deadlines; the largest JSON body here (a flag with a 500-character
# note) is ~2 KB, so 16 KB is ample and a 50 MB body is refused from its Content-Length
REVIEW_LIMITS = RequestLimits(body_timeout_s=10.0, max_body_bytes=16_384)
TOKEN_HINT = "the review task's token: the `token` its config set"
IMAGE_HEADERS = {"Cache-Control": "private, max-age=86400"}  # private: with a token, no shared cache keeps it


class Answer(BaseModel):
    item_id: str
    annotator: str
    choice: str
    latency_ms: Optional[float] = None


class Edit(BaseModel):
    annotator: str
    choice: str


class Who(BaseModel):
    annotator: str


class Flag(BaseModel):
    item_id: str
    annotator: str
    note: str = ""


def page_policy(html: bytes) -> str:
    """The page's Content-Security-Policy: its one inline script by hash and nothing else, so a
    value that reached the page as markup could still run no script (inline handlers are
    refused); images from this origin and the blob URLs the page makes of them."""
    scripts = re.findall(rb"<script>(.*?)</script>", html, re.S)
    if len(scripts) != 1:
        raise ValueError(f"{STATIC / 'index.html'}: expected one inline <script>, found {len(scripts)}")
    digest = base64.b64encode(hashlib.sha256(scripts[0]).digest()).decode()
    return (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
            "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


_RENDER_LOCKS = tuple(threading.Lock() for _ in range(64))  # striped: one writer per file, a bounded set of locks


def render_once(out: Path, make: Callable[[], bytes]) -> Path:
    """``out``, made by ``make()`` when it does not exist yet. One writer per file in this process
    (the others wait on its lock, then read the result); the bytes are written whole or not at all
    (:func:`segsynth.io.write_bytes`: a temp file renamed into place), so another process rendering
    the same file at the same time, or a reader, never sees a partial one."""
    if out.is_file():
        return out
    with _RENDER_LOCKS[hash(str(out)) % len(_RENDER_LOCKS)]:
        if not out.is_file():
            io.write_bytes(out, make())
    return out


class TaskMedia:
    """A task's items as the page sees them: display ids and opaque view URLs, and the images,
    at display size or rendered once at the photo's own size."""

    def __init__(self, store: Store, folder: Path):
        self.store, self.folder = store, folder

    def item_view(self, item_id: str, views: tuple[str, ...], lease: Lease | None = None) -> dict:
        """What the page gets for an item: display ids and opaque view URLs (``views``, in display
        order), never a candidate id."""
        store = self.store
        it = store.item(item_id)
        base = f"/media/{quote(item_id, safe='')}"
        cands = [{"id": str(i + 1), "views": {v: f"/media/view/{vid}/{v}.jpg" for v in VIEWS},
                  "full": {v: f"/media/view/{vid}/{v}.jpg?size=full" for v in VIEWS}} for i, vid in enumerate(views)]
        choices = [c["id"] for c in cands] + (["tie"] if store.kind == "compare" else []) + ["none", "skip"]
        out = {"item_id": item_id, "stem": it["stem"], "category": it["category"], "width": it["width"],
               "height": it["height"], "image": {"display": f"{base}/photo.jpg", "thumb": f"{base}/photo_thumb.jpg",
                                                 "full": f"{base}/photo.jpg?size=full"},
               "candidates": cands, "choices": choices}
        if lease is not None:
            out.update(lease_expires_at=lease.expires_at, resumed=lease.resumed)
        return out

    def leased(self, lease: Lease) -> JSONResponse:
        return JSONResponse(self.item_view(lease.item_id, lease.views, lease))

    def full_size(self, item_id: str, cand_id: str | None = None, view: str | None = None) -> Path:
        """The photo (``cand_id`` None) or a candidate's view at the photo's own size, made once."""
        folder = self.folder / item_id

        def make() -> bytes:
            rgb = io.read_image(self.store.item(item_id)["image"])
            if cand_id is None:
                return io.encode_jpeg(rgb, FULL_JPEG_QUALITY)
            mask_path = folder / f"{cand_id}.png"
            mask = io.decode_mask(mask_path.read_bytes(), str(mask_path))
            return io.encode_jpeg(render_view(rgb, mask, view), FULL_JPEG_QUALITY)

        return render_once(folder / "full" / (f"{cand_id}_{view}.jpg" if cand_id else "photo.jpg"), make)

    @staticmethod
    def jpeg(path: Path) -> Response:
        # the bytes, without Last-Modified or ETag: the views' file times follow the candidates' order
        return Response(path.read_bytes(), media_type="image/jpeg", headers=IMAGE_HEADERS)


def create_app(task_dir: str | Path, limits: RequestLimits = REVIEW_LIMITS) -> FastAPI:
    """The app for the task in ``task_dir`` (a folder made by ``segsynth review create``)."""
    store = Store(task_dir)
    token = store.meta.get("token") or None
    app = FastAPI(title="segsynth review", version="1",
                  description="People pick the best mask, accept pseudo-labels or compare models blind.")
    install_error_handlers(app, ReviewError, validation_status=422, validation_code="bad_request")
    install_request_guard(app, token=lambda: token, limits=lambda: limits, open_paths=lambda path: path in OPEN_PATHS,
                          token_hint=TOKEN_HINT)
    media = TaskMedia(store, Path(task_dir) / MEDIA)
    _page_routes(app)
    _media_routes(app, store, media)
    _task_routes(app, store, media, token)
    return app


def _page_routes(app: FastAPI) -> None:
    """The page (one static file for every task, under its Content-Security-Policy) and the probe."""
    page = (STATIC / "index.html").read_bytes()
    page_headers = {"Content-Security-Policy": page_policy(page), "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=page_headers)

    @app.get("/healthz", summary="The process is up (open without the token, for a load balancer)")
    def healthz() -> dict:
        return {"status": "ok"}


def _media_routes(app: FastAPI, store: Store, media: TaskMedia) -> None:
    """The photos and the candidates' views, by opaque id."""

    @app.get("/media/view/{view_id}/{name}", summary="A candidate's view by its opaque id (display size, or ?size=full)")
    def view_file(view_id: str, name: str, size: str = Query("display", pattern="^(display|full)$")) -> Response:
        found = store.view(view_id) if VIEW_FILE.match(name) else None
        if found is None:
            raise ReviewError(404, "not_found", f"no view {name!r} with id {view_id!r}; ask GET /api/next for the item's URLs")
        item_id, cand_id = found
        view = name[: -len(".jpg")]
        if size == "full":
            return media.jpeg(media.full_size(item_id, cand_id, view))
        return media.jpeg(media.folder / item_id / f"{cand_id}_{view}.jpg")

    @app.get("/media/{item_id}/{name}", summary="An item's photo or thumbnail (display size, or ?size=full)")
    def photo_file(item_id: str, name: str, size: str = Query("display", pattern="^(display|full)$")) -> Response:
        if name not in PHOTO_FILES or not (media.folder / item_id / name).is_file() or item_id.startswith("."):
            raise ReviewError(404, "not_found", f"no image {name!r} for item {item_id!r}")
        store.item(item_id)  # an item of this task (404 otherwise), not just a folder under media/
        if size == "full":
            return media.jpeg(media.full_size(item_id))
        return media.jpeg(media.folder / item_id / name)


def _task_routes(app: FastAPI, store: Store, media: TaskMedia, token: str | None) -> None:
    """The JSON API: the task, leases, answers and their edits, flags, history, progress."""

    @app.get("/api/task", summary="What the task is")
    def task() -> dict:
        return {"kind": store.kind, "question": store.meta["question"], "annotators_per_item": store.per_item,
                "candidates": len(store.meta["candidates"]), "token_required": bool(token),
                "lease_minutes": store.meta["lease_minutes"]}

    @app.get("/api/next", summary="The next item for an annotator (204 when none is left)")
    def next_item(annotator: str = Query(...)) -> Response:
        lease = store.next_item(annotator)
        return Response(status_code=204) if lease is None else media.leased(lease)

    @app.post("/api/answers", status_code=201, summary="Answer the item leased to you")
    def answer(body: Answer) -> dict:
        return store.answer(body.item_id, body.annotator, body.choice, body.latency_ms)

    @app.patch("/api/answers/{item_id}", summary="Change your answer on an item")
    def edit(item_id: str, body: Edit) -> dict:
        return store.edit(item_id, body.annotator, body.choice)

    @app.post("/api/undo", summary="Take back your last answer and get its item again")
    def undo(body: Who) -> Response:
        lease = store.undo(body.annotator)
        return Response(status_code=204) if lease is None else media.leased(lease)

    @app.post("/api/flag", status_code=201, summary="Flag an item for attention")
    def flag(body: Flag) -> dict:
        store.flag(body.item_id, body.annotator, body.note)
        return {"flagged": body.item_id}

    @app.get("/api/item/{item_id}", summary="An item you answered, with your answer")
    def item(item_id: str, annotator: str = Query(...)) -> dict:
        answer = store.answer_of(item_id, annotator)
        if answer is None:
            raise ReviewError(404, "no_answer", f"{annotator} has no answer on item {item_id!r}")
        views = store.view_ids(item_id, annotator, store.order_for(item_id, annotator))
        return {**media.item_view(item_id, views), "answer": answer}

    @app.get("/api/history", summary="Your latest answers, newest first")
    def history(annotator: str = Query(...), limit: int = Query(20, ge=1, le=500)) -> list[dict]:
        return [{**h, "thumb": f"/media/{quote(h['item_id'], safe='')}/photo_thumb.jpg"}
                for h in store.history(annotator, limit)]

    @app.get("/api/progress", summary="Counts per annotator and overall")
    def progress() -> dict:
        return store.progress()
