"""The command line's errors: a user mistake is one line naming the input and the fix, exit 2,
no traceback, and nothing starts (no Ray); override values are taken whole."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from segsynth import io
from segsynth.cli import main
from segsynth.config import ConfigError, load_config, parse_value


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_missing_config_file(capsys, tmp_path):
    code, err = _run(capsys, "synth", "--config", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "nope.yaml does not exist" in _one_line(err) and "--config" in err


def test_yaml_syntax_error_in_a_config_file_names_file_and_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("size: 64\nseed: [1, 2\nout: x\n")
    code, err = _run(capsys, "synth", "--config", str(bad))
    line = _one_line(err)
    assert code == 2 and "bad.yaml" in line and "not valid YAML" in line and "line 3" in line


def test_yaml_syntax_error_in_an_override(capsys):
    code, err = _run(capsys, "synth", "backgrounds=[a, b")
    line = _one_line(err)
    assert code == 2 and "backgrounds=[a, b" in line and "quote" in line


def test_missing_input_folder_names_the_key(capsys, tmp_path):
    code, err = _run(capsys, "synth", f"cutouts={tmp_path / 'no-cutouts'}", f"out={tmp_path / 'out'}")
    line = _one_line(err)
    assert code == 2 and line.startswith("segsynth synth: error: cutouts:") and "does not exist" in line
    assert not (tmp_path / "out").exists()  # failed before doing anything


def test_missing_model(capsys, tmp_path):
    code, err = _run(capsys, "eval", f"data={tmp_path}", f"out={tmp_path / 'out'}",
                     f"models=[{{name: m, kind: checkpoint, path: {tmp_path / 'no-model'}}}]")
    line = _one_line(err)
    assert code == 2 and "models[0].path (m)" in line and "no-model does not exist" in line


def test_bad_uri(capsys, tmp_path):
    code, err = _run(capsys, "synth", "cutouts=nosuchscheme://bucket/cutouts", f"out={tmp_path / 'out'}")
    line = _one_line(err)
    assert code == 2 and "nosuchscheme://bucket/cutouts is not a URI segsynth can open" in line


def test_unwritable_output(capsys, repo):
    code, err = _run(capsys, "synth", f"cutouts={repo / 'demo_kit'}", "out=/proc/segsynth-out")
    line = _one_line(err)
    assert code == 2 and "out: cannot write to /proc/segsynth-out" in line and "out=outputs/" in line


def test_unreadable_folder(tmp_path, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode))
    with pytest.raises(io.InputError, match="data: .* cannot be read"):
        io.require_input(str(tmp_path), "data", "folder")
    with pytest.raises(io.InputError, match="is a folder, not a file"):
        io.require_input(str(tmp_path.parent), "preferences", "file")


def test_port_in_use(capsys, tmp_path):
    (tmp_path / "model").mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        code, err = _run(capsys, "serve", f"model={tmp_path / 'model'}", f"port={port}")
    line = _one_line(err)
    assert code == 2 and f"port: 127.0.0.1:{port} cannot be used" in line and f"port={port + 1}" in line


def test_no_traceback_on_the_terminal_and_no_ray_started(tmp_path):
    """The same in a fresh process: stderr is one line, and Ray never started."""
    env = {**os.environ, "RAY_ADDRESS": ""}
    code = ("import sys; from segsynth.cli import main; rc = main(sys.argv[1:]); "
            "assert 'ray' not in sys.modules or not sys.modules['ray'].is_initialized(); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, "train", f"data=[{{path: {tmp_path / 'none'}}}]", f"out={tmp_path}/o"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "data[0].path" in r.stderr, r.stderr


# ---------------------------------------------------------------- values taken whole
def test_override_values_are_taken_whole():
    from segsynth.train.config import TrainConfig

    cfg = load_config(TrainConfig, None, ["data=[{path: x}]", "name=run #2", "out=outputs/a#b"])
    assert cfg.name == "run #2" and cfg.out == "outputs/a#b"
    assert parse_value("[a, 'b #c']", "k") == ["a", "b #c"]
    with pytest.raises(ConfigError, match="as a comment"):
        parse_value("[a, b] # the rest", "k")
    assert parse_value("3", "k") == 3 and parse_value("true", "k") is True and parse_value("null", "k") is None


@pytest.mark.parametrize("value,reading", [("2024-01-01", "a date"), ("12", "a number"), ("1.5", "a number")])
def test_a_date_or_number_where_a_path_belongs_gets_a_quoting_hint(value, reading):
    from segsynth.synth.config import SynthConfig

    with pytest.raises(ConfigError, match=f"out: expected a string .* YAML reads as {reading}; quote it"):
        load_config(SynthConfig, None, [f"out={value}"])
    assert load_config(SynthConfig, None, [f"out='{value}'"]).out == value


def test_a_date_in_a_config_file_gets_the_hint_too(tmp_path):
    from segsynth.synth.config import SynthConfig

    (tmp_path / "c.yaml").write_text("out: 2024-01-01\n")
    with pytest.raises(ConfigError, match="YAML reads as a date; quote it"):
        load_config(SynthConfig, tmp_path / "c.yaml")


def test_the_console_script_passes_everything_on_before_it_exits(tmp_path):
    """`segsynth` (cli.entry) routes fd 2 through a filter for Ray's native lines; what was
    written just before exit still reaches the terminal, every time."""
    for _ in range(3):
        r = subprocess.run([sys.executable, "-m", "segsynth.cli", "synth", f"cutouts={tmp_path / 'nope'}"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and f"cutouts: {tmp_path / 'nope'} does not exist" in r.stderr, r.stderr


def test_active_commands_name_what_is_missing(capsys, tmp_path):
    code, err = _run(capsys, "active", "select", f"out={tmp_path / 'act'}")
    assert code == 2 and "run `segsynth active score` first" in _one_line(err)
    code, err = _run(capsys, "active", "score", f"out={tmp_path / 'act'}", f"pool=[{{path: {tmp_path / 'nope'}}}]",
                     "model={name: m, kind: white-threshold}")
    assert code == 2 and "pool (nope).path" in _one_line(err)
    code, err = _run(capsys, "active", "score", f"out={tmp_path / 'act'}", "model={name: m, kind: white-threshold}")
    assert code == 2 and "pool: no sources" in _one_line(err)
    code, err = _run(capsys, "active", "score", f"out={tmp_path / 'act'}", f"pool=[{{path: {tmp_path}}}]")
    assert code == 2 and "model: give the current model" in _one_line(err)
    assert not (tmp_path / "act" / "round-1").exists()
