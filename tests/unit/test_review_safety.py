"""The review app in front of annotators (issue 24), without a browser: one slot check on every
path that adds an answer, opaque view URLs, the token on every route, the endpoint's request
limits, one writer per full-size view, and the small refusals (text that is not UTF-8, a latency
of Infinity, formula-like cells in answers.csv, serving a tokenless task on an open port). The
script-injection and blind-study checks in a real browser are in tests/e2e/test_review_browser.py."""
from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from segsynth import io
from segsynth.review.store import ReviewError, Store
from segsynth.testing import make_review_task

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from segsynth.review.app import REVIEW_LIMITS, create_app  # noqa: E402
from segsynth.webapi import RequestLimits  # noqa: E402

TOKEN = "s3cret-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
VIEW_URL = re.compile(r"^/media/view/[A-Za-z0-9_-]{16}/(checker|white|outline)\.jpg(\?size=full)?$")


def _client(tmp_path: Path, kind: str = "pick", k: int = 1, **extra) -> tuple[TestClient, Store]:
    store = make_review_task(tmp_path, kind, k, **extra)
    return TestClient(create_app(tmp_path / "task")), store


def _current(store: Store, item_id: str) -> list[tuple[str, str]]:
    return [(a["annotator"], a["choice"]) for a in store.answers() if a["item_id"] == item_id]


# ---------------------------------------------------------------- 2. more answers than slots
def test_an_edit_that_turns_a_skip_into_an_answer_needs_a_free_slot(tmp_path):
    client, store = _client(tmp_path, k=1)
    item = client.get("/api/next", params={"annotator": "ana"}).json()["item_id"]
    assert client.post("/api/answers", json={"item_id": item, "annotator": "ana", "choice": "skip"}).status_code == 201
    assert client.get("/api/next", params={"annotator": "ben"}).json()["item_id"] == item  # the skip freed the slot
    r = client.patch(f"/api/answers/{item}", json={"annotator": "ana", "choice": "1"})  # ben's live lease holds it
    assert r.status_code == 409 and r.json()["error"]["code"] == "item_full"
    assert client.post("/api/answers", json={"item_id": item, "annotator": "ben", "choice": "2"}).status_code == 201
    r = client.patch(f"/api/answers/{item}", json={"annotator": "ana", "choice": "1"})  # ben's answer holds it
    assert r.status_code == 409 and "your skip stays" in r.json()["error"]["message"]
    assert _current(store, item) == [("ana", "skip"), ("ben", "2")]
    progress = client.get("/api/progress").json()
    assert progress["answered"] == 1 and progress["over_slots"] == 0


def test_undoing_a_skip_needs_a_free_slot_and_keeps_the_skip_when_there_is_none(tmp_path):
    store = make_review_task(tmp_path, "pick", 1)
    item = store.next_item("ana").item_id
    store.answer(item, "ana", "skip")
    assert store.next_item("ben").item_id == item
    store.answer(item, "ben", "1")
    with pytest.raises(ReviewError) as e:
        store.undo("ana")
    assert e.value.status == 409 and e.value.code == "item_full"
    assert _current(store, item) == [("ana", "skip"), ("ben", "1")]
    assert store.next_item("ana").item_id != item  # no lease came of it
    assert store.progress()["answered"] == 1


def test_undoing_a_skip_with_a_slot_free_gives_the_item_back(tmp_path):
    store = make_review_task(tmp_path, "pick", 1)
    item = store.next_item("ana").item_id
    store.answer(item, "ana", "skip")
    assert store.undo("ana").item_id == item
    store.answer(item, "ana", "1")
    assert _current(store, item) == [("ana", "1")]


def test_progress_shows_the_true_count_of_an_item_over_its_slots(tmp_path):
    store = make_review_task(tmp_path, "pick", 1)
    item = store.next_item("ana").item_id
    store.answer(item, "ana", "1")
    with store.transaction() as con:  # a second answer as an older version of the app let in
        con.execute("INSERT INTO answers (item_id, annotator, choice, meaning, version, shown, created_at) "
                    "VALUES (?, 'ben', '2', 'fat', NULL, '[]', 0)", (item,))
    p = store.progress()
    assert (p["answered"], p["slots_filled"], p["over_slots"], p["items_done"]) == (2, 1, 1, 1)


# ---------------------------------------------------------------- 3. blind comparison
def test_views_are_opaque_per_item_annotator_and_candidate(tmp_path):
    client, store = _client(tmp_path, kind="compare", k=2)
    seen: dict[str, tuple] = {}
    for who in ("ana", "ben"):
        for _ in range(2):
            item = client.get("/api/next", params={"annotator": who}).json()
            again = client.get("/api/next", params={"annotator": who}).json()  # a reload: the same URLs
            assert again["candidates"] == item["candidates"]
            assert [sorted(c) for c in item["candidates"]] == [["full", "id", "views"]] * 2
            urls = [u for c in item["candidates"] for group in ("views", "full") for u in c[group].values()]
            assert all(VIEW_URL.match(u) for u in urls), urls  # an opaque id and the view's name, nothing else
            text = json.dumps(item)
            assert "good" not in text and "fat" not in text
            lease = store.next_item(who)  # the server's side: which candidate each display id is
            folder = tmp_path / "task" / "media" / item["item_id"]
            for c, cand_id in zip(item["candidates"], lease.order):
                view_id = c["views"]["checker"].split("/")[3]
                assert view_id not in seen
                seen[view_id] = (item["item_id"], who, cand_id)
                r = client.get(c["views"]["checker"])
                assert r.content == (folder / f"{cand_id}_checker.jpg").read_bytes()
                assert "last-modified" not in r.headers and "etag" not in r.headers  # file times follow c1, c2
            client.post("/api/answers", json={"item_id": item["item_id"], "annotator": who, "choice": "tie"})
    assert len({(i, c) for i, _, c in seen.values()}) == 4 and len({(i, w) for i, w, _ in seen.values()}) == 4
    some_item = next(iter(seen.values()))[0]
    for name in ("c1_checker.jpg", "c2_outline.jpg", "c1.png"):  # the old, guessable addresses are gone
        assert client.get(f"/media/{some_item}/{name}").status_code == 404
    assert client.get("/media/view/not-a-view-id-000/checker.jpg").status_code == 404


def test_a_task_made_before_views_had_ids_gets_them(tmp_path):
    client, store = _client(tmp_path, kind="compare")
    with store.transaction() as con:
        con.execute("DROP TABLE views")  # a task file of schema version 1
    assert client.get("/media/view/not-a-view-id-000/checker.jpg").status_code == 404
    item = client.get("/api/next", params={"annotator": "ana"}).json()
    url = item["candidates"][0]["views"]["white"]
    assert VIEW_URL.match(url) and client.get(url).headers["content-type"] == "image/jpeg"


# ---------------------------------------------------------------- 4. the token on every route
def _fill(path: str, item_id: str, view_id: str) -> str:
    return (path.replace("{item_id}", item_id).replace("{view_id}", view_id)
            .replace("{name}", "checker.jpg" if "{view_id}" in path else "photo.jpg"))


def test_with_a_token_every_route_but_the_page_and_the_probe_needs_it(tmp_path, monkeypatch):
    import hmac

    from segsynth import webapi

    client, store = _client(tmp_path, kind="compare", k=1, token=TOKEN)
    item = client.get("/api/next", params={"annotator": "ana"}, headers=BEARER).json()
    view_id = item["candidates"][0]["views"]["checker"].split("/")[3]
    client.post("/api/answers", json={"item_id": item["item_id"], "annotator": "ana", "choice": "1"}, headers=BEARER)
    bodies = {"/api/answers": {"item_id": item["item_id"], "annotator": "ana", "choice": "1"},
              "/api/answers/{item_id}": {"annotator": "ana", "choice": "2"}, "/api/undo": {"annotator": "ana"},
              "/api/flag": {"item_id": item["item_id"], "annotator": "ana"}}
    compared, real = [], hmac.compare_digest
    monkeypatch.setattr(webapi.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    routes = [(m, r.path) for r in client.app.routes for m in sorted(getattr(r, "methods", None) or {"GET"}) if m != "HEAD"]
    assert {p for _, p in routes} >= {"/docs", "/openapi.json", "/media/view/{view_id}/{name}", "/media/{item_id}/{name}",
                                      "/api/task", "/api/next", "/api/progress"}
    for method, path in routes:
        url = _fill(path, item["item_id"], view_id)
        params = {"annotator": "ana"}
        body = bodies.get(path)
        if path in ("/", "/healthz"):
            assert client.request(method, url).status_code == 200, path
            continue
        for headers, query in [({}, {}), ({}, {"token": TOKEN}), ({"X-Review-Token": TOKEN}, {}),
                               ({"Authorization": "Bearer wrong"}, {}), ({"Authorization": TOKEN}, {})]:
            r = client.request(method, url, params={**params, **query}, headers=headers, json=body)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", (method, path, headers, query)
            assert "token" in r.json()["error"]["message"]
        r = client.request(method, url, params=params, headers=BEARER, json=body)  # the route runs (a 409 is its own)
        assert r.status_code != 401 and r.status_code < 500, (method, path, r.status_code, r.text[:200])
    assert compared  # the token is compared in constant time (hmac.compare_digest)
    assert client.get("/api/progress").status_code == 401 and store.flags()  # the flag went in with the token


def test_without_a_token_the_app_is_open(tmp_path):
    client, _ = _client(tmp_path)
    assert client.get("/api/task").json()["token_required"] is False
    assert client.get("/docs").status_code == 200


def test_the_page_allows_only_its_own_script(tmp_path):
    client, _ = _client(tmp_path)
    r = client.get("/")
    policy = r.headers["content-security-policy"]
    script = re.search(rb"<script>(.*?)</script>", r.content, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert b"innerHTML" not in r.content  # server values go in as text (textContent), never as markup


# ---------------------------------------------------------------- 5. request limits
def test_a_large_json_body_is_refused_before_and_while_it_is_read(tmp_path):
    client, store = _client(tmp_path)
    item = client.get("/api/next", params={"annotator": "ana"}).json()["item_id"]
    big = json.dumps({"item_id": item, "annotator": "ana", "choice": "1", "pad": "x" * 1_000_000}).encode()
    r = client.post("/api/answers", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large" and str(REVIEW_LIMITS.max_body_bytes) in r.text

    def chunks():  # no Content-Length: counted while it arrives
        for _ in range(100):
            yield b" " * 1024
        yield json.dumps({"item_id": item, "annotator": "ana", "choice": "1"}).encode()

    r = client.post("/api/answers", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert store.answers() == []
    r = client.post("/api/answers", json={"item_id": item, "annotator": "ana", "choice": "1"})
    assert r.status_code == 201  # a small body still goes in


def test_oversized_headers_are_431(tmp_path):
    client, _ = _client(tmp_path)
    r = client.get("/api/task", headers={"X-Pad": "a" * 20_000})
    assert r.status_code == 431 and r.json()["error"]["code"] == "headers_too_large"


def _trickle(app, item: str) -> tuple[list[int], dict]:
    """Statuses the app answers, and its JSON, to an answer whose body comes a byte at a time at 20 bytes/s."""
    body = json.dumps({"item_id": item, "annotator": "ana", "choice": "1"}).encode()
    chunks = [body[i:i + 1] for i in range(len(body))]
    sent: list[dict] = []

    async def receive():
        await asyncio.sleep(0.05)  # 20 bytes/s, far below min_body_rate
        part = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": part, "more_body": bool(chunks)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/answers", "raw_path": b"/api/answers", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", b"application/json")], "client": ("127.0.0.1", 5000),
             "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    starts = [m["status"] for m in sent if m["type"] == "http.response.start"]
    return starts, json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


def test_a_body_that_trickles_in_is_cut_off_with_408(tmp_path):
    store = make_review_task(tmp_path, "pick", 1)
    item = store.next_item("ana").item_id
    limits = RequestLimits(body_timeout_s=5.0, min_body_rate=1000.0, body_grace_s=0.1, max_body_bytes=16_384)
    starts, payload = _trickle(create_app(tmp_path / "task", limits=limits), item)
    assert starts == [408]  # the guard's answer, not FastAPI's 400 for a body it could not read
    assert payload["error"]["code"] == "body_timeout" and store.answers() == []


def test_the_app_as_served_has_a_body_deadline(tmp_path):
    """``create_app`` without ``limits`` (what ``segsynth review serve`` runs) cuts a slow body off
    too: after REVIEW_LIMITS' grace period (2 s) at far below its minimum rate."""
    assert REVIEW_LIMITS.body_timeout_s is not None and REVIEW_LIMITS.body_timeout_s <= 10 and REVIEW_LIMITS.min_body_rate
    store = make_review_task(tmp_path, "pick", 1)
    starts, payload = _trickle(create_app(tmp_path / "task"), store.next_item("ana").item_id)
    assert starts == [408] and payload["error"]["code"] == "body_timeout" and store.answers() == []


# ---------------------------------------------------------------- 6. concurrent first views
def test_concurrent_first_requests_for_a_full_size_view_render_it_once(tmp_path, monkeypatch):
    import httpx

    from segsynth.review import app as review_app
    from segsynth.testing import AppServer

    store = make_review_task(tmp_path, "pick", 1)
    renders = []
    real = review_app.render_view
    started = threading.Barrier(16)

    def slow_render(rgb, mask, view):
        renders.append(view)
        threading.Event().wait(0.2)  # a wider window for the others to arrive while this one renders
        return real(rgb, mask, view)

    monkeypatch.setattr(review_app, "render_view", slow_render)
    with AppServer(create_app(tmp_path / "task")) as url:
        item = httpx.get(f"{url}/api/next", params={"annotator": "ana"}).json()
        full = item["candidates"][1]["full"]["outline"]

        def fetch(_):
            started.wait(30)
            return httpx.get(url + full, timeout=60)

        with ThreadPoolExecutor(16) as pool:
            got = list(pool.map(fetch, range(16)))
    assert [r.status_code for r in got] == [200] * 16
    on_disk = tmp_path / "task" / "media" / item["item_id"] / "full" / "c2_outline.jpg"
    assert all(r.content == on_disk.read_bytes() for r in got) and renders == ["outline"]
    it = store.item(item["item_id"])
    assert io.decode_image(on_disk.read_bytes()).shape[:2] == (it["height"], it["width"])  # whole, at full size
    assert [p.name for p in on_disk.parent.iterdir()] == ["c2_outline.jpg"]  # no temp file left


# ---------------------------------------------------------------- the small refusals
@pytest.mark.parametrize("field", ["annotator", "item_id", "note"])
def test_a_lone_surrogate_is_422_not_500(tmp_path, field):
    client, store = _client(tmp_path)
    item = client.get("/api/next", params={"annotator": "ana"}).json()["item_id"]
    body = {"item_id": item, "annotator": "ana", "note": "ok"}
    raw = json.dumps(body).replace(json.dumps(body[field]), '"a\\ud800b"')  # JSON's escape of a lone surrogate
    r = client.post("/api/flag", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_text" and field in r.json()["error"]["message"]
    raw = json.dumps({"item_id": item, "annotator": "ana", "choice": "1"}).replace('"ana"', '"\\udfff"')
    r = client.post("/api/answers", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and store.answers() == [] and store.flags() == []


@pytest.mark.parametrize("latency", ["Infinity", "-Infinity", "NaN", "-5", "1e400"])
def test_latency_must_be_finite_and_not_negative(tmp_path, latency):
    client, store = _client(tmp_path)
    item = client.get("/api/next", params={"annotator": "ana"}).json()["item_id"]
    raw = f'{{"item_id": "{item}", "annotator": "ana", "choice": "1", "latency_ms": {latency}}}'
    r = client.post("/api/answers", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] in ("bad_latency", "bad_request"), r.text
    assert store.answers() == []
    r = client.post("/api/answers", json={"item_id": item, "annotator": "ana", "choice": "1", "latency_ms": 0})
    assert r.status_code == 201  # the lease was kept: the answer goes in once it is sane


def test_formula_like_cells_in_answers_csv_are_prefixed(tmp_path):
    from segsynth.review.export import export

    store = make_review_task(tmp_path, "pick", 5)
    names = ["=2+3", "+1", "-1+2", "@SUM(A1)", "plain", "=HYPERLINK(\"x\")"]
    for name in names:
        store.answer(store.next_item(name).item_id, name, "1")
    export(str(tmp_path / "task"), str(tmp_path / "export"))
    with (tmp_path / "export" / "answers.csv").open(newline="") as f:
        csv_names = [r["annotator"] for r in csv.DictReader(f)]
    assert csv_names == ["'=2+3", "'+1", "'-1+2", "'@SUM(A1)", "plain", "'=HYPERLINK(\"x\")"]
    parquet = io.read_parquet(str(tmp_path / "export" / "answers.parquet")).column("annotator").to_pylist()
    assert parquet == names  # the machine-read copy keeps the names as given


def test_a_task_without_a_token_is_served_on_loopback_only(tmp_path):
    from segsynth.review.command import is_loopback, serve

    make_review_task(tmp_path, "pick", 1)
    with pytest.raises(io.InputError, match="no token.*token=SECRET"):
        serve(str(tmp_path / "task"), host="0.0.0.0", port=1)
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5") and not is_loopback("review.example.org")
