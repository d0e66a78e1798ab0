"""The review app without a browser: building a task, leases and slots, answers, edits, undo,
the JSON API and its refusals, concurrency, and the export that training and eval read."""
from __future__ import annotations

import csv
import sqlite3
import threading
from pathlib import Path

import pytest

from segsynth import io
from segsynth.config import ConfigError, load_config
from segsynth.review.build import create
from segsynth.review.config import ReviewConfig
from segsynth.review.store import ReviewError, Store
from segsynth.testing import make_review_task

pytest.importorskip("fastapi")


def make_task(tmp_path: Path, kind: str = "pick", k: int = 1, **extra) -> Store:
    store = make_review_task(tmp_path, kind, k, **extra)
    summary = __import__("json").loads((tmp_path / "task" / "summary.json").read_text())
    assert summary["items"] == 5 and "broken" in summary["skipped"] and "image" in summary["skipped"]["broken"]
    return store


# ---------------------------------------------------------------- building
def test_build_precomputes_every_view_and_keeps_masks_at_full_size(tmp_path):
    store = make_task(tmp_path)
    media = tmp_path / "task" / "media"
    item = store.item(store.next_item("ana").item_id)
    folder = media / item["item_id"]
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(["photo.jpg", "photo_thumb.jpg", "c1.png", "c2.png"] +
                           [f"c{i}_{v}.jpg" for i in (1, 2) for v in ("checker", "white", "outline")])
    mask = io.decode_mask((folder / "c1.png").read_bytes())
    assert mask.shape == (item["height"], item["width"])
    assert item["category"] == "chair" and store.meta["question"] == "Which mask fits the best?"
    assert (tmp_path / "task" / "config.yaml").is_file()
    con = sqlite3.connect(tmp_path / "task" / "task.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_config_refusals(tmp_path):
    with pytest.raises(ConfigError, match="accept task needs 1 candidate"):
        load_config(ReviewConfig, None, ["images=x", "kind=accept", "candidates=[{name: a, path: x}, {name: b, path: y}]"])
    with pytest.raises(ConfigError, match="compare task needs 2"):
        load_config(ReviewConfig, None, ["images=x", "kind=compare", "candidates=[{name: a, path: x}]"])
    with pytest.raises(ConfigError, match="reserved"):
        load_config(ReviewConfig, None, ["images=x", "candidates=[{name: none, path: x}]"])


def test_a_task_folder_is_never_overwritten(tmp_path):
    make_task(tmp_path)
    src = tmp_path / "in"
    with pytest.raises(io.InputError, match="holds a task already"):
        create(load_config(ReviewConfig, None, [f"images={src}", f"out={tmp_path / 'task'}",
                                                f"candidates=[{{name: g, path: {src / 'good'}}}]"]))


# ---------------------------------------------------------------- leases and slots
def test_each_item_gets_k_different_annotators_and_nobody_sees_an_item_twice(tmp_path):
    store = make_task(tmp_path, k=2)
    seen = {"ana": [], "ben": [], "cy": []}
    for _ in range(20):
        for who in seen:
            lease = store.next_item(who)
            if lease is not None:
                seen[who].append(lease.item_id)
                store.answer(lease.item_id, who, "1")
    for who, items in seen.items():
        assert len(items) == len(set(items)), who
    counts = {}
    for items in seen.values():
        for it in items:
            counts[it] = counts.get(it, 0) + 1
    assert len(counts) == 5 and set(counts.values()) == {2}
    assert store.progress()["items_done"] == 5 and store.next_item("dee") is None


def test_a_lease_comes_back_on_reload_and_goes_back_to_the_queue_when_it_expires(tmp_path):
    store = make_task(tmp_path, k=1, lease_minutes=1)
    first = store.next_item("ana", now=1000.0)
    assert store.next_item("ana", now=1010.0).item_id == first.item_id  # a reload: the same item, resumed
    other = store.next_item("ben", now=1020.0)
    assert other.item_id != first.item_id  # ana's slot is taken while her lease lives
    again = store.next_item("ben", now=1200.0)  # every lease has expired by now
    assert again is not None
    with pytest.raises(ReviewError) as e:
        store.answer(first.item_id, "ana", "1", now=1200.0)  # ana's lease expired
    assert e.value.status == 409 and e.value.code in ("lease_expired", "no_lease")


def test_skip_frees_the_slot_for_others_but_not_for_the_skipper(tmp_path):
    store = make_task(tmp_path)
    lease = store.next_item("ana")
    store.answer(lease.item_id, "ana", "skip")
    assert store.next_item("ben").item_id == lease.item_id
    assert store.next_item("ana").item_id != lease.item_id


def test_answer_refusals_store_nothing(tmp_path):
    store = make_task(tmp_path)
    lease = store.next_item("ana")
    for item, choice, code in [("nope", "1", "unknown_item"), (lease.item_id, "9", "unknown_choice"),
                               (lease.item_id, "tie", "unknown_choice")]:  # tie only in compare tasks
        with pytest.raises(ReviewError) as e:
            store.answer(item, "ana", choice)
        assert e.value.code == code and 400 <= e.value.status < 500
    with pytest.raises(ReviewError, match="not leased"):
        store.answer(lease.item_id, "ben", "1")
    assert store.answers() == []
    store.answer(lease.item_id, "ana", "2")
    with pytest.raises(ReviewError) as e:
        store.answer(lease.item_id, "ana", "1")  # a double submit
    assert e.value.code == "already_answered"
    assert [(a["choice"], a["meaning"]) for a in store.answers()] == [("2", "fat")]
    store.close_task()
    with pytest.raises(ReviewError, match="closed"):
        store.next_item("ben")
    with pytest.raises(ReviewError, match="closed"):
        store.edit(lease.item_id, "ana", "1")


def test_edit_and_undo_keep_history(tmp_path):
    store = make_task(tmp_path)
    a = store.next_item("ana")
    store.answer(a.item_id, "ana", "1")
    b = store.next_item("ana")
    store.answer(b.item_id, "ana", "none")
    store.edit(a.item_id, "ana", "2")
    assert [(x["item_id"], x["meaning"]) for x in store.answers()] == [(b.item_id, "none"), (a.item_id, "fat")]
    back = store.undo("ana")
    assert back.item_id == a.item_id  # the last answer given (the edit) is taken back
    assert store.next_item("ana").item_id == a.item_id  # and the item is hers again
    assert len(store.answers(include_superseded=True)) == 3 and len(store.answers()) == 1


def test_compare_order_is_random_per_annotator_hidden_and_recorded(tmp_path):
    store = make_task(tmp_path, kind="compare", k=3)
    orders = set()
    for who in ("ana", "ben", "cy", "dee", "eve", "fay"):
        lease = store.next_item(who)
        if lease is None:
            continue
        orders.add(lease.order)
        store.answer(lease.item_id, who, "1")
    assert len(orders) == 2  # both orders occur
    for a in store.answers():
        assert a["meaning"] == a["shown"][0] and sorted(a["shown"]) == ["fat", "good"]
        assert a["version"] == ("v1" if a["meaning"] == "good" else None)


# ---------------------------------------------------------------- concurrency
def test_concurrent_annotators_lose_nothing_and_never_share_a_slot(tmp_path):
    store = make_task(tmp_path, k=2)
    got: dict[str, list[str]] = {}
    errors = []

    def annotate(name: str) -> None:
        mine = Store(tmp_path / "task")  # its own connections, as another process would
        got[name] = []
        try:
            while (lease := mine.next_item(name)) is not None:
                mine.answer(lease.item_id, name, "1")
                got[name].append(lease.item_id)
        except Exception as e:  # noqa: BLE001  reported below
            errors.append(e)

    threads = [threading.Thread(target=annotate, args=(f"a{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    answers = store.answers()
    assert len(answers) == sum(len(v) for v in got.values()) == 10  # 5 items x 2 slots, none lost
    per_item = {}
    for a in answers:
        per_item.setdefault(a["item_id"], []).append(a["annotator"])
    assert all(len(v) == 2 and len(set(v)) == 2 for v in per_item.values())


# ---------------------------------------------------------------- the JSON API
@pytest.fixture
def client(tmp_path):
    from fastapi.testclient import TestClient

    from segsynth.review.app import create_app

    make_task(tmp_path, kind="compare", k=2)
    return TestClient(create_app(tmp_path / "task"))


def test_api_round_trip(client):
    task = client.get("/api/task").json()
    assert task["kind"] == "compare" and task["token_required"] is False
    item = client.get("/api/next", params={"annotator": "ana"}).json()
    assert [c["id"] for c in item["candidates"]] == ["1", "2"] and item["choices"] == ["1", "2", "tie", "none", "skip"]
    assert "good" not in str(item) and "fat" not in str(item)  # model names stay on the server
    assert client.get(item["image"]["display"]).headers["content-type"] == "image/jpeg"
    full = client.get(item["candidates"][0]["full"]["checker"])
    assert full.status_code == 200 and len(full.content) > 1000
    r = client.post("/api/answers", json={"item_id": item["item_id"], "annotator": "ana", "choice": "tie", "latency_ms": 812})
    assert r.status_code == 201
    assert client.get("/api/progress").json()["answered"] == 1
    hist = client.get("/api/history", params={"annotator": "ana"}).json()
    assert hist[0]["item_id"] == item["item_id"] and hist[0]["choice"] == "tie"
    again = client.get(f"/api/item/{item['item_id']}", params={"annotator": "ana"}).json()
    assert again["answer"] == "tie" and [c["id"] for c in again["candidates"]] == ["1", "2"]
    assert client.patch(f"/api/answers/{item['item_id']}", json={"annotator": "ana", "choice": "2"}).status_code == 200
    assert client.post("/api/flag", json={"item_id": item["item_id"], "annotator": "ana"}).status_code == 201


@pytest.mark.parametrize("method,path,body,status,code", [
    ("post", "/api/answers", {"item_id": "nope", "annotator": "ana", "choice": "1"}, 404, "unknown_item"),
    ("post", "/api/answers", {"item_id": "x"}, 422, "bad_request"),
    ("post", "/api/answers", {"item_id": "x", "annotator": "", "choice": "1"}, 422, "bad_annotator"),
    ("get", "/api/next", None, 422, "bad_request"),
    ("patch", "/api/answers/nope", {"annotator": "ana", "choice": "1"}, 404, "unknown_item"),
    ("get", "/media/x/../../task.sqlite", None, 404, None),
    ("get", "/media/x/secret.txt", None, 404, "not_found"),
])
def test_api_refusals_are_4xx(client, method, path, body, status, code):
    r = getattr(client, method)(path, json=body) if body is not None else getattr(client, method)(path)
    assert r.status_code == status, r.text
    if code:
        assert r.json()["error"]["code"] == code


def test_double_submit_and_expired_lease_are_409(client):
    item = client.get("/api/next", params={"annotator": "ana"}).json()
    body = {"item_id": item["item_id"], "annotator": "ana", "choice": "1"}
    assert client.post("/api/answers", json=body).status_code == 201
    second = client.post("/api/answers", json=body)
    assert second.status_code == 409 and second.json()["error"]["code"] == "already_answered"
    other = client.post("/api/answers", json={**body, "annotator": "ben"})
    assert other.status_code == 409 and other.json()["error"]["code"] == "no_lease"


def test_a_token_task_refuses_calls_without_it(tmp_path):
    from fastapi.testclient import TestClient

    from segsynth.review.app import create_app

    make_task(tmp_path, token="s3cret")
    c = TestClient(create_app(tmp_path / "task"))
    assert c.get("/api/task").status_code == 401
    assert c.get("/api/task", headers={"Authorization": "Bearer s3cret"}).json()["token_required"] is True
    assert c.get("/api/next", params={"annotator": "ana"}).status_code == 401
    assert c.get("/api/next", params={"annotator": "ana"}, headers={"Authorization": "Bearer s3cret"}).status_code == 200


# ---------------------------------------------------------------- export
def test_export_writes_answers_results_and_a_labelled_folder(tmp_path):
    from segsynth.evaluate.report import load_preferences
    from segsynth.review.export import export

    store = make_task(tmp_path, k=1)
    choices = iter(["1", "2", "none", "skip", "1", "1"])
    while (lease := store.next_item("ana")) is not None:
        store.answer(lease.item_id, "ana", next(choices))
    summary = export(str(tmp_path / "task"), str(tmp_path / "export"))
    out = tmp_path / "export"
    rows = list(csv.DictReader((out / "answers.csv").open()))
    assert [r["choice"] for r in rows] == ["good", "fat", "none", "skip", "good"]
    assert summary["accepted"] == 3 and summary["answers"] == 4
    masks = sorted(p.name for p in (out / "masks").iterdir())
    assert masks == sorted(p.name.replace(".jpg", ".png") for p in (out / "images").iterdir()) and len(masks) == 3
    items = io.labelled_folder(str(out))  # what training and the cutouts stage read
    assert len(items) == 3 and {i["category"] for i in items} >= {"chair", "lamp"}
    prefs = load_preferences(str(out / "answers.csv"))  # what segsynth eval reads
    assert {p["choice"] for p in prefs} == {"good", "fat", "none"}  # skips are not preferences
    assert (out / "answers.parquet").is_file() and "majority" in (out / "results.json").read_text()


def test_eval_reads_a_task_folder_as_preferences(tmp_path):
    from segsynth.evaluate.report import load_preferences

    store = make_task(tmp_path, kind="compare", k=1)
    for choice in ("1", "skip", "tie"):
        lease = store.next_item("ana")
        store.answer(lease.item_id, "ana", choice)
    prefs = load_preferences(str(tmp_path / "task"))
    assert len(prefs) == 2 and {p["choice"] for p in prefs} <= {"good", "fat", "tie"} and "tie" in {p["choice"] for p in prefs}


@pytest.mark.parametrize("name", ["pick", "accept", "compare"])
def test_the_example_configs_load(repo, name):
    cfg = load_config(ReviewConfig, repo / "configs" / "review" / f"{name}.yaml")
    assert cfg.kind == name


def test_parquet_candidates_and_study_results(tmp_path):
    """Masks from a parquet file (stem + PNG bytes), and a compare task's results: win rates,
    agreement and how many more items a 0.1-wide interval needs."""
    import json

    from segsynth.review.export import export
    from segsynth.testing import make_review_inputs

    src = make_review_inputs(tmp_path / "in", corrupt=False)
    rows = [{"stem": p.stem, "mask": p.read_bytes()} for p in sorted(Path(src["fat"]).glob("*.png"))]
    io.write_parquet(rows, str(tmp_path / "fat.parquet"))
    create(load_config(ReviewConfig, None, [
        "kind=compare", f"images={src['images']}", f"out={tmp_path / 'task'}", "annotators_per_item=2",
        f"candidates=[{{name: good, path: {src['good']}}}, {{name: fat, path: {tmp_path / 'fat.parquet'}}}]"]))
    store = Store(tmp_path / "task")
    for who in ("ana", "ben"):
        while (lease := store.next_item(who)) is not None:
            good_key = str(lease.order.index("c1") + 1)  # both always prefer the good mask
            store.answer(lease.item_id, who, good_key)
    export(str(tmp_path / "task"), str(tmp_path / "export"))
    res = json.loads((tmp_path / "export" / "results.json").read_text())
    assert res["win_rates"]["good"]["wins"] == 10 and res["win_rates"]["fat"]["wins"] == 0
    assert res["items_more_for_width_0.1"] >= 0 and res["agreement"]["items"] == 5
