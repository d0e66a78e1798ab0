"""The review app on real catalog photos: answers per minute by keyboard, page weight, time to
the next item, and the app under 20 concurrent scripted annotators against one.

    python benchmarks/review.py                       # measure, print, save outputs/bench/review/results.json
    python benchmarks/review.py --write               # also the "## Review app" section of BENCHMARKS.md
    python benchmarks/review.py --screenshots docs    # also docs/review_{pick,accept,compare}.png
    python benchmarks/review.py --render outputs/bench/review/results.json --write   # text from saved figures

Items: the demo kit's IKEA catalog photos (demo_kit/catalog, see its ATTRIBUTION.md); candidates:
the white-background rule (``segsynth.white``) and the demo model (``make demo``'s
``outputs/demo/train/best``; the white rule twice, once eroded, without it). The browser is
Debian's /usr/bin/chromium driven by Playwright; the annotators are scripted, so answers per
minute is a floor on what the flow allows, not a person's speed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))
from _sections import publish  # noqa: E402

HEADING = "## Review app"


def make_masks(images: Path, out: Path, limit: int) -> tuple[list[str], dict[str, Path]]:
    """Candidate mask folders for the first ``limit`` photos: {name: folder}."""
    import cv2
    import numpy as np

    from segsynth import io
    from segsynth.predict import load_predictor

    paths = io.list_files(str(images), io.IMAGE_EXTS)[:limit]
    predictors = {"white": load_predictor(None, "white-threshold")}
    demo = REPO / "outputs/demo/train/best"
    if (demo / "model_card.json").is_file():
        predictors["demo-model"] = load_predictor(str(demo))
    folders = {}
    for name, pred in predictors.items():
        folders[name] = out / name
        folders[name].mkdir(parents=True, exist_ok=True)
        for p in paths:
            mask = (np.clip(pred.predict_one(io.read_image(p)), 0, 1) * 255).astype(np.uint8)
            (folders[name] / f"{io.stem(p)}.png").write_bytes(io.encode_png(mask))
    if len(folders) == 1:  # no demo model: a second, eroded white mask so pick and compare have two
        folders["white-eroded"] = out / "white-eroded"
        folders["white-eroded"].mkdir(exist_ok=True)
        for f in folders["white"].iterdir():
            m = io.decode_mask(f.read_bytes())
            (folders["white-eroded"] / f.name).write_bytes(io.encode_png(cv2.erode(m, np.ones((9, 9), np.uint8))))
    return [io.stem(p) for p in paths], folders


def build_task(kind: str, images: Path, folders: dict[str, Path], out: Path, k: int = 1, limit: int | None = None):
    from segsynth.config import load_config
    from segsynth.review.build import create
    from segsynth.review.config import ReviewConfig

    names = list(folders)[:1] if kind == "accept" else list(folders)[::-1]
    cands = "[" + ", ".join(f"{{name: {n}, path: {folders[n]}}}" for n in names) + "]"
    overrides = [f"kind={kind}", f"images={images}", f"out={out}", f"annotators_per_item={k}", f"candidates={cands}"]
    if limit:
        overrides.append(f"limit={limit}")
    return create(load_config(ReviewConfig, None, overrides))


def Server(task: Path):
    from segsynth.review.app import create_app
    from segsynth.testing import AppServer

    return AppServer(create_app(task))


def browser_flow(url: str, answers: int, screenshot: Path | None = None) -> dict:
    """A scripted annotator in Chromium: presses a key as soon as an item's images are all
    shown; records the time between answers, the time from the key to the next item shown and
    the bytes each item's images weigh."""
    from playwright.sync_api import sync_playwright

    from segsynth.testing import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        weights: dict[str, int] = {}
        page.on("response", lambda r: weights.__setitem__(r.url, int(r.headers.get("content-length") or 0))
                if "/media/" in r.url else None)
        page.goto(url)
        page.fill("#login-name", "bench")
        page.click("#login-form button[type=submit]")
        ready = ("() => { const imgs = [...document.querySelectorAll('#item img')];"
                 " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }")
        page.wait_for_function(ready)
        if screenshot:
            page.screenshot(path=str(screenshot))
        stamps, to_next, item_bytes = [time.perf_counter()], [], []
        for n in range(answers):
            shown = page.get_attribute("#item", "data-item")
            before = dict(weights)
            t0 = time.perf_counter()
            page.keyboard.press("1" if n % 3 else "0")
            page.wait_for_function("old => { const d = document.querySelector('#item').dataset.item;"
                                   " return d !== old; }", arg=shown)
            if page.get_attribute("#item", "data-item") == "":
                break  # the task is done
            page.wait_for_function(ready)
            now = time.perf_counter()
            to_next.append((now - t0) * 1000.0)
            stamps.append(now)
            item_bytes.append(sum(v for u, v in weights.items() if u not in before))
        browser.close()
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"answers": len(gaps), "answers_per_minute": 60.0 / statistics.mean(gaps) if gaps else None,
            "to_next_ms_median": statistics.median(to_next) if to_next else None,
            "to_next_ms_p90": _pct(to_next, 90), "item_kb_median": statistics.median(item_bytes) / 1024 if item_bytes else None}


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def scripted_load(url: str, annotators: int, seconds: float) -> dict:
    """``annotators`` threads, each looping next -> answer over HTTP for ``seconds``; the round
    trip of each answer is timed. Returns counts and percentiles."""
    import httpx

    stop = time.monotonic() + seconds
    rtt: list[float] = []
    ok = [0]
    lock = threading.Lock()

    def run(name: str) -> None:
        with httpx.Client(base_url=url, timeout=60.0) as c:
            while time.monotonic() < stop:
                r = c.get("/api/next", params={"annotator": name})
                if r.status_code == 204:
                    return
                item = r.json()
                t0 = time.perf_counter()
                a = c.post("/api/answers", json={"item_id": item["item_id"], "annotator": name, "choice": "1"})
                dt = (time.perf_counter() - t0) * 1000.0
                if a.status_code == 201:
                    with lock:
                        ok[0] += 1
                        rtt.append(dt)

    started = time.perf_counter()
    with ThreadPoolExecutor(annotators) as pool:
        list(pool.map(run, [f"a{i:02d}" for i in range(annotators)]))
    wall = time.perf_counter() - started
    return {"annotators": annotators, "seconds": seconds, "wall_s": wall, "answers_ok": ok[0],
            "answers_per_s": ok[0] / wall if wall > 0 else None,
            "answer_ms_median": statistics.median(rtt) if rtt else None, "answer_ms_p99": _pct(rtt, 99)}


def measure(args) -> dict:
    from segsynth.review.store import Store

    root = Path(tempfile.mkdtemp(prefix="review-bench-"))
    images = REPO / "demo_kit/catalog/images"
    stems, folders = make_masks(images, root / "masks", args.items)
    results = {"date": time.strftime("%Y-%m-%d"), "command": "python benchmarks/review.py " + " ".join(sys.argv[1:]),
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "load_avg_start": round(os.getloadavg()[0], 1)},
               "items": len(stems), "candidates": list(folders), "photos": "demo_kit/catalog/images (IKEA catalog)"}
    for kind in ("pick", "accept", "compare"):
        build_task(kind, images, folders, root / kind, limit=args.items)
        shot = Path(args.screenshots) / f"review_{kind}.png" if args.screenshots else None
        with Server(root / kind) as url:
            results[kind] = browser_flow(url, args.answers, shot)
    # the app under load: many small generated items, each open to every annotator (K = their
    # number), so the SQLite writes and the leases are what is measured, not running out of work
    from segsynth.testing import make_review_inputs

    src = make_review_inputs(root / "load-in", n=args.load_items, corrupt=False)
    runs = {}
    for name, n in (("one", 1), ("many", args.annotators)):
        build_task("pick", Path(src["images"]), {"good": Path(src["good"]), "fat": Path(src["fat"])},
                   root / f"load-{name}", k=args.annotators)
        with Server(root / f"load-{name}") as url:
            runs[name] = scripted_load(url, n, args.seconds)
        runs[name]["stored"] = len(Store(root / f"load-{name}").answers())
    single, many = runs["one"], runs["many"]
    results["load"] = {"one": single, "many": many, "items": args.load_items}
    results["machine"]["load_avg_end"] = round(os.getloadavg()[0], 1)
    return results


def _f(v, nd=1) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def section(r: dict) -> str:
    """The "## Review app" section, every figure from ``r``."""
    one, many = r["load"]["one"], r["load"]["many"]
    lost = many["answers_ok"] - many["stored"]
    ratio = (many["answer_ms_p99"] / one["answer_ms_p99"]) if one["answer_ms_p99"] and many["answer_ms_p99"] else None
    lines = [HEADING, "",
             f"`{r['command']}` ({r['date']}, {r['machine']['cpus']} cores, one-minute load average "
             f"{r['machine']['load_avg_start']} at the start and {r['machine']['load_avg_end']} at the end). Items: "
             f"{r['items']} photos of {r['photos']}; candidates: {', '.join(r['candidates'])}. A scripted annotator in "
             "headless Chromium presses a key as soon as an item's images are all shown, so answers per minute is "
             "a floor set by the app and the browser, not a person's pace.", "",
             "| task kind | answers | answers per minute (keyboard) | key to next item shown, median (ms) | p90 (ms) | item images, median (KB) |",
             "|---|---|---|---|---|---|"]
    for kind in ("pick", "accept", "compare"):
        k = r[kind]
        lines.append(f"| {kind} | {k['answers']} | {_f(k['answers_per_minute'])} | {_f(k['to_next_ms_median'], 0)} | "
                     f"{_f(k['to_next_ms_p90'], 0)} | {_f(k['item_kb_median'])} |")
    lines += ["",
              f"Under load: scripted annotators over HTTP, each looping next item -> answer for at most "
              f"{many['seconds']:.0f} s on a task of {r['load']['items']} small generated items, each open to "
              f"{many['annotators']} annotators (the SQLite writes and leases are measured, not the photos).", "",
              "| annotators | wall (s) | answers accepted | answers stored | answers/s | answer round trip median (ms) | p99 (ms) |",
              "|---|---|---|---|---|---|---|",
              *[f"| {x['annotators']} | {_f(x['wall_s'])} | {x['answers_ok']} | {x['stored']} | {_f(x['answers_per_s'])} | "
                f"{_f(x['answer_ms_median'])} | {_f(x['answer_ms_p99'])} |" for x in (one, many)], "",
              (f"No answer was lost under load ({many['stored']} stored of {many['answers_ok']} accepted)." if lost == 0 else
               f"{lost} accepted answers are missing from the database under load: a bug."),
              (f"The p99 round trip with {many['annotators']} annotators is {ratio:.1f}x the single annotator's, and "
               f"{many['annotators']} annotators together gave {many['answers_per_s'] / one['answers_per_s']:.2f}x the answers "
               f"per second of one: the scripted clients and the app share the machine's {r['machine']['cpus']} cores, "
               "and every hand-out and answer is one SQLite write transaction, so writers queue." if ratio else "")]
    return "\n".join(line for line in lines if line is not None) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=24, help="catalog photos per task")
    ap.add_argument("--answers", type=int, default=20, help="keyboard answers per task kind in the browser")
    ap.add_argument("--annotators", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each load run (at most)")
    ap.add_argument("--load-items", type=int, default=300, help="generated items in the load runs' tasks")
    ap.add_argument("--screenshots", help="folder for review_{pick,accept,compare}.png")
    ap.add_argument("--render", help="a saved results.json: write its text, measure nothing")
    ap.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.render:
        publish(json.loads(Path(args.render).read_text()), section, HEADING, write=args.write)
    else:
        publish(measure(args), section, HEADING, save_to=REPO / "outputs/bench/review/results.json", write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
