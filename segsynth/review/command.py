"""``segsynth review create|serve|export|close``: the review app's commands.

    segsynth review create --config configs/review-pick.yaml out=outputs/review/pick
    segsynth review serve outputs/review/pick --port 8300       # open http://127.0.0.1:8300
    segsynth review export outputs/review/pick --out outputs/review/pick-export
    segsynth review close outputs/review/pick                   # no more answers
"""
from __future__ import annotations

import argparse
import logging
import sys

from segsynth import console, io

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="review_command", metavar="<command>", required=True)
    c = sub.add_parser("create", help="build a task folder from images and candidate masks")
    c.add_argument("--config", help="review task YAML (segsynth.review.config.ReviewConfig)")
    c.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    c.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. kind=accept out=DIR")
    s = sub.add_parser("serve", help="serve the app for a task folder (FastAPI/uvicorn, no Ray)")
    s.add_argument("task", metavar="TASK_DIR")
    s.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback: exposing it is a deliberate choice)")
    s.add_argument("--port", type=int, default=8300)
    e = sub.add_parser("export", help="answers to parquet/CSV, results, accepted masks as a labelled folder")
    e.add_argument("task", metavar="TASK_DIR")
    e.add_argument("--out", required=True, help="output folder")
    k = sub.add_parser("close", help="close a task: no more hand-outs or answers (export still works)")
    k.add_argument("task", metavar="TASK_DIR")


def main(args: argparse.Namespace) -> int:
    from segsynth.review.store import ReviewError

    try:
        return _main(args)
    except ReviewError as e:  # e.g. a folder that holds no task: the user's input, one line
        raise io.InputError(e.message) from None


def _main(args: argparse.Namespace) -> int:
    from segsynth.config import dump_config, load_config
    from segsynth.review.store import Store

    cmd = args.review_command
    if cmd == "create":
        from segsynth.review.build import create
        from segsynth.review.config import ReviewConfig

        cfg = load_config(ReviewConfig, args.config, args.overrides)
        if args.print_config:
            sys.stdout.write(dump_config(cfg))
            return 0
        summary = create(cfg)
        log.info("review create: %d items (%d skipped), %d slots of %d annotator(s) each -> %s", summary["items"],
                 len(summary["skipped"]), summary["slots"], cfg.annotators_per_item, summary["out"])
        return 0
    io.require_input(args.task, "TASK_DIR", "folder")
    if cmd == "serve":
        return serve(args.task, args.host, args.port)
    if cmd == "export":
        from segsynth.review.export import export

        summary = export(args.task, args.out)
        log.info("review export: %d answers on %d items, %d accepted masks -> %s", summary["answers"], summary["items"],
                 summary["accepted"], summary["out"])
        return 0
    if cmd == "close":
        Store(args.task).close_task()
        log.info("review: %s is closed", args.task)
        return 0
    raise ValueError(f"unknown review command {cmd!r}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # another host name: reachable from elsewhere, as far as we know
        return False


def serve(task: str, host: str = "127.0.0.1", port: int = 8300) -> int:
    """Serve the task's app until Ctrl-C. A task without a token is served on loopback only:
    on an open port anyone could answer, and hold every slot under made-up names."""
    import uvicorn

    from segsynth.review.app import create_app
    from segsynth.review.store import Store

    if not is_loopback(host) and not Store(task).meta.get("token"):
        raise io.InputError(f"--host {host}: {task} has no token, so anyone who reaches the port could answer (and "
                            "lease every item under made-up names); create the task with token=SECRET for annotators "
                            "on other machines, or serve it on --host 127.0.0.1")
    app = create_app(task)  # a folder that holds no task fails here, before the port is taken
    io.require_port(host, port, "--port")
    log.info("review: %s at http://%s:%d (API docs at /docs)", task, host, port)
    uvicorn.run(app, host=host, port=port, log_level="debug" if console.verbose() else "warning")
    return 0
