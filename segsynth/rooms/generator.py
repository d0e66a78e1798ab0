"""The room generator: a diffusers text-to-image pipeline behind a ``map_batches`` callable.

:class:`RoomGenerator` loads the pipeline once (``__init__``) and turns batches of prompts
(:mod:`segsynth.rooms.prompts`) into JPEG rows with the quality gate's hash and blank flag
(``__call__``). The model is a local folder (what ``pipeline.save_pretrained`` writes, or a hub
snapshot) or, where the hub is reachable, a hub id; see :func:`resolve_model`. torch, diffusers
and transformers are imported inside functions.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from segsynth.config import ConfigError
from segsynth.rooms.config import DEFAULT_MODEL
from segsynth.rooms.prompts import bg_id_for, is_blank, phash

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- model source
class RoomModelError(ConfigError):
    """A diffusion model that cannot be found or loaded; the message says how to fix it.

    A :class:`ConfigError` (the ``model`` key is unusable), so ``segsynth rooms`` reports it
    in one line and exits with status 2."""


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set (to anything but 0/false/no/off)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off")


def _hub_message(model: str, reason: str = "the hub is offline (HF_HUB_OFFLINE=1) and no cached copy was found") -> str:
    return (f"model {model!r} is a Hugging Face hub id, but {reason}. On a machine with network access run `hf download {model} --local-dir /models/{model.split('/')[-1]}` "
            f"(or pipeline.save_pretrained(DIR)), copy that folder to every GPU node or to shared storage, and set "
            f"model=/models/{model.split('/')[-1]} (a folder with model_index.json)")


def resolve_model(model: str) -> str:
    """Check a model source before anything heavy starts; return what ``from_pretrained`` gets.

    - a local folder: must hold ``model_index.json`` (what ``save_pretrained`` or ``hf download``
      writes); returned as an absolute path;
    - a hub id (``org/name``): returned as is when the hub is reachable or a cached copy exists;
      offline without a cached copy, :class:`RoomModelError` at once, saying how to point
      ``model`` at a local copy. Nothing is downloaded here.
    """
    if not model:
        raise RoomModelError(f"model is empty; set model to a local pipeline folder or a hub id such as {DEFAULT_MODEL}")
    path = Path(model).expanduser()
    looks_local = model.startswith(("/", ".", "~")) or path.exists() or model.count("/") != 1
    if looks_local:
        if not path.is_dir():
            raise RoomModelError(f"model folder {model!r} does not exist; point model at a folder written by "
                                 f"pipeline.save_pretrained or `hf download ID --local-dir DIR`, or at a hub id (org/name)")
        if not (path / "model_index.json").is_file():
            raise RoomModelError(f"model folder {model!r} holds no model_index.json; it must be a whole diffusers "
                                 f"pipeline folder (pipeline.save_pretrained or `hf download ID --local-dir DIR`)")
        return str(path.absolute())
    if hub_offline():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "model_index.json")
        if not isinstance(cached, str):
            raise RoomModelError(_hub_message(model))
    return model


def resolve_device(device: str = "auto", dtype: str = "auto") -> tuple[str, Any]:
    """``("cuda"|"cpu", torch dtype)``: auto picks CUDA with float16 when there is a GPU, else
    CPU with float32 (the CPU fallback)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RoomModelError(f"device {device!r} asked for but torch sees no CUDA GPU; use device: auto or cpu")
    names = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16,
             "float32": torch.float32, "fp32": torch.float32}
    if dtype == "auto":
        return device, torch.float16 if device.startswith("cuda") else torch.float32
    if dtype not in names:
        raise RoomModelError(f"unknown dtype {dtype!r}; valid: auto, " + ", ".join(names))
    if device == "cpu" and names[dtype] == torch.float16:
        raise RoomModelError("dtype float16 on CPU is not supported by most diffusion ops; use dtype: auto or float32 on CPU")
    return device, names[dtype]


def load_pipeline(model: str, device: str = "auto", dtype: str = "auto"):
    """A diffusers text-to-image pipeline from a local folder or a hub id, on ``device``.

    Returns ``(pipeline, device, torch_dtype)``. Raises :class:`RoomModelError` with the fix.
    """
    try:
        from diffusers import DiffusionPipeline
    except ImportError as e:  # optional dependency
        raise RoomModelError(f"rooms need diffusers and transformers ({e}); install with: pip install 'segsynth[rooms]'") from None
    source = resolve_model(model)
    device, torch_dtype = resolve_device(device, dtype)
    try:
        pipe = DiffusionPipeline.from_pretrained(source, dtype=torch_dtype, local_files_only=hub_offline())
    except (OSError, ValueError) as e:
        if source == model and "/" in model and not Path(model).exists():
            raise RoomModelError(_hub_message(model, f"loading it failed ({e})")) from e
        raise RoomModelError(f"could not load the diffusion pipeline from {model!r}: {e}") from e
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, device, torch_dtype


# --------------------------------------------------------------------------- generator
class RoomGenerator:
    """Prompts -> empty-room images; a Ray Data ``map_batches`` callable class.

    The pipeline is loaded once in ``__init__`` (one per actor). ``__call__`` takes a batch of
    numpy arrays with columns ``prompt, negative_prompt, seed, index`` (``bg_id`` optional, else
    :func:`bg_id_for` with ``run_seed``) and returns, per input row, ``bg_id, image`` (JPEG bytes,
    RGB, ``size x size``) ``, width, height, prompt, negative_prompt, seed, model, index, phash``
    (uint64, :func:`phash`) and ``blank`` (bool, :func:`is_blank`). It filters nothing: the
    quality gate sits downstream so that drops are counted.

    ``batch_size``: prompts per diffusion call (the incoming batch is split into chunks of it).
    ``device`` ``auto|cuda|cpu``; ``dtype`` ``auto`` (float16 on GPU, float32 on CPU)``|float16|
    bfloat16|float32``.
    """

    def __init__(self, model: str, size: int = 512, steps: int = 30, guidance: float = 7.5,
                 device: str = "auto", dtype: str = "auto", batch_size: int = 4, *, run_seed: int = 0,
                 jpeg_quality: int = 92, blank_min_std: float = 4.0, blank_black_level: float = 10.0):
        if size % 8:
            raise ValueError(f"size must be a multiple of 8 for the VAE, got {size}; e.g. {size - size % 8}")
        self.model = model
        self.size, self.steps, self.guidance = size, steps, guidance
        self.batch_size = max(1, batch_size)
        self.run_seed = run_seed
        self.jpeg_quality = jpeg_quality
        self.blank_min_std, self.blank_black_level = blank_min_std, blank_black_level
        self.pipe, self.device, self.dtype = load_pipeline(model, device, dtype)
        log.info("room generator: %s on %s (%s), %d px, %d steps, batch %d", model, self.device,
                 str(self.dtype).replace("torch.", ""), size, steps, self.batch_size)

    def generate(self, prompts: Sequence[str], negative_prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        """``N`` prompts -> ``(N, size, size, 3) uint8`` RGB, one diffusion call per ``batch_size``.

        The initial noise of image ``i`` comes from a CPU ``torch.Generator`` seeded with
        ``seeds[i]``, so an image does not depend on its batch or on the device's RNG.
        """
        import torch

        out = []
        for start in range(0, len(prompts), self.batch_size):
            sl = slice(start, start + self.batch_size)
            gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[sl]]
            with torch.inference_mode():
                result = self.pipe(prompt=list(prompts[sl]), negative_prompt=list(negative_prompts[sl]),
                                   height=self.size, width=self.size, num_inference_steps=self.steps,
                                   guidance_scale=self.guidance, generator=gens, output_type="np")
            images = np.asarray(result.images, dtype=np.float32)
            out.append((np.clip(np.nan_to_num(images), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
        return np.concatenate(out) if out else np.zeros((0, self.size, self.size, 3), np.uint8)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        prompts = [str(p) for p in batch["prompt"]]
        negatives = [str(p) for p in batch.get("negative_prompt", [""] * len(prompts))]
        seeds = [int(s) for s in batch["seed"]]
        indices = [int(i) for i in batch["index"]]
        bg_ids = [str(b) for b in batch["bg_id"]] if "bg_id" in batch else [bg_id_for(self.run_seed, i) for i in indices]
        images = self.generate(prompts, negatives, seeds)
        jpegs, hashes, blanks = [], [], []
        from segsynth.io import encode_jpeg

        for rgb in images:
            jpegs.append(encode_jpeg(rgb, self.jpeg_quality))
            hashes.append(phash(rgb))
            blanks.append(is_blank(rgb, self.blank_min_std, self.blank_black_level))
        n = len(prompts)
        return {
            "bg_id": np.array(bg_ids, dtype=object),
            "image": np.array(jpegs, dtype=object),  # bytes as objects, not a fixed-width (padded) array
            "width": np.full(n, self.size, np.int32),
            "height": np.full(n, self.size, np.int32),
            "prompt": np.array(prompts, dtype=object),
            "negative_prompt": np.array(negatives, dtype=object),
            "seed": np.array(seeds, np.int64),
            "model": np.array([self.model] * n, dtype=object),
            "index": np.array(indices, np.int64),
            "phash": np.array(hashes, np.uint64),
            "blank": np.array(blanks, bool),
        }


