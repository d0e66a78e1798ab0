"""ShardWriter outside Ray: held-out products never furnish a training sample; the scene-photo share."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from segsynth import io
from segsynth.config import ConfigError, load_config, save_config
from segsynth.synth.config import SAMPLE_KEYS, SynthConfig
from segsynth.synth.shards import ShardWriter, check_existing_config
from segsynth.split import in_share, is_validation, product_key
from segsynth.synth import Background, CompositeConfig, split_scenes


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, ellipse_rgba):
    """24 chair products (a few also as a teacher variant), a room folder and a scene folder."""
    root = tmp_path_factory.mktemp("writer")
    rng = np.random.default_rng(0)
    ids = [f"catalog/{i:03d}.460.78" for i in range(24)] + [f"catalog/{i:03d}.460.78@teacher" for i in range(0, 24, 5)]
    rows = []
    for i, cid in enumerate(ids):
        rgba = ellipse_rgba(20 + i % 7, 16 + i % 5, tuple(int(v) for v in rng.integers(0, 256, 3)))
        rows.append({"cutout_id": cid, "category": "chair", "source": f"{i}.jpg", "source_kind": "rgba",
                     "width": rgba.shape[1], "height": rgba.shape[0], "quality": 1.0, "rgba": io.encode_png(rgba)})
    io.write_parquet(rows, str(root / "cutouts" / "manifest.parquet"))
    for folder, n in (("rooms", 2), ("scenes", 12)):
        (root / folder).mkdir()
        for i in range(n):
            img = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
            (root / folder / f"{folder}{i:02d}.jpg").write_bytes(io.encode_jpeg(img))
    return root, sorted(ids)


def _cfg(root, **kw) -> SynthConfig:
    composite = CompositeConfig(bg_weights={"scene": 1.0}, distractor_count_min=3, distractor_count_max=4,
                                occluder_prob=0.5, text_prob=0.0, match_prob=0.0)
    base = dict(cutouts=str(root / "cutouts"), backgrounds=[str(root / "rooms")], out=str(root / "out"), size=48,
                samples_per_cutout=4, composite=composite)
    return SynthConfig(**{**base, **kw})


def test_training_samples_never_show_validation_products(inputs):
    root, ids = inputs
    val_fraction = 0.3
    held_out = {product_key(c) for c in ids if is_validation(c, val_fraction)}
    assert held_out and len(held_out) < len({product_key(c) for c in ids})  # both sides have products
    writer = ShardWriter(_cfg(root, val_fraction=val_fraction))
    inputs = writer.shard_inputs(0, ids)
    assert len(inputs.train_distractors) < len(inputs.distractors)
    ks = [k for _ in ids for k in range(4)]
    table, inputs = writer.make_shard([c for c in ids for _ in range(4)], ks)
    assert not inputs.corrupt
    seen_in_train, seen_in_val = set(), set()
    for row in table.to_pylist():
        keys = set(row["distractor_ids"].split("|")) - {""}
        assert row["distractor_count"] == 0 or keys
        if is_validation(row["cutout_id"], val_fraction):
            seen_in_val |= keys
        else:
            seen_in_train |= keys
    assert seen_in_train and not seen_in_train & held_out
    assert seen_in_val & held_out  # a validation product's own samples may use any distractor

    # with val_fraction=0 every product furnishes every sample, held-out ones included
    everything = ShardWriter(_cfg(root, val_fraction=0.0))
    inputs = everything.shard_inputs(0, ids)
    assert len(inputs.train_distractors) == len(inputs.distractors)
    table, _ = everything.make_shard([c for c in ids for _ in range(4)], ks)
    assert held_out & {k for r in table.column("distractor_ids").to_pylist() for k in r.split("|")}


def test_scene_share_is_a_stable_disjoint_subset():
    bgs = [Background(f"ikea/room-{i:03d}", np.zeros((2, 2, 3), np.uint8)) for i in range(400)]
    used, unseen = split_scenes(bgs, 0.5)
    names = lambda items: {b.bg_id for b in items}  # noqa: E731
    assert names(used).isdisjoint(names(unseen)) and names(used) | names(unseen) == names(bgs)
    assert 0.4 < len(used) / len(bgs) < 0.6
    assert names(split_scenes(list(reversed(bgs)), 0.5)[0]) == names(used)  # by bg_id, not by order
    assert names(split_scenes(bgs, 0.3)[0]) < names(used) < names(split_scenes(bgs, 0.8)[0])  # nested
    assert names(split_scenes(bgs, 1.0)[0]) == names(bgs) and not split_scenes(bgs, 0.0)[0]
    assert names(unseen) == {b.bg_id for b in bgs if not in_share(b.bg_id, 0.5, salt="scenes")}
    # its own salt: not the same half as another split of the same ids
    assert names(used) != {b.bg_id for b in bgs if in_share(b.bg_id, 0.5)}


def test_scene_photos_come_from_the_share_only(inputs):
    root, ids = inputs
    writer = ShardWriter(_cfg(root, scene_backgrounds=[str(root / "scenes")], scene_share=0.5))
    every = {f"scenes{i:02d}" for i in range(12)}
    used = set(writer.scene_ids)
    assert used and used < every and used == {b for b in every if in_share(b, 0.5, salt="scenes")}
    table, _ = writer.make_shard(ids[:6] * 4, [k for k in range(4) for _ in range(6)])
    bg_ids = set(table.column("bg_id").to_pylist())
    assert set(table.column("bg_kind").to_pylist()) == {"scene"} and bg_ids <= used and len(bg_ids) > 1
    rooms = ShardWriter(_cfg(root, scene_backgrounds=[str(root / "scenes")],
                             composite=CompositeConfig(bg_weights={"room": 1.0})))
    table, _ = rooms.make_shard(ids[:4], [0, 1, 2, 3])
    assert set(table.column("bg_id").to_pylist()) <= {"rooms00", "rooms01"}  # "room" keeps to `backgrounds`
    with pytest.raises(ValueError, match="scene_share=0.0 keeps none of the 12 photos"):
        ShardWriter(_cfg(root, scene_backgrounds=[str(root / "scenes")], scene_share=0.0))


@pytest.mark.parametrize("override, words", [
    ("scene_share=1.5", "scene_share"),
    ("val_fraction=1.0", "val_fraction"),
    ("val_fraction=-0.1", "val_fraction"),
])
def test_bad_split_settings_are_config_errors(override, words):
    with pytest.raises(ConfigError, match=words):
        load_config(SynthConfig, None, [override])


@pytest.mark.parametrize("change", [{"val_fraction": 0.2}, {"scene_share": 0.5}, {"scene_backgrounds": ["x"]}])
def test_resume_refuses_other_split_settings(tmp_path, change):
    assert {"val_fraction", "scene_share", "scene_backgrounds"} <= set(SAMPLE_KEYS)
    cfg = SynthConfig(out=str(tmp_path))
    save_config(cfg, cfg.out)
    check_existing_config(dataclasses.replace(cfg, workers=7))  # a pool size changes no sample
    with pytest.raises(ConfigError, match=next(iter(change))):
        check_existing_config(dataclasses.replace(cfg, **change))


def test_a_shard_holds_only_its_inputs_however_large_the_catalog(inputs):
    """Memory bounded by design: a shard reads its own products, ``distractors_per_shard``
    distractors and ``backgrounds_per_shard`` photos (kept near output size), drawn from
    ``(seed, shard)``: the same draw on every worker, another one for another shard."""
    root, ids = inputs
    cfg = _cfg(root, scene_backgrounds=[str(root / "scenes")], distractors_per_shard=5, backgrounds_per_shard=3,
               size=40, composite=CompositeConfig(bg_weights={"scene": 1.0}, bg_room_zoom_min=0.5))
    writer = ShardWriter(cfg)
    assert len(writer.distractor_ids) == len(ids) and len(writer.scene_ids) == 12  # indexed, not loaded
    first = writer.shard_inputs(0, ids[:3])
    assert sorted(first.cutouts) == sorted(ids[:3])
    assert len(first.distractors) == 5 and len(first.scenes) == 3 and len(first.backgrounds) == 2
    assert all(min(b.rgb.shape[:2]) <= 80 for b in first.scenes + first.backgrounds)  # 40 px / zoom 0.5
    again = ShardWriter(cfg).shard_inputs(0, ids[3:6])
    assert [d.cutout_id for d in again.distractors] == [d.cutout_id for d in first.distractors]
    assert [b.bg_id for b in again.scenes] == [b.bg_id for b in first.scenes]
    other = [writer.shard_inputs(s, ids[:1]) for s in range(1, 6)]
    assert any([d.cutout_id for d in o.distractors] != [d.cutout_id for d in first.distractors] for o in other)
    table, inputs_ = writer.make_shard(ids[:3] * 2, [0, 0, 0, 1, 1, 1], shard=0)
    used = {k for r in table.column("distractor_ids").to_pylist() for k in r.split("|")} - {""}
    assert used and used <= {product_key(d.cutout_id) for d in first.distractors}  # listed by product
    assert set(table.column("bg_id").to_pylist()) <= {b.bg_id for b in first.scenes}


def test_a_shard_of_corrupt_cutouts_is_done_without_a_columnless_file(tmp_path, ellipse_rgba):
    from segsynth.synth.shards import SHARD_DIR, pending_shards, plan_shards, write_contact_sheet

    good = io.encode_png(ellipse_rgba(20, 16, (200, 40, 40)))
    rows = [{"cutout_id": cid, "category": "chair", "rgba": data}
            for cid, data in (("a/bad", b"not a png"), ("b/good", good))]
    io.write_parquet(rows, str(tmp_path / "cutouts" / "manifest.parquet"))
    cfg = SynthConfig(cutouts=str(tmp_path / "cutouts"), out=str(tmp_path / "out"), size=40, samples_per_cutout=2,
                      shard_size=2, contact_sheet=4)
    shards = plan_shards(cfg)
    assert [s["cutout_ids"] for s in shards] == [["a/bad", "a/bad"], ["b/good", "b/good"]]
    writer = ShardWriter(cfg)
    out = writer({"shard": [0, 1], "cutout_ids": [s["cutout_ids"] for s in shards], "ks": [s["ks"] for s in shards]})
    assert list(out["samples"]) == [0, 2] and "a/bad" in out["corrupt"][0]
    files = sorted(p.name for p in (tmp_path / "out" / SHARD_DIR).iterdir())
    assert files == ["shard-00000.empty", "shard-00001.parquet"]
    assert pending_shards(cfg, shards) == []  # the corrupt shard is done: a rerun does not retry it
    assert io.read_parquet(str(tmp_path / "out" / SHARD_DIR)).num_rows == 2  # the folder reads as one table
    assert write_contact_sheet(cfg)


def test_a_shard_that_draws_the_same_inputs_reuses_them(inputs, monkeypatch):
    """A catalog within the per-shard counts: every shard draws all of it, read once per worker."""
    root, ids = inputs
    writer = ShardWriter(_cfg(root, scene_backgrounds=[str(root / "scenes")]))
    reads = []
    real = writer.pool.load
    monkeypatch.setattr(writer.pool, "load", lambda i, **kw: reads.append(list(i)) or real(i, **kw))
    first, second = writer.shard_inputs(0, ids[:2]), writer.shard_inputs(1, ids[2:4])
    pool_reads = [r for r in reads if r == writer.distractor_ids]  # the products are read from the same store
    assert len(pool_reads) == 1 and second.distractors == first.distractors and second.scenes == first.scenes
    small = ShardWriter(_cfg(root, distractors_per_shard=3))
    reads.clear()
    monkeypatch.setattr(small.pool, "load", lambda i, **kw: reads.append(list(i)) or real(i, **kw))
    small.shard_inputs(0, ids[:1]), small.shard_inputs(1, ids[:1])
    draws = [r for r in reads if len(r) == 3]
    assert len(draws) == 2 and draws[0] != draws[1]  # other draws: read again, nothing else kept
