"""One way to prepare an image: training, validation and every predictor agree; EXIF is applied
alike to images, masks and RGBA files."""
from __future__ import annotations

import io as _pyio

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from segsynth import io
from segsynth.preprocess import NORMALIZATIONS, Preprocessing, letterbox


@pytest.mark.parametrize("normalization", sorted(NORMALIZATIONS))
def test_torch_and_numpy_normalise_alike(normalization):
    from segsynth.model import to_input

    pre = Preprocessing(size=32, normalization=normalization)
    batch = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert np.allclose(to_input(batch, pre=pre).numpy(), pre.normalize(batch), atol=1e-6)
    if normalization == "lite":  # what the EfficientNet-Lite originals were trained on
        assert np.allclose(pre.normalize(batch), (batch.transpose(0, 3, 1, 2) - 127.0) / 128.0, atol=1e-5)


def test_card_round_trip_and_old_cards():
    pre = Preprocessing(size=320, normalization="lite")
    assert Preprocessing.from_card(pre.to_card()) == pre
    old = {"size": 64, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "pad_to": 32}
    assert Preprocessing.from_card(old).mean == (0.485, 0.456, 0.406)
    with pytest.raises(ValueError, match="valid: imagenet, lite"):
        Preprocessing(size=32, normalization="caffe")


def test_letterbox_refuses_content_that_does_not_fit():
    with pytest.raises(ValueError, match="does not fit"):
        letterbox(np.zeros((10, 20), np.uint8), 32, offset=(20, 0))


# ---------------------------------------------------------------- training path == predictor
def _real_photos(repo):
    items = [it for it in io.labelled_folder(repo / "demo_kit" / "eval")]
    items = [it for it in items if io.read_image(it["image"]).shape[0] != io.read_image(it["image"]).shape[1]]
    assert len(items) >= 3, "the demo kit's eval pairs should include non-square photos"
    return items[:3]


def test_training_preprocessing_and_predictor_give_the_same_masks(repo, tmp_path):
    """A checkpoint run through the training-time path (decode_samples -> Augmenter(train=False)
    -> Stepper.inputs -> model) and through the predictor gives the same masks on non-square
    real photos."""
    from segsynth.predict import load_predictor
    from segsynth.train.config import DataSource
    from segsynth.train.config import TrainConfig
    from segsynth.train.data import decode_samples
    from segsynth.preprocess import content_shape, unletterbox
    from segsynth.train.loop import Augmenter, LoopState, Stepper, model_card, model_spec
    from segsynth.model import build_model, save_model_folder

    cfg = TrainConfig(data=(DataSource(path="x"),), size=96, encoder_name="tu-mobilenetv3_small_050",
                      encoder_weights=None, decoder_pyramid_channels=64, decoder_segmentation_channels=32,
                      normalization="lite")
    torch.manual_seed(0)
    model = build_model(model_spec(cfg)).eval()
    save_model_folder(str(tmp_path / "ckpt"), model, model_card(cfg, LoopState(), None))
    assert io.exists(str(tmp_path / "ckpt" / "model_card.json"))

    items = _real_photos(repo)
    batch = {"sample_id": np.array([f"real/{it['stem']}#0" for it in items], dtype=object),
             "cutout_id": np.array([f"real/{it['stem']}" for it in items], dtype=object),
             "image_path": np.array([it["image"] for it in items], dtype=object),
             "mask_path": np.array([it["mask"] for it in items], dtype=object)}
    decoded = decode_samples(batch, "train", cfg.size, val_fraction=0.0)
    tensors = Augmenter(cfg.augment, cfg.seed, train=False)(decoded)
    stepper = Stepper(model, cfg, total_steps=1, device=torch.device("cpu"))
    x, _ = stepper.inputs(tensors)
    with torch.inference_mode():
        probs = torch.sigmoid(model(x))[:, 0].numpy()

    predictor = load_predictor(str(tmp_path / "ckpt"), threads=1)
    assert predictor.card["preprocessing"]["normalization"] == "lite"
    predicted = predictor.predict([io.read_image(it["image"]) for it in items])
    for p, it, pred in zip(probs, items, predicted):
        h0, w0 = io.read_image(it["image"]).shape[:2]
        h, w = content_shape(h0, w0, cfg.size)
        trained_view = unletterbox(p, (0, 0, h, w), (h0, w0))
        assert pred.shape == (h0, w0)
        assert np.abs(trained_view - pred).max() < 1e-5


# ---------------------------------------------------------------- EXIF
def _with_exif(arr: np.ndarray, orientation: int, fmt: str) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = _pyio.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_like_pillow_for_images_masks_and_rgba(orientation):
    rng = np.random.default_rng(orientation)
    rgb = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    mask = rng.integers(0, 256, (6, 10), dtype=np.uint8)
    rgba = np.dstack([rgb, mask])
    for arr, decode in ((rgb, io.decode_image), (mask, io.decode_mask), (rgba, io.decode_rgba)):
        data = _with_exif(arr, orientation, "PNG")
        expect = np.asarray(ImageOps.exif_transpose(Image.open(_pyio.BytesIO(data))))
        got = decode(data)
        assert got.shape == expect.shape and (got == expect).all(), (orientation, decode.__name__)


def test_exif_rotated_photo_and_its_mask_stay_aligned():
    """A camera JPEG stored sideways (orientation 6) and its mask PNG with the same tag: both come
    out upright and the object's pixels line up with the mask."""
    photo = np.full((40, 64, 3), 30, np.uint8)
    photo[5:15, 40:60] = 230  # a bright object, top right as stored
    mask = np.zeros((40, 64), np.uint8)
    mask[5:15, 40:60] = 255
    image = io.decode_image(_with_exif(photo, 6, "JPEG"))
    truth = io.decode_mask(_with_exif(mask, 6, "PNG"))
    assert image.shape[:2] == truth.shape == (64, 40)  # upright: rotated a quarter turn
    bright = image.mean(axis=2) > 128
    assert (bright == (truth > 128)).mean() > 0.99
