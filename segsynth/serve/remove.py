"""``segsynth remove INPUT... --out DIR [--url URL]``: cut out files or folders of images.

    segsynth remove photos/ shoe.jpg --out cutouts/ --model outputs/demo/train/best   # in-process
    segsynth remove photos/ --out cutouts/ --url http://127.0.0.1:8000               # through an endpoint

Output names mirror the inputs: ``shoe.jpg`` -> ``DIR/shoe.png``; a folder's files keep their
paths below it (``photos/a/b.jpg`` -> ``DIR/a/b.png``). Without ``--url`` the model runs in this
process (``--model``, any path :func:`segsynth.predict.load_predictor` takes); with ``--url``,
``--concurrency`` requests are in flight at once, and 503s (a full queue) and dropped connections
are retried with backoff. A bad file is counted and reported, never stops the run; the exit
status is 1 when any file failed.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import posixpath
import random
import time
from dataclasses import dataclass

from segsynth import io
from segsynth.serve.config import AUTH_TOKEN_ENV
from segsynth.serve.uploads import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, CutoutOptions, UploadError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    src: str  # input file (path or URI)
    dest: str  # output file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder; names mirror the inputs")
    p.add_argument("--url", default=None, help="endpoint base URL, e.g. http://127.0.0.1:8000 (default: run in-process)")
    p.add_argument("--model", default=None, help="in-process: checkpoint folder or .onnx file")
    p.add_argument("--kind", default=None, help="in-process: predictor kind (default: inferred from --model)")
    p.add_argument("--output", default=None, choices=["rgba", "mask", "composite"],
                   help="default rgba; composite with --bg, mask with --only-mask")
    p.add_argument("--only-mask", action="store_true", help="write the 8-bit mask (= --output mask)")
    p.add_argument("--bg", default=None, help="background colour #rrggbb: the cutout composited over it")
    p.add_argument("--crop", action="store_true", help="crop each output to the product's box with a 5%% margin")
    p.add_argument("--no-refine", action="store_true", help="keep the model's mask as resized (no guided-filter edges)")
    p.add_argument("--shadow", action="store_true", help="keep each product's contact shadow (plain backdrops) as partial alpha")
    p.add_argument("--bg-image", default=None, metavar="FILE",
                   help="a background photo: each cutout composited over it (scaled to cover, centred)")
    p.add_argument("--threshold", type=float, default=None, help="0..1 hard alpha (default: soft)")
    p.add_argument("--format", default="png", choices=["png", "webp", "jpeg"])
    p.add_argument("--token", default=None, help="with --url: the endpoint's bearer token (default: $SEGSYNTH_AUTH_TOKEN)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (with --url)")
    p.add_argument("--retries", type=int, default=5, help="retries per file on 503 or connection errors")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--batch-size", type=int, default=8, help="in-process: images per model call")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def plan(inputs: list[str], out: str, extension: str) -> list[Job]:
    """Input files and folders -> jobs with mirrored output names (duplicates refused)."""
    jobs, seen = [], {}
    for item in inputs:
        fs, p = io.resolve(item)
        kind = fs.get_file_info(p).type.name
        if kind == "Directory":
            files = [(f, posixpath.relpath(io.resolve(f)[1], p))
                     for f in io.list_files(item, io.IMAGE_EXTS, recursive=True)]
            if not files:
                log.warning("%s: no images (%s)", item, ", ".join(io.IMAGE_EXTS))
        elif kind == "File":
            files = [(item, item.replace("\\", "/").rsplit("/", 1)[-1])]
        else:
            raise FileNotFoundError(f"input {item} does not exist; pass image files or folders")
        for src, rel in files:
            stem_rel = rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel
            dest = io.join(out, stem_rel + extension)
            if dest in seen:
                raise ValueError(f"{src} and {seen[dest]} would both be written to {dest}; "
                                 "pass them in separate runs or rename one")
            seen[dest] = src
            jobs.append(Job(src, dest))
    return jobs


def _progress(total: int, disabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", disable=disabled, desc="remove")


def run_local(jobs: list[Job], opts: CutoutOptions, model: str | None, kind: str | None = None,
              batch_size: int = 8, progress: bool = True, background: bytes | None = None) -> dict[str, str]:
    """Cut out ``jobs`` with the model in this process; returns ``{src: error}`` for failures
    (an unreadable file, or an output its format cannot hold: that file is skipped, the rest go on)."""
    from segsynth.predict import load_predictor
    from segsynth.serve.uploads import decode_upload, render_cutout

    bg_rgb = None if background is None else decode_upload(background, "--bg-image", DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS)

    predictor = load_predictor(model, kind=kind)
    failures: dict[str, str] = {}
    bar = _progress(len(jobs), not progress)
    for start in range(0, len(jobs), batch_size):
        chunk, images = [], []
        for job in jobs[start:start + batch_size]:
            try:
                images.append(decode_upload(io.read_bytes(job.src), job.src, DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS))
                chunk.append(job)
            except (UploadError, OSError) as e:
                failures[job.src] = str(e)
                log.warning("skipped %s: %s", job.src, e)
                bar.update(1)
        if not images:
            continue
        for job, rgb, mask in zip(chunk, images, predictor.predict(images)):
            try:
                body, _ = render_cutout(rgb, mask, opts, bg_rgb)
                io.write_bytes(job.dest, body)
            except (UploadError, OSError) as e:
                failures[job.src] = str(e)
                log.warning("skipped %s: %s", job.src, e)
            bar.update(1)
    bar.close()
    return failures


async def _run_remote(jobs: list[Job], opts: CutoutOptions, url: str, concurrency: int, retries: int,
                      timeout: float, progress: bool, token: str | None = None,
                      background: bytes | None = None) -> dict[str, str]:
    import httpx

    params = {"output": opts.output, "format": opts.format}
    if opts.output == "composite":
        params["bg"] = "#%02x%02x%02x" % opts.bg
    if opts.threshold is not None:
        params["threshold"] = str(opts.threshold)
    if opts.crop:
        params["crop"] = "true"
    if not opts.refine:
        params["refine"] = "false"
    if opts.shadow:
        params["shadow"] = "true"
    endpoint = url.rstrip("/") + "/v1/remove"
    failures: dict[str, str] = {}
    gate = asyncio.Semaphore(max(1, concurrency))
    bar = _progress(len(jobs), not progress)
    rng = random.Random(0)  # jitter only: spreads retries, no effect on outputs

    async def one(client: httpx.AsyncClient, job: Job) -> None:
        async with gate:
            try:
                data = await asyncio.to_thread(io.read_bytes, job.src)
            except OSError as e:
                failures[job.src] = f"unreadable: {e}"
                bar.update(1)
                return
            name = job.src.replace("\\", "/").rsplit("/", 1)[-1]
            for attempt in range(retries + 1):
                try:
                    files = [("file", (name, data))] + ([("bg_image", ("bg_image", background))] if background else [])
                    r = await client.post(endpoint, params=params, files=files)
                except httpx.TransportError as e:  # refused, reset, timed out: worth another try
                    problem = f"{type(e).__name__}: {e}"
                else:
                    if r.status_code == 200:
                        await asyncio.to_thread(io.write_bytes, job.dest, r.content)
                        failures.pop(job.src, None)
                        break
                    problem = f"HTTP {r.status_code}: {_error_message(r)}"
                    if r.status_code not in (502, 503, 504):  # the input's fault (4xx) or a bug: no retry
                        failures[job.src] = problem
                        break
                failures[job.src] = problem
                if attempt < retries:
                    await asyncio.sleep(min(10.0, 0.25 * 2 ** attempt) * (0.5 + rng.random()))
            if job.src in failures:
                log.warning("failed %s: %s", job.src, failures[job.src])
            bar.update(1)

    limits = httpx.Limits(max_connections=max(1, concurrency), max_keepalive_connections=max(1, concurrency))
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers) as client:
        await asyncio.gather(*(one(client, job) for job in jobs))
    bar.close()
    return failures


def _error_message(r) -> str:
    try:
        return r.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return r.text[:200]


def main(args: argparse.Namespace) -> int:
    output = args.output or ("mask" if args.only_mask else "composite" if args.bg or args.bg_image else "rgba")
    if args.only_mask and output != "mask":
        log.error("--only-mask writes masks; it cannot go with --output %s", output)
        return 2
    try:
        opts = CutoutOptions(output=output, threshold=args.threshold, format=args.format, crop=args.crop,
                             refine=not args.no_refine, shadow=args.shadow,
                             **({"bg": _parse_bg(args.bg)} if args.bg else {}))
    except UploadError as e:
        log.error("%s", e.message)
        return 2
    background = None
    if args.bg_image:
        if output != "composite":
            log.error("--bg-image is a background to composite over; it cannot go with --output %s", output)
            return 2
        try:
            background = io.read_bytes(args.bg_image)
        except OSError as e:
            log.error("--bg-image %s: unreadable (%s); pass an image file", args.bg_image, e)
            return 2
    if not args.url and not args.model and args.kind != "white-threshold":
        log.error("pass --model PATH to run in-process, or --url URL to use an endpoint")
        return 2
    try:
        jobs = plan(list(args.inputs), args.out, opts.extension)
    except (FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        return 2
    todo = jobs if args.overwrite else [j for j in jobs if not io.exists(j.dest)]
    if len(todo) < len(jobs):
        log.info("%d outputs exist already and are skipped (--overwrite to redo them)", len(jobs) - len(todo))
    started = time.perf_counter()
    progress = not args.no_progress
    if args.url:
        token = args.token or os.environ.get(AUTH_TOKEN_ENV) or None
        failures = asyncio.run(_run_remote(todo, opts, args.url, args.concurrency, args.retries, args.timeout, progress,
                                           token, background))
    else:
        try:
            failures = run_local(todo, opts, args.model, args.kind, args.batch_size, progress, background)
        except UploadError as e:  # the background itself is not an image
            log.error("%s", e.message)
            return 2
    seconds = time.perf_counter() - started
    log.info("%d written, %d failed, %d skipped in %.1f s -> %s", len(todo) - len(failures), len(failures),
             len(jobs) - len(todo), seconds, args.out)
    for src, problem in sorted(failures.items()):
        log.error("  %s: %s", src, problem)
    return 1 if failures else 0


def _parse_bg(value: str) -> tuple[int, int, int]:
    return CutoutOptions.parse({"output": "composite", "bg": value}).bg


if __name__ == "__main__":  # python -m segsynth.serve.remove ...
    import sys

    parser = argparse.ArgumentParser(prog="segsynth remove")
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO)
    sys.exit(main(parser.parse_args()))
