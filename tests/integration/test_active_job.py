"""A full unattended active-learning round on a local Ray with a tiny model: score (one actor
pool per model), select, auto-accept, harvest, context synthesis, training from the current
model, evaluation, the round-over-round table; and a round that waits for people."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from test_evaluate import tiny_salient_onnx

from segsynth import io
from segsynth.active.config import ActiveConfig
from segsynth.config import load_config
from segsynth.testing import CHROMIUM, CHROMIUM_ARGS, AppServer

SIZE = 64


def _photos(folder: Path, n: int, seed: int, white_too: bool = False) -> None:
    """Bright boxes on dark noise (a few categories), their true masks beside them in ``masks/``."""
    rng = np.random.default_rng(seed)
    rows = ["file,type"]
    for i in range(n):
        h, w = 72, 96
        img = rng.integers(0, 70, (h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        y0, x0 = rng.integers(5, 25), rng.integers(5, 40)
        mask[y0:y0 + 35, x0:x0 + 40] = 255
        img[mask > 0] = rng.integers(170, 255, 3)
        io.write_bytes(folder / "images" / f"p{i:02d}.jpg", io.encode_jpeg(img, 95))
        io.write_bytes(folder / "masks" / f"p{i:02d}.png", io.encode_png(mask))
        rows.append(f"p{i:02d}.jpg,{['sofa', 'bed', 'lamp'][i % 3]}")
    if white_too:
        img = np.full((72, 96, 3), 255, np.uint8)
        img[20:50, 30:60] = 90
        io.write_bytes(folder / "images" / "white.jpg", io.encode_jpeg(img, 95))
        rows.append("white.jpg,sofa")
    io.write_bytes(folder / "products.csv", ("\n".join(rows) + "\n").encode())


def _tiny_model(folder: Path) -> str:
    from segsynth.model import ModelSpec, build_model, preprocessing, save_model_folder

    spec = ModelSpec(encoder_name="tu-mobilenetv3_small_050", decoder_pyramid_channels=64, decoder_segmentation_channels=32)
    save_model_folder(str(folder), build_model(spec), {"name": "tiny", "model": spec.__dict__,
                                                       "preprocessing": preprocessing(SIZE, "imagenet")})
    return str(folder)


@pytest.fixture
def setup(tmp_path):
    _photos(tmp_path / "pool", 9, seed=0, white_too=True)
    _photos(tmp_path / "heldout", 4, seed=1)
    model = _tiny_model(tmp_path / "model0")
    teacher = tiny_salient_onnx(tmp_path / "bright.onnx", size=SIZE)
    (tmp_path / "train.yaml").write_text(
        f"data: [{{path: {tmp_path / 'heldout'}, kind: labelled, weight: 1.0}}]\n"
        "encoder_name: tu-mobilenetv3_small_050\ndecoder_pyramid_channels: 64\ndecoder_segmentation_channels: 32\n"
        f"size: {SIZE}\nbatch_size: 4\nepochs: 1\nmax_steps_per_epoch: 2\nwarmup_steps: 1\nnormalization: imagenet\n"
        "num_workers: 1\ncache_decoded: true\nshuffle_pool: 8\nval_fraction: 0.0\ncheckpoint_every_steps: 10\n")
    overrides = [
        f"out={tmp_path / 'active'}",
        f"model={{name: tiny, kind: checkpoint, path: {model}}}",
        f"teachers=[{{name: bright, kind: onnx-u2net, path: {teacher}, options: {{size: {SIZE}}}}}]",
        f"pool=[{{path: {tmp_path / 'pool'}, name: pool, table: {tmp_path / 'pool/products.csv'}, category_column: type}}]",
        "select={worst_categories: 2, min_count: 1, top_n: 4, control_fraction: 0.5}",
        f"train_config={tmp_path / 'train.yaml'}",
        f"eval=[{{data: {tmp_path / 'heldout'}, name: heldout}}]",
        "harvest={context_samples_per_cutout: 2, synth_overrides: [workers=1, size=64]}",
        "cpus_per_worker=0.5", "batch_size=4",
    ]
    return tmp_path, overrides


def test_an_unattended_round_end_to_end(ray_local, setup):
    from segsynth.active.job import run_rounds

    tmp_path, overrides = setup
    ref = f"auto_accept={{enabled: true, reference: {tmp_path / 'pool'}, reference_min_iou: 0.6}}"
    cfg = load_config(ActiveConfig, None, [*overrides, ref])
    summary = run_rounds(cfg)
    assert summary["rounds"] == [1]
    rd = tmp_path / "active" / "round-1"
    for name in ("config.yaml", "scores.parquet", "queue.parquet", "review/task.sqlite", "accepted/masks",
                 "model/model.pt", "report/heldout/summary.json", "ranking.png", "harvest.json"):
        assert (rd / name).exists(), name

    scores = io.read_parquet(str(rd / "scores.parquet")).to_pylist()
    assert {"category", "score", "phash", "disagreement_bright"} <= set(scores[0])
    by_key = {r["key"]: r for r in scores}
    assert by_key["pool/white"]["white_bg"] and by_key["pool/white"]["skipped"] == ""  # scored, never selected
    assert np.isnan(by_key["pool/white"]["disagreement_bright"])  # teachers skip white photos by default
    assert all(np.isfinite(r["score"]) for r in scores)
    assert len(list((tmp_path / "active" / "teachers").glob("bright-*/*.png"))) == 9  # cached by content for the next round

    queue = io.read_parquet(str(rd / "queue.parquet")).to_pylist()
    assert {q["slice"] for q in queue} == {"selected", "control"} and "pool/white" not in {q["key"] for q in queue}
    hv = json.loads((rd / "harvest.json").read_text())
    assert hv["automatic"] and hv["accepted"] >= 1 and hv["context_cutouts"] == hv["accepted"]
    assert (rd / "context_synth").is_dir()
    train_cfg = (rd / "train" / "config.yaml").read_text()
    assert str(rd / "accepted") in train_cfg and str(rd / "context_synth") in train_cfg and "model0" in train_cfg

    table = (tmp_path / "active" / "rounds.md").read_text()
    assert "AUTOMATIC" in table and "heldout" in table and "(control slice)" in table
    assert "](round-1/accepted/contact_sheet.jpg)" in table and (rd / "accepted" / "contact_sheet.jpg").is_file()
    # round 2 starts from the scores round 1 ended with (the same model on the same pool): no new scoring
    from segsynth.active.job import score

    second = score(cfg)
    assert second["round"] == 2 and second["from"] == str(rd / "report" / "after")
    assert (tmp_path / "active" / "round-2" / "masks" / "bright").is_dir()
    with open(tmp_path / "active" / "rounds.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["kind"] for r in rows} == {"eval", "category"}


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
def test_a_round_waits_for_people_answering_in_the_browser_and_goes_on(ray_local, setup):
    """Auto-accept off: the round stops at its review task; `round --wait-for-review` waits
    while a scripted annotator answers every photo by keyboard in the review app (headless
    Chromium), then harvests what that person chose, trains and reports."""
    import threading

    from segsynth.active.job import run_rounds, score
    from segsynth.review.app import create_app
    from segsynth.review.store import Store

    sync_api = pytest.importorskip("playwright.sync_api")
    tmp_path, overrides = setup
    cfg = load_config(ActiveConfig, None, [*overrides, "select.control_fraction=0.0", "harvest.context=false"])
    first = run_rounds(cfg)
    assert first["waiting"] == 1 and first["progress"]["answered"] == 0
    assert score(cfg)["round"] == 1  # scoring again is a no-op for a round that has its scores
    task = first["review"]
    result: dict = {}
    waiting = threading.Thread(target=lambda: result.update(run_rounds(cfg, wait_for_review=True, poll_s=0.1)))
    waiting.start()
    with AppServer(create_app(task)) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        page = browser.new_page()
        page.goto(url)
        page.fill("#login-name", "ana")
        page.click("#login-form button[type=submit]")
        slots = Store(task).progress()["slots"]
        for _ in range(slots):
            page.wait_for_selector("#item figure.candidate")
            shown = page.get_attribute("#item", "data-item")
            page.keyboard.press("1")  # the first mask shown fits
            page.wait_for_function("old => document.querySelector('#item').dataset.item !== old "
                                   "|| document.querySelectorAll('#history li').length > 0 && !document.querySelector('#item figure')",
                                   arg=shown)
        browser.close()
    waiting.join(300)
    assert not waiting.is_alive() and result.get("rounds") == [1], result
    answers = Store(task).answers()
    assert len(answers) == slots and {a["annotator"] for a in answers} == {"ana"}
    rd = tmp_path / "active" / "round-1"
    hv = json.loads((rd / "harvest.json").read_text())
    assert not hv["automatic"] and hv["annotators"] == ["ana"] and hv["accepted"] == slots
    chosen = {a["stem"]: a["meaning"] for a in answers}  # the candidate ana's key picked, per photo
    for stem, name in chosen.items():
        src = rd / "masks" / name / f"{stem}.png"
        assert np.array_equal(io.read_mask(rd / "accepted" / "masks" / f"{stem}.png"), io.read_mask(src)), stem
    assert "people in the review app" in (tmp_path / "active" / "rounds.md").read_text()