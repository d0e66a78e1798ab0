"""Helpers for tests and benchmarks, not for production runs.

- :func:`build_random_pipeline` / :func:`build_tiny_pipeline`: a Stable Diffusion pipeline folder
  with random weights and a locally written tokenizer (nothing downloaded), which
  :class:`segsynth.rooms.generator.RoomGenerator` loads like real weights:
  ``python -m segsynth.testing build-tiny DIR [--preset tiny|sd15]``.
- :func:`make_review_task`: a small review task over generated photos and two models' masks;
  :class:`AppServer` and :data:`CHROMIUM_ARGS` run the app for a headless Chromium.
- :func:`failing_train_loop`: the training worker loop with a one-time failure injected at a
  step, for the recovery tests of ``segsynth train`` (lives here so Ray workers can import it).
- :func:`tiny_chain_overrides`: per-step overrides that shrink the demo kit's chain
  (``configs/demo``) to seconds per step, for tests that run the whole chain.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from segsynth.rooms.prompts import PLACEHOLDERS, RoomPromptConfig

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- tiny pipeline
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte as a printable unicode character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_tiny_tokenizer(folder: str | Path, words: Sequence[str] = ()) -> int:
    """Write a CLIP BPE ``vocab.json`` + ``merges.txt`` into ``folder``; return the vocab size.

    The vocab holds the 256 byte-level characters (alone and word-final), BPE merges learnt on
    ``words`` (so the prompt bank's words are single tokens and prompts stay under 77 tokens)
    and the two CLIP special tokens, as in the real CLIP vocab.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for tok in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(tok, len(vocab))
    merges: list[str] = []
    if words:
        bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
        bpe.normalizer = normalizers.Lowercase()
        bpe.pre_tokenizer = pre_tokenizers.Sequence([  # CLIP's split, then byte-level characters
            pre_tokenizers.Split(Regex(r"[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False)])
        trainer = trainers.BpeTrainer(vocab_size=8192, min_frequency=1, show_progress=False, end_of_word_suffix="</w>",
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        bpe.train_from_iterator([" ".join(words)], trainer)
        learnt = json.loads(bpe.to_str())["model"]
        merges = [" ".join(m) if isinstance(m, list) else m for m in learnt["merges"]]
        for tok, _ in sorted(learnt["vocab"].items(), key=lambda kv: kv[1]):
            vocab.setdefault(tok, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return len(vocab)


def _bank_words() -> list[str]:
    cfg = RoomPromptConfig()
    text = " ".join([cfg.template, cfg.negative_prompt, *cfg.method_prompts]
                    + [v for field in PLACEHOLDERS.values() for v in getattr(cfg, field)])
    return "".join(c if c.isalpha() else " " for c in text.lower()).split()


# name -> (unet, vae, text encoder, sample size) keyword sets for random-weight pipelines
RANDOM_PRESETS: dict[str, dict[str, dict]] = {
    # a few MB; 64 px images in well under a second per step on CPU
    "tiny": dict(
        unet=dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=8),
        vae=dict(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                 down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2),
        text=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                  projection_dim=32, max_position_embeddings=77),
    ),
    # Stable Diffusion 1.5 sizes (UNet 860M parameters), random weights: for GPU throughput figures
    "sd15": dict(
        unet=dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, sample_size=64, in_channels=4,
                  out_channels=4, cross_attention_dim=768, attention_head_dim=8,
                  down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
        vae=dict(block_out_channels=(128, 256, 512, 512), in_channels=3, out_channels=3, latent_channels=4,
                 layers_per_block=2, sample_size=512,
                 down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4),
        text=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                  projection_dim=768, max_position_embeddings=77, hidden_act="quick_gelu"),
    ),
}


def build_random_pipeline(folder: str | Path, preset: str = "tiny", seed: int = 0, dtype: str = "float32") -> str:
    """Write a Stable Diffusion pipeline with random weights to ``folder`` (``save_pretrained``).

    ``preset``: a key of :data:`RANDOM_PRESETS` (``tiny`` for tests, ``sd15`` for full-size
    throughput). The tokenizer is written from a local vocab (:func:`write_tiny_tokenizer`) and
    checked to be a real BPE vocab. Nothing is downloaded. Returns the folder, which
    :class:`RoomGenerator` loads like real weights.
    """
    if preset not in RANDOM_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(RANDOM_PRESETS)}")
    import tempfile

    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    spec = RANDOM_PRESETS[preset]
    with tempfile.TemporaryDirectory() as tmp:
        n_vocab = write_tiny_tokenizer(tmp, _bank_words())
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
    # transformers 5 silently builds a 3-token tokenizer from missing files: refuse that here.
    if len(tokenizer) != n_vocab:
        raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens, expected {n_vocab}: vocab.json/merges.txt not read")
    torch.manual_seed(seed)
    text_cfg = CLIPTextConfig(vocab_size=max(n_vocab, 1000), bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **spec["text"])
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**spec["vae"]),
        text_encoder=CLIPTextModel(text_cfg),
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**spec["unet"]),
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    if dtype != "float32":
        pipe = pipe.to(dtype=getattr(torch, dtype))
    pipe.save_pretrained(str(folder))
    return str(folder)


def build_tiny_pipeline(folder: str | Path, seed: int = 0) -> str:
    """A tiny random-weight Stable Diffusion pipeline folder (a few MB), for tests and demos of the
    plumbing: load it with ``RoomGenerator(model=folder, size=64, steps=2, ...)``."""
    return build_random_pipeline(folder, "tiny", seed=seed)


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m segsynth.testing build-tiny DIR [--preset tiny|sd15]``: write a random-weight pipeline."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m segsynth.testing", description=_main.__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-tiny", help="write a random-weight Stable Diffusion pipeline folder (no download)")
    b.add_argument("folder")
    b.add_argument("--preset", default="tiny", choices=list(RANDOM_PRESETS))
    b.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    log.info("wrote %s", build_random_pipeline(args.folder, args.preset, seed=args.seed))
    return 0


# --------------------------------------------------------------------------- review tasks
def make_review_inputs(root: Path, n: int = 5, corrupt: bool = True) -> dict:
    """``n`` random photos in ``root/images`` (plus a corrupt one, and its mask, when ``corrupt``),
    ``root/categories.csv``, and the masks of two 'models': ``good`` (an ellipse) and ``fat`` (the
    same, dilated). Returns the paths."""
    import cv2
    import numpy as np

    from segsynth import io

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    good, fat = root / "good", root / "fat"
    good.mkdir()
    fat.mkdir()
    for i in range(n):
        h, w = 60 + 10 * i, 90
        img = rng.integers(0, 255, (h, w, 3), np.uint8)
        mask = np.zeros((h, w), np.uint8)
        cv2.ellipse(mask, (45, h // 2), (20 + i, 15), 0, 0, 360, 255, -1)
        (root / "images" / f"p{i}.jpg").write_bytes(io.encode_jpeg(img))
        (good / f"p{i}.png").write_bytes(io.encode_png(mask))
        (fat / f"p{i}.png").write_bytes(io.encode_png(cv2.dilate(mask, np.ones((9, 9), np.uint8))))
    if corrupt:
        (root / "images" / "broken.jpg").write_bytes(b"not a jpeg")
        (good / "broken.png").write_bytes(io.encode_png(np.zeros((5, 5), np.uint8)))
    (root / "categories.csv").write_text("stem,category\np0,chair\np1,lamp\n")
    return {"images": str(root), "good": str(good), "fat": str(fat)}


def make_review_task(tmp_path: Path, kind: str = "pick", k: int = 1, **extra):
    """A review task of ``kind`` in ``tmp_path/task`` over :func:`make_review_inputs`; returns its Store."""
    from segsynth.config import load_config
    from segsynth.review.build import create
    from segsynth.review.config import ReviewConfig
    from segsynth.review.store import Store

    src = make_review_inputs(tmp_path / "in")
    cands = {"pick": f"[{{name: good, path: {src['good']}}}, {{name: fat, path: {src['fat']}}}]",
             "compare": f"[{{name: good, path: {src['good']}, version: v1}}, {{name: fat, path: {src['fat']}}}]",
             "accept": f"[{{name: good, path: {src['good']}}}]"}[kind]
    overrides = [f"kind={kind}", f"images={src['images']}", f"out={tmp_path / 'task'}", f"annotators_per_item={k}",
                 f"candidates={cands}"] + [f"{a}={b}" for a, b in extra.items()]
    create(load_config(ReviewConfig, None, overrides))
    return Store(tmp_path / "task")


# --------------------------------------------------------------------------- failure injection
class _FailOnceSession:
    """A worker session whose rank 0 raises once, on the first report at or after ``at_step``
    (a marker file in the run folder remembers it, so the restarted attempt gets past it)."""

    def __init__(self, session, at_step: int, marker: str):
        self._session, self._at_step, self._marker = session, at_step, marker

    def __getattr__(self, name: str):
        return getattr(self._session, name)

    def report(self, metrics: dict, folder: str | None = None, name: str | None = None) -> None:
        from segsynth import io

        if self._session.rank == 0 and metrics.get("step", -1) >= self._at_step and not io.exists(self._marker):
            io.write_bytes(self._marker, b"")
            raise RuntimeError(f"injected failure: rank 0 fails at step {metrics['step']} (at_step={self._at_step})")
        self._session.report(metrics, folder, name)


def failing_train_loop(config: dict, at_step: int = 1) -> None:
    """A Ray Train worker loop like ``segsynth train``'s whose rank 0 fails once at ``at_step``:
    ``run(cfg, worker_loop=functools.partial(failing_train_loop, at_step=3))``."""
    from segsynth import io
    from segsynth.train.job import RaySession
    from segsynth.train.loop import train_loop

    cfg = config["cfg"]
    marker = io.join(cfg.out, cfg.name, f".injected-failure-at-{at_step}")
    train_loop(cfg, config["steps_per_epoch"], _FailOnceSession(RaySession(), at_step, marker))



# --------------------------------------------------------------------------- the review app in a browser
CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright drives it, nothing is downloaded
# as root, headless, and without the background traffic a closed network refuses
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")


class AppServer:
    """An ASGI app on uvicorn in a thread, on 127.0.0.1 and a free port: ``with AppServer(app) as url``."""

    def __init__(self, app):
        import socket

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        import threading

        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        import time

        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the app did not start on 127.0.0.1:{self.port}")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


if __name__ == "__main__":
    raise SystemExit(_main())


def tiny_chain_overrides(photos: int = 12) -> dict[str, list[str]]:
    """The demo kit's configs shrunk to seconds per step: ``photos`` catalog photos, 2 samples each
    at 64 px, 2 training steps of a tiny random model, 2 eval items."""
    return {
        "cutouts": ["workers=1", "sources=[{kind: catalog, path: demo_kit/catalog, categories_csv: "
                    f"demo_kit/catalog/products.csv, category_column: type, limit: {photos}}}]"],
        "synth": ["workers=1", "samples_per_cutout=2", "size=64", "shard_size=8", "contact_sheet=0", "val_fraction=0.3"],
        "train": ["encoder_name=tu-mobilenetv3_small_050", "encoder_weights=null", "decoder_pyramid_channels=64",
                  "decoder_segmentation_channels=32", "size=64", "batch_size=4", "epochs=1", "max_steps_per_epoch=2",
                  "num_workers=1", "warmup_steps=1", "checkpoint_every_steps=2", "shuffle_pool=8", "val_fraction=0.3"],
        "eval": ["limit=2", "gallery_size=1"],
    }
