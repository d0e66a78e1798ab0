"""Empty rooms from Stable Diffusion: the prompt bank, the generator and the quality gate.

The method's best backgrounds were empty rooms generated with Stable Diffusion; this module
makes that reproducible at scale:

- **Prompt bank** (:class:`RoomPromptConfig`, :func:`make_prompt`, :func:`make_prompts`): a
  template filled from lists of room types, styles, wall and floor materials, windows, light,
  time of day and camera angle, plus the method's own prompts verbatim. Prompt ``i`` of a run
  depends on ``(seed, i)`` only (:func:`segsynth.rng.rng_for`), so any slice of a run can be
  regenerated on any machine.
- **Generator** (:class:`RoomGenerator`): a ``map_batches`` callable class that loads a diffusers
  text-to-image pipeline once (``__init__``) and turns batches of prompts into JPEG rows
  (``__call__``). The model is a local folder (what ``pipeline.save_pretrained`` writes, or a
  hub snapshot) or, where the hub is reachable, a hub id; see :func:`resolve_model`.
- **Quality gate** (:func:`is_blank`, :func:`phash`, :func:`dedupe`): black or near-uniform
  images (e.g. the safety checker's blanks) and near duplicates are dropped and counted.

Everything heavy (torch, diffusers, transformers) is imported inside functions, so the prompt
bank and the gate import with numpy and OpenCV only. :func:`build_tiny_pipeline` writes a tiny
random-weight pipeline folder for tests, benchmarks and the synth integration test.
"""
from __future__ import annotations

import json
import logging
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from segsynth.config import ConfigError
from segsynth.rng import rng_for

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- prompt bank
# The method's own prompt, verbatim: the best backgrounds of the original work came from it.
METHOD_PROMPTS: tuple[str, ...] = (
    "The room was completely empty, with no furniture or decorations to speak of. "
    "The bare walls and floor gave the room a stark and desolate feeling.",
)

DEFAULT_NEGATIVE_PROMPT = (
    "furniture, sofa, couch, chair, table, desk, bed, shelf, cabinet, wardrobe, lamp, rug, carpet, "
    "plant, decoration, painting, picture frame, curtains, clutter, objects, people, person, "
    "text, letters, watermark, logo, signature, lowres, blurry, cartoon, illustration"
)

# Kept short on purpose: CLIP reads 77 tokens, and the end of a longer prompt is dropped.
DEFAULT_TEMPLATE = (
    "{camera} photo of an empty {style} {room}, {walls}, {floor}, {window}, {light}, {time}, "
    "no furniture, bare walls and floor"
)

# placeholder in the template -> field of RoomPromptConfig that lists its values
PLACEHOLDERS: dict[str, str] = {
    "room": "room_types",
    "style": "styles",
    "walls": "wall_materials",
    "floor": "floor_materials",
    "window": "windows",
    "light": "lighting",
    "time": "times_of_day",
    "camera": "camera_angles",
}


@dataclass(frozen=True)
class RoomPromptConfig:
    """The prompt bank: a template and the lists its placeholders are drawn from.

    ``method_prompt_fraction`` of the prompts are taken verbatim from ``method_prompts``; the rest
    fill ``template`` (placeholders: ``{room} {style} {walls} {floor} {window} {light} {time}
    {camera}``) with one value of each list, drawn uniformly.
    """

    template: str = DEFAULT_TEMPLATE
    room_types: tuple[str, ...] = (
        "living room", "bedroom", "kitchen", "office", "hallway", "garden terrace", "dining room",
        "studio apartment", "loft", "attic room", "bathroom", "entrance hall", "conference room",
        "shop interior", "sunroom",
    )
    styles: tuple[str, ...] = (
        "modern", "minimalist", "scandinavian", "industrial", "classic", "rustic", "mid-century",
        "mediterranean", "japanese", "art deco", "contemporary", "farmhouse",
    )
    wall_materials: tuple[str, ...] = (
        "white painted walls", "light grey plaster walls", "beige walls", "exposed brick walls",
        "concrete walls", "wood panelled walls", "pastel green walls", "warm off-white walls",
        "tiled walls", "limewash walls",
    )
    floor_materials: tuple[str, ...] = (
        "oak parquet floor", "light wooden floor", "dark hardwood floor", "polished concrete floor",
        "white marble floor", "terracotta tiles", "grey stone tiles", "herringbone floor",
        "bare carpet floor", "checkered tile floor",
    )
    windows: tuple[str, ...] = (
        "large windows", "floor-to-ceiling windows", "a single small window", "no windows",
        "french doors", "a skylight", "arched windows", "windows with shutters",
    )
    lighting: tuple[str, ...] = (
        "soft natural light", "bright daylight", "warm lamp light", "diffuse overcast light",
        "sunbeams on the floor", "cool indirect light", "recessed ceiling lights",
    )
    times_of_day: tuple[str, ...] = ("morning", "midday", "afternoon", "golden hour", "evening", "night")
    camera_angles: tuple[str, ...] = (
        "wide-angle", "eye-level", "corner view", "low-angle", "straight-on", "slightly elevated",
    )
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    method_prompts: tuple[str, ...] = METHOD_PROMPTS
    method_prompt_fraction: float = 0.1

    def check_inputs(self) -> None:
        names = [name for _, name, _, _ in string.Formatter().parse(self.template) if name is not None]
        unknown = [n for n in names if n not in PLACEHOLDERS]
        if unknown:
            raise ConfigError(f"prompts.template: unknown placeholder {{{unknown[0]}}}; valid ones: "
                              + ", ".join("{" + p + "}" for p in PLACEHOLDERS))
        for name in sorted({PLACEHOLDERS[n] for n in names}):
            if not getattr(self, name):
                raise ConfigError(f"prompts.{name} is empty but the template uses it; give at least one value")
        if not 0.0 <= self.method_prompt_fraction <= 1.0:
            raise ConfigError(f"prompts.method_prompt_fraction must be in [0, 1], got {self.method_prompt_fraction}")
        if self.method_prompt_fraction > 0 and not self.method_prompts:
            raise ConfigError("prompts.method_prompts is empty but method_prompt_fraction > 0; "
                              "give prompts or set method_prompt_fraction: 0")


@dataclass(frozen=True)
class RoomPrompt:
    """One prompt of a run: ``index`` in the run, ``seed`` of its initial noise."""

    prompt: str
    negative_prompt: str
    seed: int
    index: int


def make_prompt(cfg: RoomPromptConfig, seed: int, index: int) -> RoomPrompt:
    """Prompt ``index`` of the run ``seed``: a function of ``(cfg, seed, index)`` only."""
    rng = rng_for("rooms", seed, index)
    if cfg.method_prompts and rng.random() < cfg.method_prompt_fraction:
        prompt = cfg.method_prompts[int(rng.integers(len(cfg.method_prompts)))]
    else:
        values = {}
        for placeholder, field in PLACEHOLDERS.items():  # fixed order: same draws everywhere
            options = getattr(cfg, field)
            values[placeholder] = options[int(rng.integers(len(options)))] if options else ""
        prompt = cfg.template.format(**values)
    image_seed = int(rng.integers(0, 2**31 - 1))  # torch.Generator.manual_seed takes any int; keep it portable
    return RoomPrompt(prompt=prompt, negative_prompt=cfg.negative_prompt, seed=image_seed, index=index)


def make_prompts(cfg: RoomPromptConfig, n: int, seed: int, start: int = 0) -> list[RoomPrompt]:
    """Prompts ``start .. start + n - 1`` of the run ``seed`` (deterministic, order-free)."""
    return [make_prompt(cfg, seed, i) for i in range(start, start + n)]


def bg_id_for(seed: int, index: int) -> str:
    """Stable id of background ``index`` of the run ``seed``, e.g. ``"sd-7-000042"``."""
    return f"sd-{seed}-{index:06d}"


# --------------------------------------------------------------------------- quality gate
def is_blank(rgb: np.ndarray, min_std: float = 4.0, black_level: float = 10.0) -> bool:
    """True for a black or near-uniform image (e.g. a safety-checker blank).

    ``rgb``: ``(H, W, 3) uint8``. Black: mean gray level below ``black_level`` (0..255).
    Near-uniform: standard deviation of the gray levels below ``min_std``.
    """
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return bool(gray.mean() < black_level or gray.std() < min_std)


def phash(rgb: np.ndarray) -> int:
    """64-bit perceptual hash (DCT of a 32x32 gray thumbnail, 8x8 low frequencies vs median).

    ``rgb``: ``(H, W, 3) uint8``. Near-identical images differ in a few bits; compare with
    :func:`hamming`. Returns an int in ``[0, 2**64)``.
    """
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])  # the DC term would dominate the median
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return int(a ^ b).bit_count()


def dedupe(hashes: Sequence[int], max_distance: int = 4, seen: Sequence[int] = ()) -> list[bool]:
    """Keep-flags for ``hashes`` in order: an item is dropped when its hash is within
    ``max_distance`` bits of an earlier kept item or of any hash in ``seen``.

    Deterministic for a given order. ``max_distance: 0`` drops exact hash repeats only.
    """
    kept = np.zeros(len(seen) + len(hashes), dtype=np.uint64)  # kept hashes, filled in order
    kept[:len(seen)] = [int(h) for h in seen]
    n = len(seen)
    keep: list[bool] = []
    for h in hashes:
        h = np.uint64(int(h))
        dup = n > 0 and int(np.bitwise_count(kept[:n] ^ h).min()) <= max_distance
        keep.append(not dup)
        if not dup:
            kept[n] = h
            n += 1
    return keep


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
        raise RoomModelError("model is empty; set model to a local pipeline folder or a hub id such as "
                             "stabilityai/stable-diffusion-2-1-base")
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
    """``python -m segsynth.rooms build-tiny DIR [--preset tiny|sd15]``: write a random-weight pipeline."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m segsynth.rooms", description=_main.__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-tiny", help="write a random-weight Stable Diffusion pipeline folder (no download)")
    b.add_argument("folder")
    b.add_argument("--preset", default="tiny", choices=list(RANDOM_PRESETS))
    b.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    log.info("wrote %s", build_random_pipeline(args.folder, args.preset, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
