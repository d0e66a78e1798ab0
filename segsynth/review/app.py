"""The review web app: a FastAPI app over one task folder (no Ray: static pages, precomputed
images and SQLite).

    segsynth review serve TASK_DIR [--host 127.0.0.1] [--port 8300]

Pages: ``GET /`` (the keyboard-first page). JSON API (the page uses it, and so can scripts):

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

Images: ``GET /media/{item_id}/{file}`` (precomputed at display size); ``?size=full`` renders a
view at the photo's own size on first use and keeps it. Every refusal is a 4xx with
``{"error": {"code", "message"}}``; with a task ``token`` every ``/api`` call needs the header
``X-Review-Token``.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel

from segsynth import io
from segsynth.review.build import MEDIA, VIEWS, render_view
from segsynth.review.store import Lease, ReviewError, Store
from segsynth.webapi import install_error_handlers, json_error

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
MEDIA_FILE = re.compile(r"^(photo|photo_thumb|c\d+_(?:checker|white|outline))\.jpg$")


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


def create_app(task_dir: str | Path) -> FastAPI:
    """The app for the task in ``task_dir`` (a folder made by ``segsynth review create``)."""
    store = Store(task_dir)
    media = Path(task_dir) / MEDIA
    token = store.meta.get("token")
    app = FastAPI(title="segsynth review", version="1",
                  description="People pick the best mask, accept pseudo-labels or compare models blind.")

    install_error_handlers(app, ReviewError, validation_status=422, validation_code="bad_request")

    @app.middleware("http")
    async def _token(request: Request, call_next):
        if token and request.url.path.startswith("/api/") and request.url.path != "/api/task":
            given = request.headers.get("x-review-token") or request.query_params.get("token")
            if given != token:
                return json_error(401, "bad_token", "this task needs its token: send it as header X-Review-Token")
        return await call_next(request)

    def item_view(lease_or_id, annotator: str, order: tuple[str, ...] | None = None) -> dict:
        item_id = lease_or_id.item_id if isinstance(lease_or_id, Lease) else lease_or_id
        order = lease_or_id.order if isinstance(lease_or_id, Lease) else (order or store.order_for(item_id, annotator))
        it = store.item(item_id)
        base = f"/media/{item_id}"
        cands = [{"id": str(i + 1), "views": {v: f"{base}/{cid}_{v}.jpg" for v in VIEWS},
                  "full": {v: f"{base}/{cid}_{v}.jpg?size=full" for v in VIEWS}} for i, cid in enumerate(order)]
        choices = [c["id"] for c in cands] + (["tie"] if store.kind == "compare" else []) + ["none", "skip"]
        out = {"item_id": item_id, "stem": it["stem"], "category": it["category"], "width": it["width"],
               "height": it["height"], "image": {"display": f"{base}/photo.jpg", "thumb": f"{base}/photo_thumb.jpg",
                                                 "full": f"{base}/photo.jpg?size=full"},
               "candidates": cands, "choices": choices}
        if isinstance(lease_or_id, Lease):
            out.update(lease_expires_at=lease_or_id.expires_at, resumed=lease_or_id.resumed)
        return out

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        path = STATIC / name
        if "/" in name or not path.is_file():
            raise ReviewError(404, "not_found", f"no static file {name!r}")
        return FileResponse(path, headers={"Cache-Control": "max-age=3600"})

    @app.get("/media/{item_id}/{name}", summary="A precomputed image (display size, or ?size=full)")
    def media_file(item_id: str, name: str, size: str = Query("display", pattern="^(display|full)$")) -> Response:
        if not MEDIA_FILE.match(name) or "/" in item_id or item_id.startswith("."):
            raise ReviewError(404, "not_found", f"no image {name!r}")
        folder = media / item_id
        if size == "full":
            return FileResponse(_full_size(folder, item_id, name), media_type="image/jpeg",
                                headers={"Cache-Control": "max-age=86400"})
        path = folder / name
        if not path.is_file():
            raise ReviewError(404, "not_found", f"no image {name!r} for item {item_id!r}")
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})

    def _full_size(folder: Path, item_id: str, name: str) -> Path:
        out = folder / "full" / name
        if out.is_file():
            return out
        it = store.item(item_id)
        rgb = io.read_image(it["image"])
        if name.startswith("photo"):
            arr = rgb
        else:
            cand, view = name[:-4].split("_", 1)
            mask_path = folder / f"{cand}.png"
            if not mask_path.is_file():
                raise ReviewError(404, "not_found", f"no candidate {cand!r} for item {item_id!r}")
            arr = render_view(rgb, io.decode_mask(mask_path.read_bytes(), str(mask_path)), view)
        out.parent.mkdir(exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(io.encode_jpeg(arr, 90))
        tmp.replace(out)
        return out

    @app.get("/api/task", summary="What the task is")
    def task() -> dict:
        return {"kind": store.kind, "question": store.meta["question"], "annotators_per_item": store.per_item,
                "candidates": len(store.meta["candidates"]), "token_required": bool(token),
                "lease_minutes": store.meta["lease_minutes"]}

    @app.get("/api/next", summary="The next item for an annotator (204 when none is left)")
    def next_item(annotator: str = Query(...)) -> Response:
        lease = store.next_item(annotator)
        if lease is None:
            return Response(status_code=204)
        return JSONResponse(item_view(lease, annotator))

    @app.post("/api/answers", status_code=201, summary="Answer the item leased to you")
    def answer(body: Answer) -> dict:
        return store.answer(body.item_id, body.annotator, body.choice, body.latency_ms)

    @app.patch("/api/answers/{item_id}", summary="Change your answer on an item")
    def edit(item_id: str, body: Edit) -> dict:
        return store.edit(item_id, body.annotator, body.choice)

    @app.post("/api/undo", summary="Take back your last answer and get its item again")
    def undo(body: Who) -> Response:
        lease = store.undo(body.annotator)
        if lease is None:
            return Response(status_code=204)
        return JSONResponse(item_view(lease, body.annotator))

    @app.post("/api/flag", status_code=201, summary="Flag an item for attention")
    def flag(body: Flag) -> dict:
        store.flag(body.item_id, body.annotator, body.note)
        return {"flagged": body.item_id}

    @app.get("/api/item/{item_id}", summary="An item you answered, with your answer")
    def item(item_id: str, annotator: str = Query(...)) -> dict:
        answer = store.answer_of(item_id, annotator)
        if answer is None:
            raise ReviewError(404, "no_answer", f"{annotator} has no answer on item {item_id!r}")
        return {**item_view(item_id, annotator), "answer": answer}

    @app.get("/api/history", summary="Your latest answers, newest first")
    def history(annotator: str = Query(...), limit: int = Query(20, ge=1, le=500)) -> list[dict]:
        return [{**h, "thumb": f"/media/{h['item_id']}/photo_thumb.jpg"} for h in store.history(annotator, limit)]

    @app.get("/api/progress", summary="Counts per annotator and overall")
    def progress() -> dict:
        return store.progress()

    return app
