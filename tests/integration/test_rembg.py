"""Our ONNX export runs unchanged as rembg's ``u2net_custom`` model, and rembg's mask matches ours.

rembg (a test dependency, ``make install``) is run on the demo kit's real photos
(``demo_kit/eval``) with the file ``segsynth export`` wrote, through its Python API and through
the exact command the model card gives. Nothing is downloaded: ``u2net_custom`` reads
``model_path``, and U2NET_HOME/REMBG_HOME/XDG_DATA_HOME/HOME point into the test's tmp folder.

The model: masks of random weights mean nothing (rembg min-max stretches their noise), and the
repository has no trained checkpoint the tests can rely on, so ``fitted_onnx`` fits one in about
a minute: the packaged ImageNet EfficientNet-Lite0 encoder (offline, frozen) and an FPN decoder
trained on the kit's 8 photos at size 320 with ``lite`` normalisation (as the demo and CPU
recipes train). It has seen these photos; the tolerance is about rembg's preprocessing against
ours, not about generalisation.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

log = logging.getLogger(__name__)
pytestmark = pytest.mark.slow  # each test exports a model (the fixture also fits one, about a minute)

SIZE = 320  # rembg's u2net_custom input; the card lists a scale difference for any other size
FIT_STEPS = 60  # decoder-only Adam steps: training loss about 0.04, IoU to the kit's masks about 0.9
# Measured with this fixture (8 photos): rembg vs our predictor, IoU at 0.5 mean 0.81 (min 0.69),
# mean |diff| 0.056 (max 0.096); almost all of it is rembg's 320 x 320 stretch (aspect not kept).
# The same model exported without the in-graph normalisation (the graph taking `lite` input,
# which rembg feeds ImageNet-normalised) gave IoU mean 0.69 (min 0.40), mean |diff| 0.089:
# these bounds pass the first and fail the second.
MIN_MEAN_IOU = 0.75
MIN_IOU = 0.6
MAX_MEAN_ABS_DIFF = 0.075


def _photos(repo: Path) -> list[Path]:
    photos = sorted((repo / "demo_kit" / "eval" / "images").glob("*.jpg"))
    assert len(photos) == 8, "the demo kit's 8 real photos (demo_kit/ATTRIBUTION.md)"
    return photos


def _rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _iou(a: np.ndarray, b: np.ndarray, t: float = 0.5) -> float:
    a, b = a >= t, b >= t
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@pytest.fixture
def rembg_home(tmp_path, monkeypatch):
    """rembg's directories and ~ inside tmp_path, so nothing reads or writes the user's home."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("REMBG_HOME", str(home / ".rembg"))
    monkeypatch.delenv("U2NET_HOME", raising=False)
    return home


def _rembg():
    return pytest.importorskip("rembg", reason="rembg is a test dependency: `make install` puts rembg==2.0.86 "
                                                "in .venv (or pip install rembg==2.0.86)")


@pytest.fixture(scope="module")
def fitted_onnx(tmp_path_factory, repo) -> Path:
    """A size-320 ``lite`` checkpoint whose masks mean something on the kit's photos, exported
    with ``segsynth export`` to ``model.onnx`` (card ``model.json`` beside it)."""
    import torch

    from segsynth.model import ModelSpec, build_model, save_model_folder
    from segsynth.preprocess import Preprocessing
    from segsynth.train.export import export

    folder = tmp_path_factory.mktemp("fitted")
    torch.manual_seed(0)
    pre = Preprocessing(size=SIZE, normalization="lite")
    spec = ModelSpec(encoder_name="tu-tf_efficientnet_lite0", decoder_pyramid_channels=64,
                     decoder_segmentation_channels=32)
    model = build_model(spec, encoder_weights="imagenet").eval()  # packaged weights: no hub
    images, masks = [], []
    for photo in _photos(repo):
        from PIL import Image

        with Image.open(photo.parent.parent / "masks" / f"{photo.stem}.png") as m:
            gt = np.asarray(m.convert("L"))
        image, mask = pre.letterbox(_rgb(photo))[0], pre.letterbox(gt)[0]
        images += [image, np.ascontiguousarray(image[:, ::-1])]  # and the mirror image
        masks += [mask, np.ascontiguousarray(mask[:, ::-1])]
    x = torch.from_numpy(pre.normalize(np.stack(images)))
    y = torch.from_numpy(np.stack(masks)[:, None].astype(np.float32) / 255.0)
    with torch.no_grad():  # the encoder stays frozen: its features are computed once
        features = model.encoder(x)
    head = torch.nn.Sequential(model.decoder, model.segmentation_head).train()
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(FIT_STEPS):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model.segmentation_head(model.decoder(features)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    log.info("fitted decoder: loss %.4f", loss.item())
    ckpt = folder / "best"
    save_model_folder(str(ckpt), model.eval(), {"name": "rembg-fit", "encoder_name": spec.encoder_name,
                                                "model": spec.__dict__, "preprocessing": pre.to_card()})
    out = folder / "export" / "model.onnx"
    export(str(ckpt), "onnx", str(out))
    return out


def test_onnx_card_says_how_to_run_it_in_rembg(tmp_path):
    """No rembg needed: a ``lite`` model's graph takes ImageNet input (what rembg feeds), our
    predictor gives the checkpoint's masks as before, and the card's ``rembg`` block is truthful
    for a model whose size is not rembg's 320."""
    import torch

    from segsynth.model import ModelSpec, build_model, save_model_folder
    from segsynth.predict import load_predictor
    from segsynth.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
    from segsynth.train.export import export

    torch.manual_seed(0)
    spec = ModelSpec(encoder_name="tu-mobilenetv3_small_050", decoder_pyramid_channels=64,
                     decoder_segmentation_channels=32)
    ckpt = tmp_path / "ckpt"
    save_model_folder(str(ckpt), build_model(spec), {"name": "tiny", "model": spec.__dict__,
                                                     "preprocessing": Preprocessing(64, "lite").to_card()})
    out = tmp_path / "model.onnx"
    card = export(str(ckpt), "onnx", str(out))
    assert card["preprocessing"]["normalization"] == "imagenet"
    assert card["preprocessing"]["mean"] == list(IMAGENET_MEAN) and card["preprocessing"]["std"] == list(IMAGENET_STD)
    assert card["preprocessing"]["trained_normalization"]["normalization"] == "lite"
    assert json.loads(out.with_suffix(".json").read_text())["rembg"] == card["rembg"]
    block = card["rembg"]
    assert block["compatible"] is True and block["session"] == "u2net_custom"
    assert block["command"] == (f"U2NET_HOME={shlex.quote(str(tmp_path))} rembg i -m u2net_custom -x "
                                + shlex.quote(json.dumps({"model_path": str(out)})) + " in.jpg out.png")
    assert any(d.startswith("scale: the model was trained at size 64") for d in block["differences"])
    assert any(d.startswith("geometry:") for d in block["differences"])
    images = [np.random.default_rng(i).integers(0, 255, (40 + 9 * i, 70, 3), np.uint8) for i in range(3)]
    ours = load_predictor(str(out)).predict(images)
    for got, want in zip(ours, load_predictor(str(ckpt), device="cpu").predict(images)):
        assert np.abs(got - want).max() < 1e-4  # the same masks as the checkpoint: the conversion is exact
    tscard = export(str(ckpt), "torchscript", str(tmp_path / "model.ts"))
    assert tscard["preprocessing"]["normalization"] == "lite" and "rembg" not in tscard


def _replay_rembg(rgb: np.ndarray, onnx_path: Path, card: dict, session=None) -> np.ndarray:
    """rembg 2.0.86's u2net_custom pipeline, written out, with the mean/std our card declares:
    ``(H, W) uint8`` mask."""
    import onnxruntime as ort
    from PIL import Image

    session = session or ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    img = Image.fromarray(rgb)
    im = np.array(img.resize((SIZE, SIZE), Image.Resampling.LANCZOS)).astype(np.float64)
    im = im / max(np.max(im), 1e-6)
    mean, std = np.asarray(card["preprocessing"]["mean"]), np.asarray(card["preprocessing"]["std"])
    x = ((im - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
    pred = session.run(None, {session.get_inputs()[0].name: x})[0][:, 0]
    pred = np.squeeze((pred - pred.min()) / (pred.max() - pred.min()))
    mask = Image.fromarray((pred * 255).astype("uint8"), mode="L").resize(img.size, Image.Resampling.LANCZOS)
    return np.asarray(mask)


def test_rembg_masks_are_the_cards_description(fitted_onnx, repo, rembg_home, monkeypatch):
    """rembg's mask is exactly its documented pipeline applied with our card's input contract:
    the card lists every difference (a wrong normalisation in the graph or the card, another
    output layout, or a new rembg pipeline fails here)."""
    _rembg()
    from rembg import new_session, remove

    monkeypatch.setenv("U2NET_HOME", str(fitted_onnx.parent))  # rembg 2.0.86 loads model_path only from there
    card = json.loads(fitted_onnx.with_suffix(".json").read_text())
    session = new_session("u2net_custom", model_path=str(fitted_onnx))
    for photo in _photos(repo)[:4]:
        rgb = _rgb(photo)
        got = np.asarray(remove(rgb, session=session, only_mask=True))
        want = _replay_rembg(rgb, fitted_onnx, card)
        assert got.shape == rgb.shape[:2]
        assert np.abs(got.astype(int) - want).max() <= 1, photo.name  # float rounding only


def test_rembg_mask_matches_ours_on_real_photos(fitted_onnx, repo, rembg_home, monkeypatch):
    """rembg(u2net_custom, our file) against ``load_predictor(file).predict`` on the kit's 8 real photos."""
    _rembg()
    from rembg import new_session, remove

    from segsynth.predict import load_predictor

    monkeypatch.setenv("U2NET_HOME", str(fitted_onnx.parent))
    session = new_session("u2net_custom", model_path=str(fitted_onnx))
    predictor = load_predictor(str(fitted_onnx))
    ious, diffs = [], []
    for photo in _photos(repo):
        rgb = _rgb(photo)
        theirs = np.asarray(remove(rgb, session=session, only_mask=True), np.float32) / 255.0
        ours = predictor.predict([rgb])[0]
        assert theirs.shape == ours.shape
        ious.append(_iou(theirs, ours))
        diffs.append(float(np.abs(theirs - ours).mean()))
        log.info("%s: IoU %.3f, mean |diff| %.4f", photo.stem, ious[-1], diffs[-1])
    summary = f"IoU {np.round(ious, 3).tolist()}, mean |diff| {np.round(diffs, 4).tolist()}"
    assert np.mean(ious) >= MIN_MEAN_IOU and min(ious) >= MIN_IOU, summary
    assert np.mean(diffs) <= MAX_MEAN_ABS_DIFF, summary
    assert not (rembg_home / ".rembg").exists() and not (rembg_home / ".u2net").exists()  # nothing downloaded


def test_the_cards_rembg_command_works(fitted_onnx, repo, rembg_home, tmp_path, monkeypatch):
    """The card's command, run as written in a shell (rembg's own CLI), writes the cutout whose
    alpha is rembg's mask; nothing lands in rembg's home folders."""
    _rembg()
    from rembg import new_session, remove

    rembg_bin = Path(sys.executable).parent / "rembg"
    if not rembg_bin.is_file():
        pytest.skip(f"no rembg console script beside {sys.executable}")
    photo = _photos(repo)[0]
    work = tmp_path / "work"
    work.mkdir()
    (work / "in.jpg").write_bytes(photo.read_bytes())
    command = json.loads(fitted_onnx.with_suffix(".json").read_text())["rembg"]["command"]
    env = {**os.environ, "PATH": f"{rembg_bin.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    from PIL import Image

    with Image.open(work / "out.png") as cutout:
        assert cutout.mode == "RGBA"
        alpha = np.asarray(cutout.getchannel("A"))
    monkeypatch.setenv("U2NET_HOME", str(fitted_onnx.parent))
    session = new_session("u2net_custom", model_path=str(fitted_onnx))
    mask = np.asarray(remove(_rgb(photo), session=session, only_mask=True))
    assert np.abs(alpha.astype(int) - mask).max() <= 1
    assert not (rembg_home / ".rembg").exists() and not (rembg_home / ".u2net").exists()
