"""A review task's state in one SQLite file (WAL mode): items, candidates, leases, answers.

Assignment: each item has ``annotators_per_item`` (K) slots. :meth:`Store.next_item` hands an
annotator one item at a time under a lease (``lease_minutes``): an item they have not answered
(or skipped) before, whose answers plus other people's live leases leave a slot free. A lease
that expires goes back to the queue, so a closed tab loses nothing; every hand-out and answer is
one ``BEGIN IMMEDIATE`` transaction, so two annotators never get the same slot. Every path that
adds an answer (a hand-out, an answer, an edit that turns a skip into an answer, an undo that
takes back a skip) asks the one slot rule, :func:`_taken`.

Answers keep the annotator, time, latency, the choice as the annotator saw it (a display id
``"1".."9"``, ``none``, ``tie``, ``skip``) and as it means (the candidate's name and version,
``none``, ``tie``); an edit or an undo supersedes the old row instead of deleting it.

A compare task shows its candidates in a random order per item and annotator
(``rng_for(seed, "order", item, annotator)``): display ids map to models on the server only, and
the app addresses each candidate's images by an opaque view id per (item, annotator, candidate)
(:meth:`Store.view_ids`), so no URL says which model is which.
"""
from __future__ import annotations

import json
import math
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


from segsynth.rng import rng_for

DB_FILE = "task.sqlite"
SCHEMA_VERSION = 2  # 2: the views table (a version-1 file gets it at its first lease or view)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY, position INTEGER NOT NULL, stem TEXT NOT NULL, image TEXT NOT NULL,
    category TEXT NOT NULL DEFAULT '', width INTEGER NOT NULL, height INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
    item_id TEXT NOT NULL REFERENCES items(item_id), cand_id TEXT NOT NULL, position INTEGER NOT NULL,
    name TEXT NOT NULL, version TEXT, source TEXT NOT NULL, PRIMARY KEY (item_id, cand_id));
CREATE TABLE IF NOT EXISTS leases (
    item_id TEXT NOT NULL REFERENCES items(item_id), annotator TEXT NOT NULL,
    leased_at REAL NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (item_id, annotator));
CREATE TABLE IF NOT EXISTS answers (
    answer_id INTEGER PRIMARY KEY AUTOINCREMENT, item_id TEXT NOT NULL REFERENCES items(item_id),
    annotator TEXT NOT NULL, choice TEXT NOT NULL, meaning TEXT NOT NULL, version TEXT,
    shown TEXT NOT NULL, created_at REAL NOT NULL, latency_ms REAL,
    superseded INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS answers_item ON answers (item_id, superseded);
CREATE INDEX IF NOT EXISTS answers_annotator ON answers (annotator, superseded);
CREATE INDEX IF NOT EXISTS answers_item_annotator ON answers (item_id, annotator, superseded);
CREATE TABLE IF NOT EXISTS flags (
    item_id TEXT NOT NULL REFERENCES items(item_id), annotator TEXT NOT NULL, note TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL);
"""
VIEWS_SCHEMA = """
CREATE TABLE IF NOT EXISTS views (
    view_id TEXT PRIMARY KEY, item_id TEXT NOT NULL REFERENCES items(item_id), annotator TEXT NOT NULL,
    cand_id TEXT NOT NULL, UNIQUE (item_id, annotator, cand_id));
"""


def _taken(item: str) -> str:
    """SQL for the slots of item ``item`` (a column or ``:item``) that other people fill: their
    current answers that are not skips, and their live leases. The one slot rule: an annotator
    may add an answer only while this is below K. Parameters ``:who`` and ``:now``."""
    return (f"((SELECT COUNT(*) FROM answers a WHERE a.item_id={item} AND a.superseded=0 AND a.choice!='skip' "
            f"AND a.annotator!=:who) + (SELECT COUNT(*) FROM leases l WHERE l.item_id={item} "
            f"AND l.expires_at>:now AND l.annotator!=:who))")


class ReviewError(Exception):
    """A request the task cannot take; ``status`` is the HTTP status the app answers with."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Lease:
    item_id: str
    annotator: str
    expires_at: float
    order: tuple[str, ...]  # cand_ids in display order: display id "1" is order[0]
    resumed: bool  # the annotator's own live lease, handed out again (a reload)
    views: tuple[str, ...] = ()  # the opaque view id of each candidate, in display order (see Store.view_ids)


def _order(kind: str, seed: int, item_id: str, annotator: str, cand_ids: list[str]) -> tuple[str, ...]:
    if kind != "compare":
        return tuple(cand_ids)
    perm = rng_for(seed, "order", item_id, annotator).permutation(len(cand_ids))
    return tuple(cand_ids[i] for i in perm)


class Store:
    """The task's SQLite file; a connection per call, so it is safe from any thread or process."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / DB_FILE
        if not self.path.is_file():
            raise ReviewError(404, "no_task", f"{self.folder} holds no review task ({DB_FILE}); "
                                              "make one with `segsynth review create`")
        self.meta = self._read_meta()

    # ---------------------------------------------------------- creation
    @classmethod
    def create(cls, folder: str | Path, meta: dict, items: list[dict], candidates: list[dict]) -> "Store":
        """A new task file with ``items`` (``item_id, stem, image, category, width, height``) and
        ``candidates`` (``item_id, cand_id, name, version, source``), in their order."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / DB_FILE
        if path.exists():
            raise ReviewError(409, "task_exists", f"{path} exists already; choose another out or delete that folder")
        con = sqlite3.connect(path)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA + VIEWS_SCHEMA)
            with con:
                con.executemany("INSERT INTO meta VALUES (?, ?)",
                                [(k, json.dumps(v)) for k, v in {**meta, "schema": SCHEMA_VERSION, "status": "open",
                                                                  "created_at": time.time()}.items()])
                con.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?)",
                                [(it["item_id"], i, it["stem"], it["image"], it.get("category", ""), it["width"],
                                  it["height"]) for i, it in enumerate(items)])
                con.executemany("INSERT INTO candidates VALUES (?, ?, ?, ?, ?, ?)",
                                [(c["item_id"], c["cand_id"], i, c["name"], c.get("version"), c["source"])
                                 for i, c in enumerate(candidates)])
        finally:
            con.close()
        return cls(folder)

    # ---------------------------------------------------------- plumbing
    def connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA busy_timeout=30000")
        con.execute("PRAGMA foreign_keys=ON")
        # WAL + NORMAL: a commit survives the app or its machine's process dying (the WAL is on disk);
        # only an OS crash or power loss can drop the last commits. It spares an fsync per answer.
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: writers queue, none interleave). Writers in
        this process queue on a lock first: SQLite's own busy wait sleeps in growing steps, which
        under many concurrent annotators costs seconds at the tail; other processes still queue
        on SQLite's lock."""
        with _write_lock(self.path), self._write() as con:
            yield con

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        con = self.connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    def _read_meta(self) -> dict:
        con = self.connect()
        try:
            return {r["key"]: json.loads(r["value"]) for r in con.execute("SELECT key, value FROM meta")}
        finally:
            con.close()

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def per_item(self) -> int:
        return int(self.meta["annotators_per_item"])

    def is_open(self, con: sqlite3.Connection | None = None) -> bool:
        own = con is None
        con = con or self.connect()
        try:
            return json.loads(con.execute("SELECT value FROM meta WHERE key='status'").fetchone()[0]) == "open"
        finally:
            if own:
                con.close()

    def _require_open(self, con: sqlite3.Connection) -> None:
        if not self.is_open(con):
            raise ReviewError(409, "task_closed", "this task is closed; it takes no more answers or changes")

    def close_task(self) -> None:
        """No more hand-outs or answers (export still works); live leases end."""
        with self.transaction() as con:
            con.execute("UPDATE meta SET value=? WHERE key='status'", (json.dumps("closed"),))
            con.execute("DELETE FROM leases")

    def _cand_ids(self, con: sqlite3.Connection, item_id: str) -> list[str]:
        return [r[0] for r in con.execute("SELECT cand_id FROM candidates WHERE item_id=? ORDER BY position", (item_id,))]

    def _check_item(self, con: sqlite3.Connection, item_id: str) -> None:
        check_text(item_id, "item_id")
        if con.execute("SELECT 1 FROM items WHERE item_id=?", (item_id,)).fetchone() is None:
            raise ReviewError(404, "unknown_item", f"item {item_id!r} is not in this task")

    # ---------------------------------------------------------- hand-out
    def next_item(self, annotator: str, now: float | None = None) -> Lease | None:
        """The item leased to ``annotator``: their live lease if they hold one (a reload), else a
        new one on the first item with a free slot that they have not seen; None when none is left."""
        annotator = check_annotator(annotator)
        now = time.time() if now is None else now
        expires = now + 60.0 * float(self.meta["lease_minutes"])
        with self.transaction() as con:
            self._require_open(con)
            con.execute("DELETE FROM leases WHERE expires_at <= ?", (now,))
            held = con.execute("SELECT item_id FROM leases WHERE annotator=? ORDER BY leased_at LIMIT 1",
                               (annotator,)).fetchone()
            if held is not None:
                con.execute("UPDATE leases SET expires_at=? WHERE item_id=? AND annotator=?", (expires, held[0], annotator))
                return self._lease(con, held[0], annotator, expires, resumed=True)
            row = con.execute(
                f"""SELECT i.item_id FROM items i
                    WHERE NOT EXISTS (SELECT 1 FROM answers a WHERE a.item_id=i.item_id AND a.annotator=:who
                                      AND a.superseded=0)
                      AND {_taken("i.item_id")} < :k
                    ORDER BY i.position LIMIT 1""", {"who": annotator, "now": now, "k": self.per_item}).fetchone()
            if row is None:
                return None
            con.execute("INSERT INTO leases VALUES (?, ?, ?, ?)", (row[0], annotator, now, expires))
            return self._lease(con, row[0], annotator, expires, resumed=False)

    def _lease(self, con, item_id: str, annotator: str, expires: float, resumed: bool) -> Lease:
        order = _order(self.kind, int(self.meta["seed"]), item_id, annotator, self._cand_ids(con, item_id))
        return Lease(item_id, annotator, expires, order, resumed, self._view_ids(con, item_id, annotator, order))

    def _require_slot(self, con, item_id: str, annotator: str, now: float, why: str) -> None:
        """Refuses (409 ``item_full``) when other people fill every slot of the item (:func:`_taken`)."""
        taken = con.execute(f"SELECT {_taken(':item')}", {"item": item_id, "who": annotator, "now": now}).fetchone()[0]
        if taken >= self.per_item:
            raise ReviewError(409, "item_full", f"item {item_id!r} has all its {self.per_item} answer(s) from other "
                                                f"people now; {why}")

    def view_ids(self, item_id: str, annotator: str, order: tuple[str, ...]) -> tuple[str, ...]:
        """Opaque ids of the candidates' views for ``annotator`` on ``item_id``, in display
        ``order``: random, made on first use, the same on every later call (a reload shows the same
        URLs, so the browser's cache works); nothing in them says which candidate is which."""
        con = self.connect()
        try:  # a read first: every hand-out after the first of an item to an annotator writes nothing
            exists = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='views'").fetchone()
            ids = exists and {r["cand_id"]: r["view_id"] for r in con.execute(
                "SELECT cand_id, view_id FROM views WHERE item_id=? AND annotator=?", (item_id, annotator))}
        finally:
            con.close()
        if ids and all(c in ids for c in order):
            return tuple(ids[c] for c in order)
        with self.transaction() as con:
            return self._view_ids(con, item_id, annotator, order)

    @staticmethod
    def _view_ids(con, item_id: str, annotator: str, order: tuple[str, ...]) -> tuple[str, ...]:
        """:meth:`view_ids` inside a write transaction."""
        con.execute(VIEWS_SCHEMA.strip().rstrip(";"))  # a version-1 task file gets the table here
        for cand_id in order:
            con.execute("INSERT OR IGNORE INTO views VALUES (?, ?, ?, ?)",
                        (secrets.token_urlsafe(12), item_id, annotator, cand_id))
        ids = {r["cand_id"]: r["view_id"] for r in con.execute(
            "SELECT cand_id, view_id FROM views WHERE item_id=? AND annotator=?", (item_id, annotator))}
        return tuple(ids[c] for c in order)

    def view(self, view_id: str) -> tuple[str, str] | None:
        """``(item_id, cand_id)`` of an opaque view id; None when there is no such view."""
        con = self.connect()
        try:
            exists = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='views'").fetchone()
            row = exists and con.execute("SELECT item_id, cand_id FROM views WHERE view_id=?", (view_id,)).fetchone()
            return (row["item_id"], row["cand_id"]) if row else None
        finally:
            con.close()

    def order_for(self, item_id: str, annotator: str) -> tuple[str, ...]:
        con = self.connect()
        try:
            return _order(self.kind, int(self.meta["seed"]), item_id, annotator, self._cand_ids(con, item_id))
        finally:
            con.close()

    # ---------------------------------------------------------- answers
    def _meaning(self, con, item_id: str, annotator: str, choice: str) -> tuple[str, str | None, list[str]]:
        """(meaning, version, shown names in display order) of a display ``choice``."""
        order = _order(self.kind, int(self.meta["seed"]), item_id, annotator, self._cand_ids(con, item_id))
        names = {r["cand_id"]: (r["name"], r["version"]) for r in
                 con.execute("SELECT cand_id, name, version FROM candidates WHERE item_id=?", (item_id,))}
        shown = [names[c][0] for c in order]
        valid = [str(i + 1) for i in range(len(order))] + ["none", "skip"] + (["tie"] if self.kind == "compare" else [])
        if choice not in valid:
            raise ReviewError(422, "unknown_choice", f"choice {choice!r} is not valid for item {item_id!r}; "
                                                     f"valid: {', '.join(valid)}")
        if choice.isdigit():
            name, version = names[order[int(choice) - 1]]
            return name, version, shown
        return choice, None, shown

    def answer(self, item_id: str, annotator: str, choice: str, latency_ms: float | None = None,
               now: float | None = None) -> dict:
        """Store ``annotator``'s answer on the item leased to them (one transaction); the lease ends.
        ``latency_ms``: the time the item was on screen, finite and >= 0, or None."""
        annotator = check_annotator(annotator)
        latency_ms = check_latency(latency_ms)
        now = time.time() if now is None else now
        with self.transaction() as con:
            self._require_open(con)
            self._check_item(con, item_id)
            lease = con.execute("SELECT expires_at FROM leases WHERE item_id=? AND annotator=?",
                                (item_id, annotator)).fetchone()
            if lease is None or lease[0] <= now:
                if con.execute("SELECT 1 FROM answers WHERE item_id=? AND annotator=? AND superseded=0",
                               (item_id, annotator)).fetchone():
                    raise ReviewError(409, "already_answered", f"{annotator} has answered item {item_id!r} already; "
                                                                "change it with PATCH /api/answers/{item_id}")
                con.execute("DELETE FROM leases WHERE item_id=? AND annotator=?", (item_id, annotator))
                raise ReviewError(409, "lease_expired" if lease else "no_lease",
                                  f"item {item_id!r} is not leased to {annotator} (the lease "
                                  + ("expired" if lease else "was never given") + "); ask GET /api/next for an item")
            meaning, version, shown = self._meaning(con, item_id, annotator, choice)
            if choice != "skip":
                self._require_slot(con, item_id, annotator, now, "ask GET /api/next for another item")
            cur = con.execute("INSERT INTO answers (item_id, annotator, choice, meaning, version, shown, created_at, latency_ms) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                              (item_id, annotator, choice, meaning, version, json.dumps(shown), now, latency_ms))
            con.execute("DELETE FROM leases WHERE item_id=? AND annotator=?", (item_id, annotator))
            return {"answer_id": cur.lastrowid, "item_id": item_id, "choice": choice}

    def edit(self, item_id: str, annotator: str, choice: str, now: float | None = None) -> dict:
        """Change ``annotator``'s answer on an item (the old row is kept, superseded)."""
        annotator = check_annotator(annotator)
        now = time.time() if now is None else now
        with self.transaction() as con:
            self._require_open(con)
            self._check_item(con, item_id)
            old = con.execute("SELECT answer_id, choice, latency_ms FROM answers WHERE item_id=? AND annotator=? "
                              "AND superseded=0", (item_id, annotator)).fetchone()
            if old is None:
                raise ReviewError(404, "no_answer", f"{annotator} has no answer on item {item_id!r} to change")
            meaning, version, shown = self._meaning(con, item_id, annotator, choice)
            if old["choice"] == "skip" and choice != "skip":  # a skip held no slot: this answer needs one
                self._require_slot(con, item_id, annotator, now, "your skip stays")
            con.execute("UPDATE answers SET superseded=1 WHERE answer_id=?", (old["answer_id"],))
            cur = con.execute("INSERT INTO answers (item_id, annotator, choice, meaning, version, shown, created_at, latency_ms) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                              (item_id, annotator, choice, meaning, version, json.dumps(shown), now, old["latency_ms"]))
            return {"answer_id": cur.lastrowid, "item_id": item_id, "choice": choice}

    def undo(self, annotator: str, now: float | None = None) -> Lease | None:
        """Take back ``annotator``'s last answer: it is superseded and its item leased to them again
        (their current lease, if any, goes back to the queue). None when there is nothing to undo."""
        annotator = check_annotator(annotator)
        now = time.time() if now is None else now
        with self.transaction() as con:
            self._require_open(con)
            last = con.execute("SELECT answer_id, item_id, choice FROM answers WHERE annotator=? AND superseded=0 "
                               "ORDER BY answer_id DESC LIMIT 1", (annotator,)).fetchone()
            if last is None:
                return None
            if last["choice"] == "skip":  # a skip held no slot: the lease that replaces it needs one
                self._require_slot(con, last["item_id"], annotator, now, "your skip stays (nothing to undo into)")
            con.execute("UPDATE answers SET superseded=1 WHERE answer_id=?", (last["answer_id"],))
            con.execute("DELETE FROM leases WHERE annotator=?", (annotator,))
            expires = now + 60.0 * float(self.meta["lease_minutes"])
            con.execute("INSERT INTO leases VALUES (?, ?, ?, ?)", (last["item_id"], annotator, now, expires))
            return self._lease(con, last["item_id"], annotator, expires, resumed=False)

    def flag(self, item_id: str, annotator: str, note: str = "") -> None:
        annotator = check_annotator(annotator)
        note = check_text(note, "note")
        with self.transaction() as con:
            self._check_item(con, item_id)
            con.execute("INSERT INTO flags VALUES (?, ?, ?, ?)", (item_id, annotator, note[:500], time.time()))

    # ---------------------------------------------------------- reading
    def item(self, item_id: str) -> dict:
        con = self.connect()
        try:
            row = con.execute("SELECT * FROM items WHERE item_id=?", (item_id,)).fetchone()
            if row is None:
                raise ReviewError(404, "unknown_item", f"item {item_id!r} is not in this task")
            return dict(row)
        finally:
            con.close()

    def candidates(self, item_id: str) -> dict[str, dict]:
        con = self.connect()
        try:
            return {r["cand_id"]: dict(r) for r in con.execute("SELECT * FROM candidates WHERE item_id=?", (item_id,))}
        finally:
            con.close()

    def answer_of(self, item_id: str, annotator: str) -> str | None:
        """``annotator``'s current answer (the key pressed) on an item, None without one."""
        con = self.connect()
        try:
            row = con.execute("SELECT choice FROM answers WHERE item_id=? AND annotator=? AND superseded=0",
                              (item_id, check_annotator(annotator))).fetchone()
            return row[0] if row else None
        finally:
            con.close()

    def history(self, annotator: str, limit: int = 20) -> list[dict]:
        """``annotator``'s latest answers, newest first (what the side list shows)."""
        annotator = check_annotator(annotator)
        con = self.connect()
        try:
            rows = con.execute("SELECT a.item_id, a.choice, a.created_at, i.stem FROM answers a JOIN items i USING (item_id) "
                               "WHERE a.annotator=? AND a.superseded=0 ORDER BY a.answer_id DESC LIMIT ?",
                               (annotator, limit)).fetchall()
            return [dict(r) for r in rows]
        finally:
            con.close()

    def answers(self, include_superseded: bool = False) -> list[dict]:
        """Every answer with its item's stem and category, in the order given."""
        con = self.connect()
        try:
            where = "" if include_superseded else "WHERE a.superseded=0"
            rows = con.execute(f"SELECT a.*, i.stem, i.category FROM answers a JOIN items i USING (item_id) {where} "
                               "ORDER BY a.answer_id").fetchall()
            return [{**dict(r), "shown": json.loads(r["shown"])} for r in rows]
        finally:
            con.close()

    def flags(self) -> list[dict]:
        con = self.connect()
        try:
            return [dict(r) for r in con.execute("SELECT * FROM flags ORDER BY created_at")]
        finally:
            con.close()

    def progress(self, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        con = self.connect()
        try:
            n_items = con.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            counted = con.execute("SELECT item_id, COUNT(*) FROM answers WHERE superseded=0 AND choice!='skip' "
                                  "GROUP BY item_id").fetchall()
            per = {r[0]: r[1] for r in counted}
            done = sum(1 for v in per.values() if v >= self.per_item)
            annotators = {r[0]: {"answers": r[1], "skips": r[2]} for r in con.execute(
                "SELECT annotator, SUM(choice!='skip'), SUM(choice='skip') FROM answers WHERE superseded=0 GROUP BY annotator")}
            leased = con.execute("SELECT COUNT(*) FROM leases WHERE expires_at > ?", (now,)).fetchone()[0]
            slots = n_items * self.per_item
            answered = sum(per.values())  # the true count: an item over its K shows, it is not capped away
            filled = sum(min(v, self.per_item) for v in per.values())
            return {"items": n_items, "annotators_per_item": self.per_item, "slots": slots, "answered": answered,
                    "slots_filled": filled, "over_slots": answered - filled, "items_done": done, "leased": leased,
                    "open": self.is_open(con), "fraction": round(filled / slots, 4) if slots else 1.0,
                    "annotators": annotators}
        finally:
            con.close()


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _write_lock(path: Path) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(str(path.resolve()), threading.Lock())


def check_text(value: str, what: str) -> str:
    """``value`` when it can be stored (UTF-8 encodable: a lone surrogate such as JSON's
    ``"\\ud800"`` cannot); else a 422 naming ``what``."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ReviewError(422, "bad_text", f"{what}: {value[e.start:e.end]!r} at position {e.start} is not a "
                                           "character (a lone surrogate); send text as UTF-8") from None
    return value


def check_annotator(name: str) -> str:
    """An annotator's name as given, stripped; refused when empty, overlong or not text."""
    name = check_text((name or "").strip(), "annotator")
    if not name or len(name) > 64 or any(c in name for c in "/\\\n\r\t"):
        raise ReviewError(422, "bad_annotator", "give your name (1-64 characters, no slashes or line breaks)")
    return name


def check_latency(latency_ms: float | None) -> float | None:
    """The time an item was on screen in ms: finite and >= 0, or None; else a 422."""
    if latency_ms is None:
        return None
    if isinstance(latency_ms, bool) or not isinstance(latency_ms, (int, float)) or not math.isfinite(latency_ms) \
            or latency_ms < 0:
        raise ReviewError(422, "bad_latency", f"latency_ms={latency_ms!r}: give the milliseconds the item was shown "
                                              "(a finite number >= 0), or leave it out")
    return float(latency_ms)
