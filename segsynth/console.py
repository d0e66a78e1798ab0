"""What a person sees in the terminal, and where the rest goes.

Each stage prints a few lines: what it starts, one progress bar (items/s, ETA) and a result
line. Everything else (Ray's own logs and warnings, the workers' output and progress bars,
debug messages) goes to ``<out>/logs/<stage>.log`` and Ray's worker logs are copied beside it
(``<out>/logs/ray/``); ``--verbose`` shows it all in the terminal. A user error (a missing
file, a bad config) is one line naming the input and the fix; any other error still reaches
the terminal whole, with its traceback.

    with console.stage_logs("synth", cfg.out, verbose=False):
        for batch in console.progress(batches, total=n, desc="synth", unit="samples"): ...
    console.result("synth", summary)
"""
from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

log = logging.getLogger("segsynth")

TERMINAL_FORMAT = "%(message)s"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DIR = "logs"
_state = {"verbose": True, "configured": False}


class _TerminalFilter(logging.Filter):
    """segsynth's own INFO and up; from other libraries (Ray above all) only errors, unless verbose."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _state["verbose"]:
            return True
        if record.name == "segsynth" or record.name.startswith("segsynth."):
            return record.levelno >= logging.INFO
        return record.levelno >= logging.ERROR


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (test runners swap it)."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup(verbose: bool = False) -> None:
    """Terminal logging for the ``segsynth`` command (safe to call again)."""
    _state["verbose"] = verbose
    root = logging.getLogger()
    if not _state["configured"]:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(FILE_FORMAT if verbose else TERMINAL_FORMAT, datefmt="%H:%M:%S"))
        handler.addFilter(_TerminalFilter())
        handler.set_name("segsynth-terminal")
        root.addHandler(handler)
        _state["configured"] = True
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def verbose() -> bool:
    return bool(_state["verbose"])


def route_library_logs() -> None:
    """Send the loggers that Ray configures for itself through ours (terminal filter and the
    stage's log file) instead of their own console handlers. Called after ``ray.init``."""
    if verbose():
        return
    for name in ("ray", "ray.data", "ray.train", "ray.serve", "ray.tune"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                lg.removeHandler(h)
        lg.propagate = True


@contextmanager
def stage_logs(stage: str, out: str | None) -> Iterator[str | None]:
    """Write every log record of the stage (DEBUG and up, any library) to ``<out>/logs/<stage>.log``.

    When the local ``out`` folder exists already the log is written there as the stage runs (to
    follow with ``tail -f``); otherwise (a new folder, an object store) it is written to a
    temporary file and copied there at the end, so a stage that stops at a wrong input leaves no
    folder behind. Yields the log's final path (None without ``out``).
    """
    if not out:
        yield None
        return
    from segsynth import io

    path = io.join(out, LOG_DIR, f"{stage}.log")
    live = not io.is_uri(out) and Path(out).is_dir()
    target = path if live else os.path.join(tempfile.mkdtemp(prefix="segsynth-log-"), f"{stage}.log")
    try:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(target)
    except OSError:  # the stage reports an unwritable out itself, naming the key
        yield None
        return
    handler.setFormatter(logging.Formatter(FILE_FORMAT, datefmt="%H:%M:%S"))
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    started = time.time()
    try:
        yield path
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
        if io.exists(out):
            _copy_ray_logs(io.join(out, LOG_DIR, "ray"), since=started)
            if not live:
                try:
                    io.write_bytes(path, Path(target).read_bytes())
                except OSError as e:
                    log.warning("could not write the log to %s: %s", path, e)


# Ray's C++ core writes its own log lines straight to the process's stderr (file descriptor 2),
# past Python's logging: "[2026-12-01 19:35:30,540 E 19544 19544] core_worker.cc:2465: ..."
_DRAIN = b"\x00segsynth-stderr-drain\x00"
_RAY_NATIVE_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+ ([DIWEF]) \d+ \d+\] \S+:\d+: ")


def route_native_stderr() -> bool:
    """From now on, for the rest of the process, lines that Ray's C++ core writes to file
    descriptor 2 go to the ``ray.native`` logger (the stage's log file; fatal ones stay on the
    terminal) instead of straight to the terminal; everything else passes through unchanged,
    progress bars included. For the ``segsynth`` command only (it swaps the process's fd 2, which
    Ray's child processes inherit, so it is never undone). Returns whether it is in place."""
    if _state.get("native_routed"):
        return True
    import threading

    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
    except OSError:
        return False
    native = logging.getLogger("ray.native")
    terminal = os.fdopen(saved, "wb", buffering=0)
    drained = threading.Event()

    def pump() -> None:
        pending = b""
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                pending += chunk
                lines = pending.split(b"\n")
                pending = lines.pop()
                for line in lines:
                    if line.endswith(_DRAIN):  # everything written before it has been passed on
                        terminal.write(line[: -len(_DRAIN)])
                        drained.set()
                        continue
                    text = line.decode("utf-8", "replace")
                    match = _RAY_NATIVE_LINE.match(text)
                    if match:
                        native.log(logging.ERROR if match.group(1) == "F" else logging.WARNING, "%s", text)
                    else:
                        terminal.write(line + b"\n")
                if pending and not pending.startswith(b"["):  # a progress bar's \r update: show it now
                    terminal.write(pending)
                    pending = b""

    def drain() -> None:
        """At exit: let the pump pass on what is still in the pipe, then write straight to the terminal."""
        try:
            sys.stderr.flush()
            os.write(2, _DRAIN + b"\n")
            drained.wait(5.0)
            os.dup2(saved, 2)
        except OSError:
            pass

    import atexit

    atexit.register(drain)
    threading.Thread(target=pump, name="segsynth-stderr", daemon=True).start()
    _state["native_routed"] = True
    return True


def _copy_ray_logs(dest: str, since: float) -> None:
    """Copy the workers' output of the embedded local Ray (``worker-*.out/.err``) written since
    ``since`` (this stage's, not the whole session's again) into ``dest``; on a cluster they stay
    on the nodes (``ray logs`` reads them)."""
    from segsynth import io

    session = os.environ.get("SEGSYNTH_RAY_SESSION_DIR")
    if not session or not Path(session, "logs").is_dir():
        return
    for f in sorted(Path(session, "logs").glob("worker-*")):
        st = f.stat()
        if f.suffix in (".out", ".err") and st.st_size > 0 and st.st_mtime >= since:
            try:
                io.write_bytes(io.join(dest, f.name), f.read_bytes())
            except OSError:
                return


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "", unit: str = "it", **kwargs: Any):
    """One progress bar on the terminal (items/s and ETA); on a non-terminal (CI, a pipe) it
    updates at most every 30 s so logs stay short."""
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=True,
                mininterval=0.5 if tty else 30.0, **kwargs)


class FileProgress:
    """A progress bar fed from a small JSON file that another process rewrites (the training
    workers write ``{"step": n, "total": N}``): polled in a thread while ``with`` is open."""

    def __init__(self, path: str, desc: str, unit: str = "steps", every_s: float = 2.0):
        self.path, self.desc, self.unit, self.every_s = path, desc, unit, every_s
        self._stop = None

    def __enter__(self) -> "FileProgress":
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> dict | None:
        import json

        from segsynth import io

        try:
            return json.loads(io.read_bytes(self.path))
        except (OSError, ValueError):
            return None

    def _run(self) -> None:
        bar = None
        while True:
            stopped = self._stop.wait(self.every_s)
            got = self._read()
            if got and got.get("total"):
                if bar is None:
                    bar = progress(total=int(got["total"]), desc=self.desc, unit=self.unit, initial=int(got.get("step", 0)))
                bar.total = int(got["total"])
                bar.update(max(0, int(got.get("step", 0)) - bar.n))
                if got.get("postfix"):
                    bar.set_postfix_str(str(got["postfix"]), refresh=False)
            if stopped:
                break
        if bar is not None:
            bar.close()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


_PROGRESS_WRITTEN: dict[str, float] = {}  # path -> when write_progress last wrote it


def write_progress(path: str, step: int, total: int, postfix: str = "") -> None:
    """Rewrite ``path`` with ``{"step", "total", "postfix"}``, at most every 2 s (and at the end)."""
    now = time.monotonic()
    if step < total and now - _PROGRESS_WRITTEN.get(path, 0.0) < 2.0:
        return
    _PROGRESS_WRITTEN[path] = now
    import json

    from segsynth import io

    try:
        io.write_bytes(path, json.dumps({"step": step, "total": total, "postfix": postfix}).encode())
    except OSError:
        pass  # a progress display is not worth failing a run over


def result(stage: str, summary: dict | None, label: str | None = None) -> str:
    """The stage's one result line (also logged); ``label`` replaces the stage's name in it."""
    line = f"{label or stage}: " + _headline(stage, summary or {})
    log.info("%s", line)
    return line


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _headline(stage: str, s: dict) -> str:
    out = s.get("out", "")
    if stage == "cutouts":
        return (f"{s.get('written')} cutouts of {s.get('total')} images ({s.get('rejected_not_white', 0)} not on white, "
                f"{s.get('rejected_quality', 0)} low quality, {s.get('corrupt', 0)} corrupt) -> {s.get('manifest', out)}")
    if stage == "synth":
        return f"{s.get('samples_written')} samples in {s.get('shards_written')} shards ({s.get('seconds')} s) -> {out}"
    if stage == "rooms":
        return (f"{s.get('kept')} rooms kept of {s.get('generated')} ({s.get('dropped_blank', 0)} blank, "
                f"{s.get('dropped_duplicate', 0)} near duplicates) -> {s.get('library', out)}")
    if stage == "train":
        best = f"best {s.get('select_on')} {_fmt(s.get('best_score'))} at step {s.get('best_step')}" if s.get("best") else "no best/ written"
        return f"{s.get('steps')} steps, {s.get('epochs')} epoch(s); {best} -> {s.get('best') or out}"
    if stage == "eval":
        parts = [f"{m} IoU {_fmt(v.get('iou'))} SSIM {_fmt(v.get('ssim_box'))}" for m, v in (s.get("models") or {}).items()]
        return f"{s.get('items')} items; " + "; ".join(parts) + f" -> {s.get('report', out)}"
    if stage == "serve":
        if "written" in s:
            return f"{s.get('written')} cutouts from the endpoint {s.get('url')} -> {out}"
        return f"served {s.get('url')} for {s.get('served_s')} s"
    if stage == "export":
        return f"{s.get('out')} (max difference to torch {_fmt(s.get('parity_max_abs_diff'))})"
    if stage == "demo":
        return f"{len(s.get('steps') or {})} steps done"
    return out or "done"
