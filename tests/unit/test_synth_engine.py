"""make_sample invariants: inside the frame, deterministic, shadows and distractors are background,
occluders and text leave the mask, noise made at the output size, mixture proportions."""
from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from segsynth.synth import BG_KINDS, META_KEYS, Background, CompositeConfig, Cutout, load_backgrounds, make_sample
from segsynth.synth import backgrounds as bg_module
from segsynth.synth import engine
from segsynth.synth.layers import fit_size

SIZE = 64
# everything in front of the product off: the mask is the product's alpha alone
PLAIN = dict(occluder_prob=0.0, text_prob=0.0)


def box_cutout(cid="prod/1", h=30, w=20, color=(0, 0, 255), category="chair") -> Cutout:
    """An opaque rectangle, with garbage colour under a transparent border (as real cutouts have)."""
    rgba = np.zeros((h + 4, w + 4, 4), np.uint8)
    rgba[:, :, :3] = 255  # a white backdrop left under alpha 0
    rgba[2:-2, 2:-2, :3] = color
    rgba[2:-2, 2:-2, 3] = 255
    return Cutout(cid, category, rgba)


def blob_cutout(cid, color, seed) -> Cutout:
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(15, 40, 2))
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[:, :, :3] = color
    alpha = np.zeros((h, w), np.uint8)
    cv2.ellipse(alpha, ((w / 2, h / 2), (w - 1, h - 1), 0), 255, -1, cv2.LINE_AA)
    rgba[:, :, 3] = alpha
    return Cutout(cid, "plant", rgba)


@pytest.fixture(scope="module")
def rooms():
    rng = np.random.default_rng(1)
    return [Background(f"room{i}", cv2.GaussianBlur(rng.integers(0, 256, (80, 120, 3), dtype=np.uint8), (0, 0), 3))
            for i in range(3)]


@pytest.fixture(scope="module")
def others():
    return [blob_cutout(f"other/{i}", (255, 0, 0), i) for i in range(4)]


def frame_border(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])


def test_shapes_dtypes_and_uniform_scalar_meta(rooms, others):
    cfg = CompositeConfig(occluder_prob=0.5, text_prob=0.5)
    kinds = set()
    for k in range(80):
        s = make_sample(box_cutout(), k, seed=0, size=SIZE, cfg=cfg, backgrounds=rooms, distractors=others)
        assert s.image.shape == (SIZE, SIZE, 3) and s.image.dtype == np.uint8
        assert s.mask.shape == (SIZE, SIZE) and s.mask.dtype == np.uint8
        assert tuple(s.meta) == META_KEYS
        assert all(isinstance(v, (str, int, float, bool)) for v in s.meta.values()), s.meta
        kinds.add(s.meta["bg_kind"])
    assert kinds == set(BG_KINDS)


@pytest.mark.parametrize("blend", ["none", "feathered", "motion"])
def test_product_entirely_inside_the_frame(blend, rooms):
    # scale up to the whole frame: the engine must shrink the product to fit margin and blur
    cfg = CompositeConfig(**PLAIN, scale_min=0.7, scale_max=1.0, placement_jitter=0.5, placement_margin=0.02,
                          blend_weights={blend: 1.0}, blend_motion_max_px=6.0)
    cut = box_cutout(h=30, w=20)
    for k in range(30):
        s = make_sample(cut, k, seed=3, size=SIZE, cfg=cfg, backgrounds=rooms)
        assert not frame_border(s.mask).any(), f"k={k}: mask touches the border ({s.meta})"
        if blend == "none":  # the opaque box is all there: its full area, at the sampled scale
            h, w = fit_size(34, 24, s.meta["scale"] * SIZE)  # the layer: the box + its 2 px transparent frame
            ys, xs = np.nonzero(s.mask > 127)
            assert ys.max() - ys.min() + 1 == pytest.approx(h * 30 / 34, abs=2)
            assert xs.max() - xs.min() + 1 == pytest.approx(w * 20 / 24, abs=2)


def test_same_keys_same_bytes_whatever_the_order(rooms, others):
    cfg = CompositeConfig(occluder_prob=0.5, text_prob=0.5)
    a, b = box_cutout("prod/a"), box_cutout("prod/b", color=(0, 200, 0))
    keys = [(c, k) for c in (a, b) for k in range(6)]

    def make(key):
        s = make_sample(key[0], key[1], seed=7, size=SIZE, cfg=cfg, backgrounds=rooms, distractors=others)
        return s.image.tobytes(), s.mask.tobytes(), s.meta

    forward = [make(key) for key in keys]
    backward = [make(key) for key in reversed(keys)][::-1]
    with ThreadPoolExecutor(3) as pool:  # workers in any order, interleaved
        threaded = list(pool.map(make, keys))
    assert forward == backward == threaded
    assert len({f[0] for f in forward}) == len(keys)  # and k (or the cutout) changes the sample
    other_seed = make_sample(a, 0, seed=8, size=SIZE, cfg=cfg, backgrounds=rooms, distractors=others)
    assert other_seed.image.tobytes() != forward[0][0]


def test_shadows_are_background():
    # pure-white backdrop, a blue opaque box: anything darker and grey is shadow
    base = dict(**PLAIN, bg_weights={"white": 1.0}, bg_white_min=255, bg_white_gradient_max=0.0,
                blend_weights={"none": 1.0}, shadow_opacity_min=0.5, shadow_opacity_max=0.8)
    with_shadow = CompositeConfig(**base, shadow_prob=1.0)
    without = CompositeConfig(**base, shadow_prob=0.0)
    cut = box_cutout(color=(0, 0, 255))
    shadowed = 0
    for k in range(30):
        s = make_sample(cut, k, seed=1, size=SIZE, cfg=with_shadow)
        plain = make_sample(cut, k, seed=1, size=SIZE, cfg=without)
        assert np.array_equal(s.mask, plain.mask)  # the shadow never changes the mask
        img = s.image.astype(int)
        grey = (np.abs(img[:, :, 0] - img[:, :, 1]) < 8) & (np.abs(img[:, :, 1] - img[:, :, 2]) < 8)
        shadow = grey & (img.max(axis=2) < 245)  # darker than the backdrop and not blue
        assert (s.mask[shadow] <= 12).all()  # at most the faint outer edge of the product over it
        shadowed += shadow.sum() > 10
        assert s.meta["shadow_type"] in ("shape", "ellipse") and plain.meta["shadow_type"] == "none"
    assert shadowed >= 20


def test_distractors_are_background_and_may_be_cut_by_the_border(rooms, others):
    grey_room = [Background("grey", np.full((50, 50, 3), 128, np.uint8))]
    scene = CompositeConfig(**PLAIN, bg_weights={"scene": 1.0}, shadow_prob=0.0, distractor_count_min=2,
                            distractor_count_max=4, distractor_scale_min=0.3, distractor_scale_max=0.6)
    room_only = CompositeConfig(**PLAIN, bg_weights={"room": 1.0}, shadow_prob=0.0)
    cut = box_cutout(color=(0, 0, 255))
    red_on_border = cut_count = 0
    for k in range(40):
        s = make_sample(cut, k, seed=2, size=SIZE, cfg=scene, backgrounds=grey_room, distractors=others)
        r = make_sample(cut, k, seed=2, size=SIZE, cfg=room_only, backgrounds=grey_room, distractors=others)
        assert s.meta["bg_kind"] == "scene" and 2 <= s.meta["distractor_count"] <= 4
        assert np.array_equal(s.mask, r.mask)  # distractors never enter the mask
        red = (s.image[:, :, 0] > 200) & (s.image[:, :, 2] < 50)
        assert (s.mask[red] < 64).all()  # a red pixel is at most an edge of the product over it
        red_on_border += frame_border(red).any()
        cut_count += s.meta["distractor_cut"]
    assert red_on_border >= 5 and cut_count >= 5


def test_the_product_is_never_its_own_distractor(rooms, caplog):
    cut = box_cutout("prod/self")
    cfg = CompositeConfig(**PLAIN, bg_weights={"scene": 1.0})
    engine._warned.clear()
    with caplog.at_level(logging.WARNING, logger="segsynth.synth.engine"):
        metas = [make_sample(cut, k, seed=0, size=SIZE, cfg=cfg, backgrounds=rooms, distractors=[cut]).meta
                 for k in range(5)]
    assert all(m["bg_kind"] == "room" and m["bg_fallback"] and m["distractor_count"] == 0 for m in metas)
    assert sum("no distractor cutouts" in r.message for r in caplog.records) == 1  # logged once


def test_room_kinds_fall_back_without_backgrounds(others, caplog):
    cfg = CompositeConfig(**PLAIN)  # default mixture: room and scene weigh 0.55
    engine._warned.clear()
    with caplog.at_level(logging.WARNING, logger="segsynth.synth.engine"):
        metas = [make_sample(box_cutout(), k, seed=0, size=32, cfg=cfg, distractors=others).meta for k in range(80)]
    kinds = Counter(m["bg_kind"] for m in metas)
    assert set(kinds) == {"white", "solid", "noise", "floor_wall"}
    assert any(m["bg_fallback"] for m in metas) and all(m["bg_id"] == "" for m in metas)
    assert sum("no backgrounds were given" in r.message for r in caplog.records) == 1
    only_rooms = CompositeConfig(**PLAIN, bg_weights={"room": 1.0})
    assert make_sample(box_cutout(), 0, seed=0, size=32, cfg=only_rooms).meta["bg_kind"] == "white"


@pytest.mark.parametrize("what", ["occluder", "text"])
def test_occluders_and_text_are_cut_out_of_the_mask(what, rooms, others):
    on = CompositeConfig(**{**PLAIN, f"{what}_prob": 1.0}, text_height_min=0.08, text_height_max=0.12)
    off = CompositeConfig(**PLAIN, text_height_min=0.08, text_height_max=0.12)
    cut = box_cutout(h=30, w=30)
    reduced = 0
    for k in range(20):
        s = make_sample(cut, k, seed=4, size=96, cfg=on, backgrounds=rooms, distractors=others)
        ref = make_sample(cut, k, seed=4, size=96, cfg=off, backgrounds=rooms, distractors=others)
        assert s.meta[what] is True and ref.meta[what] is False
        assert (s.mask <= ref.mask).all()  # only ever removes
        covered = s.mask < ref.mask
        assert not np.array_equal(s.image[covered], ref.image[covered]) or not covered.any()
        assert s.meta["visible_fraction"] == pytest.approx(s.mask.sum() / ref.mask.sum(), abs=1e-6)
        reduced += s.meta["visible_fraction"] < 0.995
    assert reduced >= 12
    if what == "text":
        assert s.meta["text_label"] and any(u in s.meta["text_label"] for u in ("cm", " m", "in"))


def test_noise_is_made_at_the_output_size(monkeypatch):
    shapes = []
    real = bg_module.noise_field

    def spy(rng, shape):
        shapes.append(shape)
        return real(rng, shape)

    def no_resize(*args, **kwargs):
        raise AssertionError("noise backgrounds must not be resized")

    monkeypatch.setattr(bg_module, "noise_field", spy)
    monkeypatch.setattr(bg_module, "resize", no_resize)
    size = 80
    fine = CompositeConfig(**PLAIN, bg_weights={"noise": 1.0}, bg_noise_blur_min_px=0.0, bg_noise_blur_max_px=0.0,
                           bg_noise_amp_min=40.0, bg_noise_amp_max=40.0, scale_min=0.2, scale_max=0.3)
    for k in range(6):
        s = make_sample(box_cutout(), k, seed=5, size=size, cfg=fine)
        assert s.meta["bg_kind"] == "noise" and s.meta["bg_noise_sigma"] == 0.0
        assert shapes[-1][:2] == (size, size)
        # pixel-level grain: neighbouring background pixels differ about sqrt(2) * 40 (std)
        bgr = s.image.astype(np.float32)
        diff = (bgr[:, 1:] - bgr[:, :-1])[(s.mask[:, 1:] == 0) & (s.mask[:, :-1] == 0)]
        assert diff.std() > 35
    # a blurred noise is still made at the output size, and only blurred there
    coarse = CompositeConfig(**PLAIN, bg_weights={"noise": 1.0}, bg_noise_blur_min_px=2.0, bg_noise_blur_max_px=2.0)
    s = make_sample(box_cutout(), 0, seed=5, size=size, cfg=coarse)
    assert shapes[-1][:2] == (size, size) and s.meta["bg_noise_sigma"] == 2.0


def test_mixture_proportions(rooms, others):
    cfg = CompositeConfig(**PLAIN)
    n = 600
    metas = [make_sample(box_cutout(), k, seed=11, size=32, cfg=cfg, backgrounds=rooms, distractors=others).meta
             for k in range(n)]

    def check(key, weights, tol=0.065):  # ~3.5 sigma at n=600
        counts = Counter(m[key] for m in metas)
        total = sum(weights.values())
        for name, w in weights.items():
            assert counts[name] / n == pytest.approx(w / total, abs=tol), (key, name, counts)

    check("bg_kind", cfg.bg_weights)
    check("placement", cfg.placement_weights)
    check("blend", cfg.blend_weights)
    with_shadow = sum(m["shadow_type"] != "none" for m in metas) / n
    assert with_shadow == pytest.approx(cfg.shadow_prob, abs=0.065)
    scales = np.array([m["scale"] for m in metas])
    assert scales.min() >= cfg.scale_min - 1 / 32 and scales.max() <= cfg.scale_max + 1 / 32  # whole pixels


def test_golden_placement_lands_on_golden_points():
    cfg = CompositeConfig(**PLAIN, placement_weights={"golden": 1.0}, placement_jitter=0.0, scale_min=0.2,
                          scale_max=0.3, blend_weights={"none": 1.0})
    for k in range(10):
        m = make_sample(box_cutout(), k, seed=0, size=100, cfg=cfg).meta
        assert min(abs(m["pos_x"] - g) for g in (0.382, 0.618)) < 0.015
        assert min(abs(m["pos_y"] - g) for g in (0.382, 0.618)) < 0.015


def test_no_white_fringe_from_the_transparent_border():
    # the cutout hides white under alpha 0: premultiplied resizing keeps it out of the edge
    cfg = CompositeConfig(**PLAIN, bg_weights={"solid": 1.0}, shadow_prob=0.0, blend_weights={"none": 1.0},
                          scale_min=0.9, scale_max=0.9)
    s = make_sample(box_cutout(h=9, w=7, color=(0, 0, 0)), 0, seed=0, size=SIZE, cfg=cfg)
    edge = (s.mask > 20) & (s.mask < 235)
    bg = s.image[0, 0].astype(int)
    # an edge pixel is a mix of black product and background: never brighter than the background
    assert (s.image[edge].astype(int) <= bg + 2).all()


def test_bad_cutout_is_a_clear_error():
    bad = Cutout("x", "chair", np.zeros((5, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="cutout x: rgba must be"):
        make_sample(bad, 0, seed=0, size=SIZE, cfg=CompositeConfig())


def test_real_cutouts_on_real_rooms(shared_data):
    from segsynth import io

    files = io.list_files(shared_data / "cutouts" / "office_rgba", [".png"])[:6]
    cutouts = [Cutout(f"office/{io.stem(f)}", "office", io.read_rgba(f)) for f in files]
    rooms, _ = load_backgrounds([str(shared_data / "backgrounds" / "empty_rooms_small")], max_side=160)
    cfg = CompositeConfig(occluder_prob=0.3, text_prob=0.3)
    for i, c in enumerate(cutouts):
        s = make_sample(c, i, seed=0, size=128, cfg=cfg, backgrounds=rooms[:10], distractors=cutouts)
        assert not frame_border(s.mask).any()
        assert s.mask.max() > 200 and 0.01 < (s.mask > 127).mean() < 0.9


# -- procedural floors and walls

@pytest.mark.parametrize("floor", ["wood", "tiles", "carpet"])
def test_floor_wall_is_sharp_deterministic_and_varies_with_k(floor):
    from segsynth.synth.match import frame_blur_px

    cfg = CompositeConfig(**PLAIN, bg_weights={"floor_wall": 1.0}, bg_floor_weights={floor: 1.0}, match_prob=0.0,
                          scale_min=0.2, scale_max=0.3, shadow_prob=0.0)
    size = 160
    frames = []
    for k in range(6):
        s = make_sample(box_cutout(), k, seed=0, size=size, cfg=cfg)
        again = make_sample(box_cutout(), k, seed=0, size=size, cfg=cfg)
        assert s.meta["bg_kind"] == "floor_wall" and s.meta["bg_variant"] == floor and s.meta["bg_crop_px"] == 0
        assert np.array_equal(s.image, again.image)
        frames.append(s.image)
        # drawn at the output size: its edges are pixel-sharp, unlike a crop enlarged 2x
        sharp = frame_blur_px(s.image)
        assert sharp is not None and sharp < 0.6, (k, sharp)
        enlarged = cv2.resize(s.image[::2, ::2], (size, size), interpolation=cv2.INTER_LINEAR)
        assert frame_blur_px(enlarged) > max(1.5 * sharp, sharp + 0.15), k
    assert len({f.tobytes() for f in frames}) == len(frames)
    # not one flat colour: a wall over a floor, with texture
    assert all(f.reshape(-1, 3).std(0).max() > 3 for f in frames)


def test_floor_meets_wall_at_the_drawn_height():
    from segsynth.rng import rng_for
    from segsynth.synth.floor_wall import floor_wall

    size = 200
    for top in (0.35, 0.7):
        cfg = CompositeConfig(bg_floor_top_min=top, bg_floor_top_max=top, bg_floor_baseboard_prob=0.0)
        for k in range(4):  # carpet: no seams or grout running across the rows
            img = floor_wall(rng_for("fw", k), size, cfg, "carpet").astype(np.float32)
            rows = img.mean(axis=1)  # (size, 3) mean colour of each row
            step = np.linalg.norm(np.diff(rows, axis=0), axis=1)  # the strongest change: wall to floor
            assert abs(int(step.argmax()) + 1 - top * size) <= 2, (top, k)


def test_floor_wall_lines_converge_in_perspective():
    """Tiles far away (near the wall) are smaller on screen than tiles near the camera."""
    from segsynth.rng import rng_for
    from segsynth.synth.floor_wall import floor_wall

    size = 240
    cfg = CompositeConfig(bg_floor_top_min=0.3, bg_floor_top_max=0.3, bg_floor_baseboard_prob=0.0)
    checked = 0
    for k in range(12):
        img = floor_wall(rng_for("tiles", k), size, cfg, "tiles").astype(np.float32).mean(axis=2)
        far, near = img[int(0.4 * size)], img[size - 3]
        def crossings(row):  # grout lines crossed along a row: sign changes around the row's median
            return int(np.count_nonzero(np.diff(np.sign(row - np.median(row)))))
        if crossings(near) >= 4:
            checked += 1
            assert crossings(far) > crossings(near), k
    assert checked >= 3


# -- room and scene crops keep the photo's sharpness

def _sharp_photo(h, w, seed=0):
    """A photo with pixel-sharp detail everywhere: random blocks of 1..4 px."""
    rng = np.random.default_rng(seed)
    return np.kron(rng.integers(0, 256, (h // 2, w // 2, 3), dtype=np.uint8), np.ones((2, 2, 1), np.uint8))


def test_room_crops_of_a_big_photo_are_not_enlarged():
    from segsynth.synth.match import frame_blur_px

    big = [Background("big", _edges_photo(640, 0.0)[:480])]
    size = 320
    sharp = CompositeConfig(**PLAIN, bg_weights={"room": 1.0}, bg_room_zoom_min=0.3, match_prob=0.0)
    old = CompositeConfig(**PLAIN, bg_weights={"room": 1.0}, bg_room_zoom_min=0.3, match_prob=0.0,
                          bg_room_max_upscale=100.0)
    crops, old_crops, blur, old_blur = [], [], [], []
    for k in range(20):
        s = make_sample(box_cutout(), k, seed=0, size=size, cfg=sharp, backgrounds=big)
        o = make_sample(box_cutout(), k, seed=0, size=size, cfg=old, backgrounds=big)
        crops.append(s.meta["bg_crop_px"])
        old_crops.append(o.meta["bg_crop_px"])
        blur.append(frame_blur_px(s.image))
        old_blur.append(frame_blur_px(o.image))
    assert min(crops) >= size and max(crops) <= 480
    assert min(old_crops) < 0.5 * 480  # the old zoom range: crops down to 0.3 of the shorter side
    assert max(blur) < 0.6 < max(old_blur)


def test_a_small_photo_is_still_used_and_enlarged():
    small = [Background("small", _sharp_photo(160, 160))]
    cfg = CompositeConfig(**PLAIN, bg_weights={"room": 1.0}, bg_room_zoom_min=0.5, match_prob=0.0)
    metas = [make_sample(box_cutout(), k, seed=0, size=320, cfg=cfg, backgrounds=small).meta for k in range(10)]
    assert all(m["bg_kind"] == "room" and m["bg_id"] == "small" and not m["bg_fallback"] for m in metas)
    crops = [m["bg_crop_px"] for m in metas]
    assert min(crops) >= 80 and max(crops) <= 160 and len(set(crops)) > 3  # the zoom range as before


def test_bad_upscale_and_floor_knobs_are_config_errors():
    from segsynth.config import ConfigError

    with pytest.raises(ConfigError, match="bg_room_max_upscale"):
        CompositeConfig(bg_room_max_upscale=0.0)
    with pytest.raises(ConfigError, match="bg_floor_top"):
        CompositeConfig(bg_floor_top_min=0.9, bg_floor_top_max=0.99)
    with pytest.raises(ConfigError, match="bg_floor_weights: unknown option 'marble'"):
        CompositeConfig(bg_floor_weights={"marble": 1.0})
    with pytest.raises(ConfigError, match="match_prob"):
        CompositeConfig(match_prob=1.2)
    with pytest.raises(ConfigError, match="match_noise_std_min"):
        CompositeConfig(match_noise_std_min=5.0, match_noise_std_max=2.0)


# -- scenes: furnished room photos

def test_scene_kind_draws_furnished_photos_and_room_kind_empty_ones(rooms, others):
    scenes = [Background(f"scene{i}", _sharp_photo(100, 140, seed=i)) for i in range(3)]
    scene = CompositeConfig(**PLAIN, bg_weights={"scene": 1.0}, distractor_count_min=1)
    room = CompositeConfig(**PLAIN, bg_weights={"room": 1.0})
    for k in range(10):
        s = make_sample(box_cutout(), k, seed=0, size=SIZE, cfg=scene, backgrounds=rooms, distractors=others,
                        scenes=scenes)
        assert s.meta["bg_kind"] == "scene" and s.meta["bg_id"].startswith("scene") and s.meta["distractor_count"] >= 1
        r = make_sample(box_cutout(), k, seed=0, size=SIZE, cfg=room, backgrounds=rooms, distractors=others,
                        scenes=scenes)
        assert r.meta["bg_kind"] == "room" and r.meta["bg_id"].startswith("room")
        # furnished photos need no distractors, and no empty rooms either
        alone = make_sample(box_cutout(), k, seed=0, size=SIZE, cfg=scene, scenes=scenes)
        assert alone.meta["bg_kind"] == "scene" and not alone.meta["bg_fallback"]
        assert alone.meta["distractor_count"] == 0 and alone.meta["distractor_ids"] == ""
    # without furnished photos, a scene is a room with distractors, as before
    s = make_sample(box_cutout(), 0, seed=0, size=SIZE, cfg=scene, backgrounds=rooms, distractors=others)
    assert s.meta["bg_kind"] == "scene" and s.meta["bg_id"].startswith("room")


def test_distractor_ids_name_the_products_pasted(rooms):
    from segsynth.split import product_key

    pool = [blob_cutout(f"src/{i:03d}.55@teacher", (255, 0, 0), i) for i in range(5)]
    keys = {product_key(c.cutout_id) for c in pool}
    cfg = CompositeConfig(**{**PLAIN, "occluder_prob": 1.0}, bg_weights={"scene": 1.0}, distractor_count_min=1,
                          distractor_count_max=3)
    occluded_by_cutout = 0
    for k in range(20):
        m = make_sample(box_cutout(), k, seed=0, size=SIZE, cfg=cfg, backgrounds=rooms, distractors=pool).meta
        ids = m["distractor_ids"].split("|")
        assert set(ids) <= keys and len(ids) == len(set(ids))
        assert len(ids) >= min(1, m["distractor_count"]) and len(ids) <= m["distractor_count"] + 1
        occluded_by_cutout += m["occluder_kind"] == "cutout"
    assert occluded_by_cutout >= 3
    plain = make_sample(box_cutout(), 0, seed=0, size=SIZE, cfg=CompositeConfig(**PLAIN, bg_weights={"white": 1.0}),
                        distractors=pool)
    assert plain.meta["distractor_ids"] == ""


# -- one camera: sharpness and noise matched

def _edges_photo(size, blur):
    """Sharp black/white blocks of 16 px, optionally blurred: a room photo with clear edges."""
    rng = np.random.default_rng(3)
    img = np.kron(rng.integers(0, 2, (size // 16, size // 16), dtype=np.uint8) * 200 + 30, np.ones((16, 16), np.uint8))
    img = cv2.merge([img, img, img])
    return cv2.GaussianBlur(img, (0, 0), blur) if blur else img


def test_match_blurs_the_product_and_its_mask_on_a_blurry_background():
    from segsynth.synth.match import edge_blur_px

    base = dict(**PLAIN, bg_weights={"room": 1.0}, blend_weights={"none": 1.0}, shadow_prob=0.0,
                match_noise_std_min=0.0, match_noise_std_max=0.0, scale_min=0.5, scale_max=0.6)
    on, off = CompositeConfig(**base, match_prob=1.0), CompositeConfig(**base, match_prob=0.0)
    blurry = [Background("blurry", _edges_photo(256, 2.0))]
    sharp = [Background("sharp", _edges_photo(256, 0.0))]
    cut = box_cutout(h=60, w=40)
    for k in range(5):
        m = make_sample(cut, k, seed=0, size=128, cfg=on, backgrounds=blurry)
        ref = make_sample(cut, k, seed=0, size=128, cfg=off, backgrounds=blurry)
        assert m.meta["match"] and not ref.meta["match"]
        # a 2 px blur of a 256 px photo, in a crop of 128..256 px reduced to 128 px: 1..2 px
        assert 0.9 < m.meta["match_bg_blur_px"] < 2.1
        assert 0.7 < m.meta["match_blur_px"] <= m.meta["match_bg_blur_px"]
        # the mask follows the blurred product: soft edges, the same area
        soft = ((m.mask > 10) & (m.mask < 245)).sum()
        assert soft > 2 * ((ref.mask > 10) & (ref.mask < 245)).sum()
        assert int(m.mask.sum()) == pytest.approx(int(ref.mask.sum()), rel=0.02)
        assert edge_blur_px(m.mask.astype(np.float32)) == pytest.approx(m.meta["match_bg_blur_px"], abs=0.35)
        # a sharp background: nothing to match, the product stays as it is
        s = make_sample(cut, k, seed=0, size=128, cfg=on, backgrounds=sharp)
        assert s.meta["match_blur_px"] == 0.0
        assert np.array_equal(s.mask, make_sample(cut, k, seed=0, size=128, cfg=off, backgrounds=sharp).mask)


def test_match_blurs_distractors_too(others):
    blurry = [Background("blurry", _edges_photo(256, 2.0))]
    base = dict(**PLAIN, bg_weights={"scene": 1.0}, shadow_prob=0.0, match_noise_std_min=0.0,
                match_noise_std_max=0.0, distractor_count_min=3, distractor_count_max=3, scale_min=0.1, scale_max=0.1)
    on, off = CompositeConfig(**base, match_prob=1.0), CompositeConfig(**base, match_prob=0.0)
    m = make_sample(box_cutout(), 0, seed=0, size=128, cfg=on, backgrounds=blurry, distractors=others)
    ref = make_sample(box_cutout(), 0, seed=0, size=128, cfg=off, backgrounds=blurry, distractors=others)
    assert m.meta["match_blur_px"] > 0.7 and m.meta["distractor_ids"] == ref.meta["distractor_ids"] != ""
    away = (m.mask == 0) & (ref.mask == 0)  # the product (placed with room for its blur) left out

    def red(img):  # how red: the red distractors over the grey blocks
        return (img[:, :, 0].astype(int) - img[:, :, 2]) * away
    # blurred red blobs: fewer fully red pixels, more partly red ones
    assert (red(m.image) > 150).sum() < (red(ref.image) > 150).sum()
    def partly_red(img):
        return ((red(img) > 20) & (red(img) < 150)).sum()
    assert partly_red(m.image) > 1.5 * partly_red(ref.image)


def test_match_noise_is_over_the_whole_frame_and_leaves_the_mask():
    base = dict(**PLAIN, bg_weights={"solid": 1.0}, shadow_prob=0.0)
    on = CompositeConfig(**base, match_prob=1.0, match_noise_std_min=5.0, match_noise_std_max=5.0)
    off = CompositeConfig(**base, match_prob=0.0)
    cut = box_cutout(color=(120, 120, 120))
    stds = []
    for k in range(4):
        m = make_sample(cut, k, seed=0, size=96, cfg=on)
        ref = make_sample(cut, k, seed=0, size=96, cfg=off)
        assert m.meta["match_noise_std"] == 5.0 and m.meta["match_blur_px"] == 0.0  # a flat backdrop: no blur
        assert np.array_equal(m.mask, ref.mask)
        diff = m.image.astype(np.float32) - ref.image
        inside, outside = diff[m.mask == 255], diff[m.mask == 0]
        unclipped = (ref.image[m.mask == 0] > 20).all(1) & (ref.image[m.mask == 0] < 235).all(1)
        assert inside.std() == pytest.approx(5.0, abs=0.5)  # the product has the grain...
        if unclipped.mean() > 0.5:
            stds.append(outside[unclipped].std())  # ...and so has the background
        assert abs(inside.mean()) < 0.3
    assert stds and all(s == pytest.approx(5.0, abs=0.5) for s in stds)
