"""Rooms without Ray: prompt bank determinism, the quality gate, the tiny pipeline's tokenizer,
the generator in-process, and the offline error message."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from segsynth import io
from segsynth.config import ConfigError, load_config
from segsynth.rooms.generator import RoomModelError, resolve_model
from segsynth.rooms.prompts import (METHOD_PROMPTS, RoomPromptConfig, dedupe, hamming, is_blank, make_prompt, make_prompts,
                                    phash)

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- prompt bank
def test_prompts_are_a_function_of_seed_and_index():
    cfg = RoomPromptConfig()
    a = make_prompts(cfg, 50, seed=3)
    assert a == make_prompts(cfg, 50, seed=3)
    assert a[20:30] == make_prompts(cfg, 10, seed=3, start=20)  # any slice regenerates alone
    assert make_prompt(cfg, 3, 42) == a[42]
    assert [p.index for p in a] == list(range(50))
    b = make_prompts(cfg, 50, seed=4)
    assert sum(x.prompt == y.prompt for x, y in zip(a, b)) < 10
    assert len({p.seed for p in a}) == 50 and all(0 <= p.seed < 2**31 for p in a)


def test_prompt_bank_variety_method_prompts_and_negative():
    cfg = RoomPromptConfig()
    prompts = make_prompts(cfg, 300, seed=0)
    texts = [p.prompt for p in prompts]
    assert len(set(texts)) > 250
    for room in ("living room", "bedroom", "kitchen", "office", "hallway", "garden terrace"):
        assert any(f" {room}," in t for t in texts), room
    n_method = sum(t in METHOD_PROMPTS for t in texts)
    assert 10 < n_method < 60  # method_prompt_fraction 0.1 of 300
    assert "completely empty" in METHOD_PROMPTS[0]
    for word in ("furniture", "people", "text"):
        assert word in prompts[0].negative_prompt
    only_method = make_prompts(RoomPromptConfig(method_prompt_fraction=1.0), 5, seed=0)
    assert all(p.prompt in METHOD_PROMPTS for p in only_method)
    none = make_prompts(RoomPromptConfig(method_prompt_fraction=0.0), 100, seed=0)
    assert not any(p.prompt in METHOD_PROMPTS for p in none)


def test_prompt_config_errors_name_the_fix():
    from segsynth.rooms.config import RoomsConfig

    with pytest.raises(ConfigError, match=r"unknown placeholder \{sofa\}.*\{room\}"):
        load_config(RoomsConfig, None, ["prompts.template=a {sofa} in a {room}"])
    with pytest.raises(ConfigError, match="prompts.room_types is empty"):
        load_config(RoomsConfig, None, ["prompts.room_types=[]"])
    with pytest.raises(ConfigError, match="multiple of 8"):
        load_config(RoomsConfig, None, ["size=100"])
    with pytest.raises(ConfigError, match="num_gpus > 0"):
        load_config(RoomsConfig, None, ["device=cuda", "num_gpus=0"])
    cfg = load_config(RoomsConfig, None, ["prompts.room_types=[cellar]", "prompts.method_prompt_fraction=0"])
    assert all(", " in p.prompt and " cellar," in p.prompt for p in make_prompts(cfg.prompts, 5, 0))


@pytest.mark.parametrize("name", ["rooms.yaml", "demo/rooms.yaml"])
def test_shipped_configs_load(name):
    from segsynth.rooms.config import RoomsConfig

    cfg = load_config(RoomsConfig, REPO / "configs" / name)
    assert cfg.size % 8 == 0 and cfg.count >= 1


def test_one_default_diffusion_model():
    """The config class's default is the model the shipped production configs run."""
    from segsynth.rooms.config import DEFAULT_MODEL, RoomsConfig
    from segsynth.synth.config import SynthConfig

    assert RoomsConfig().model == DEFAULT_MODEL == SynthConfig().rooms.model
    assert load_config(RoomsConfig, REPO / "configs" / "rooms.yaml").model == DEFAULT_MODEL
    assert load_config(SynthConfig, REPO / "configs" / "synth.yaml").rooms.model == DEFAULT_MODEL


# ----------------------------------------------------------------------------- quality gate
def _room(seed: int, size: int = 64) -> np.ndarray:
    """A structured synthetic picture: gradient walls, a floor band, a bright window."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.float32)
    img += np.linspace(60, 200, size)[:, None, None] * rng.uniform(0.5, 1.0, 3)
    y0 = int(rng.integers(size // 2, 3 * size // 4))
    img[y0:] = rng.uniform(40, 160, 3)
    x, w = int(rng.integers(0, size // 2)), int(rng.integers(size // 8, size // 3))
    img[size // 8:size // 8 + w, x:x + w] = 250
    return np.clip(img, 0, 255).astype(np.uint8)


def test_is_blank_black_uniform_and_real():
    assert is_blank(np.zeros((64, 64, 3), np.uint8))                      # safety-checker blank
    assert is_blank(np.full((64, 64, 3), 128, np.uint8))                  # uniform grey
    noisy = np.clip(128 + np.random.default_rng(0).normal(0, 1.5, (64, 64, 3)), 0, 255).astype(np.uint8)
    assert is_blank(noisy)                                                # near-uniform
    assert is_blank(np.full((64, 64, 3), 5, np.uint8) + np.eye(64, dtype=np.uint8)[..., None] * 3)  # near black
    assert not is_blank(_room(0))
    assert not is_blank(_room(1) // 4 + 12)                              # a dim room is not blank


def test_phash_near_duplicates_are_close_and_different_rooms_far():
    a = _room(0, 128)
    h = phash(a)
    assert isinstance(h, int) and 0 <= h < 2**64 and h == phash(a.copy())
    recoded = io.decode_image(io.encode_jpeg(a, quality=60))
    resized = cv2.resize(cv2.resize(a, (96, 96)), (128, 128))
    brighter = np.clip(a.astype(np.int16) + 8, 0, 255).astype(np.uint8)
    for near in (recoded, resized, brighter):
        assert hamming(h, phash(near)) <= 4
    far = [hamming(h, phash(_room(s, 128))) for s in range(1, 8)]
    assert min(far) > 4  # dedupe_max_distance default: different rooms are kept


def test_dedupe_keeps_first_and_counts_seen():
    assert dedupe([0b0, 0b1, 0xFF00, 0xFF01, 0b0], max_distance=2) == [True, False, True, False, False]
    assert dedupe([0b0, 0b111], max_distance=2) == [True, True]
    assert dedupe([0b0, 0b111], max_distance=0) == [True, True]
    assert dedupe([5, 2**63 + 5], max_distance=0, seen=[5]) == [False, True]
    assert dedupe([], 4) == []


# ----------------------------------------------------------------------------- model source
def test_offline_hub_id_fails_at_once_with_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RoomModelError) as e:
        resolve_model("segsynth-tests/no-such-diffusion-model")
    msg = str(e.value)
    assert "offline" in msg and "hf download segsynth-tests/no-such-diffusion-model" in msg
    assert "model=/models/no-such-diffusion-model" in msg and "model_index.json" in msg


def test_local_model_folder_errors(tmp_path):
    with pytest.raises(RoomModelError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(RoomModelError, match="no model_index.json"):
        resolve_model(str(tmp_path))


# ----------------------------------------------------------------------------- tiny pipeline
@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> str:
    from segsynth.testing import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"))


def test_tiny_pipeline_tokenizer_is_the_written_vocab(tiny_sd):
    from transformers import CLIPTokenizer

    folder = Path(tiny_sd)
    assert resolve_model(str(folder)) == str(folder.absolute())
    vocab = json.loads((folder / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    tok = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    # transformers 5 quietly makes a 3-token tokenizer when the files are not read: check the size
    assert len(tok) == len(vocab) > 512
    ids = tok(make_prompt(RoomPromptConfig(), 0, 0).prompt).input_ids
    assert len(ids) < 77 and tok.unk_token_id not in ids[1:-1]
    text_cfg = json.loads((folder / "text_encoder" / "config.json").read_text())
    assert text_cfg["vocab_size"] >= len(tok)


def test_generator_rows_are_deterministic_and_batch_independent(tiny_sd):
    from segsynth.rooms.generator import RoomGenerator

    prompts = make_prompts(RoomPromptConfig(), 2, seed=1)
    batch = {"prompt": np.array([p.prompt for p in prompts], dtype=object),
             "negative_prompt": np.array([p.negative_prompt for p in prompts], dtype=object),
             "seed": np.array([p.seed for p in prompts]), "index": np.array([p.index for p in prompts])}
    gen = RoomGenerator(tiny_sd, size=64, steps=2, guidance=7.5, device="cpu", dtype="auto", batch_size=2, run_seed=1)
    out = gen(batch)
    assert set(out) >= {"bg_id", "image", "width", "height", "prompt", "negative_prompt", "seed", "model", "phash", "blank"}
    assert list(out["bg_id"]) == ["sd-1-000000", "sd-1-000001"]
    assert list(out["seed"]) == [p.seed for p in prompts] and list(out["model"]) == [tiny_sd] * 2
    images = [io.decode_image(b) for b in out["image"]]
    assert all(im.shape == (64, 64, 3) for im in images)
    assert list(out["width"]) == [64] * 2 and out["phash"].dtype == np.uint64 and out["blank"].dtype == bool
    one = RoomGenerator.__new__(RoomGenerator)  # same pipeline, one prompt per diffusion call
    one.__dict__.update(gen.__dict__, batch_size=1)
    again = one.generate(list(batch["prompt"]), list(batch["negative_prompt"]), list(batch["seed"]))
    ref = gen.generate(list(batch["prompt"]), list(batch["negative_prompt"]), list(batch["seed"]))
    assert np.abs(again.astype(int) - ref.astype(int)).max() <= 2  # noise is per image, not per batch
    assert np.abs(ref[0].astype(int) - ref[1].astype(int)).mean() > 5


def test_cli_reports_an_offline_hub_id_without_starting_ray(monkeypatch, capsys, tmp_path):
    from segsynth.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["rooms", "model=segsynth-tests/no-such-diffusion-model", "count=2", f"out={tmp_path / 'rooms'}"]) == 2
    err = capsys.readouterr().err
    assert "hf download segsynth-tests/no-such-diffusion-model" in err and "Traceback" not in err
