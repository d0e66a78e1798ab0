"""CompositeConfig: YAML round trip, validation at the boundary, numpy-only imports."""
from __future__ import annotations


import pytest

from segsynth.config import ConfigError, dump_config, load_config
from segsynth.synth import CompositeConfig
from segsynth.synth.config import SynthConfig


def test_defaults_are_valid_and_round_trip(tmp_path):
    cfg = CompositeConfig()
    path = tmp_path / "synth.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(CompositeConfig, path) == cfg


def test_yaml_and_overrides_fill_the_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("bg_weights: {white: 1, room: 2}\ndistractor_categories: [chair, lamp]\n")
    cfg = load_config(CompositeConfig, path, ["shadow_prob=0.25", "scale_min=0.3"])
    assert cfg.bg_weights == {"white": 1.0, "room": 2.0}
    assert cfg.distractor_categories == ["chair", "lamp"]
    assert cfg.shadow_prob == 0.25 and cfg.scale_min == 0.3


@pytest.mark.parametrize("kwargs, words", [
    ({"bg_weights": {"white": -1.0, "room": 1.0}}, "bg_weights.white"),
    ({"bg_weights": {"marble": 1.0}}, "valid options: white, solid, noise, floor_wall, room, scene"),
    ({"blend_weights": {"none": 0.0}}, "at least one weight"),
    ({"scale_min": 0.8, "scale_max": 0.5}, "scale_min (0.8) is greater than scale_max (0.5)"),
    ({"scale_max": 1.5}, "scale_max"),
    ({"shadow_prob": 1.5}, "shadow_prob"),
    ({"distractor_count_min": 5, "distractor_count_max": 2}, "distractor_count_min"),
    ({"shadow_opacity_max": 2.0}, "shadow_opacity_max"),
    ({"text_height_min": -0.1}, "text_height_min"),
])
def test_bad_values_are_config_errors_naming_the_knob(kwargs, words):
    with pytest.raises(ConfigError, match=None) as e:
        CompositeConfig(**kwargs)
    assert words in str(e.value)


def test_bad_yaml_value_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("shadow_weights: {shape: 1, ellipse: -2}\n")
    with pytest.raises(ConfigError, match="shadow_weights.ellipse"):
        load_config(CompositeConfig, path)


def test_workers_is_a_fixed_or_an_autoscaling_pool():
    assert load_config(SynthConfig, None, ["workers=3"]).worker_pool == {"size": 3}
    auto = load_config(SynthConfig, None, ["workers=[2, 16]"])
    assert auto.worker_pool == {"min_size": 2, "max_size": 16} and auto.max_workers == 16
    for bad in ("[4, 2]", "[0, 2]", "0", "[1, 2, 3]"):
        with pytest.raises(ConfigError, match="workers"):
            load_config(SynthConfig, None, [f"workers={bad}"])
