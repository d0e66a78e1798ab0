"""Stage configs: typed, frozen dataclasses; YAML defaults; dotted ``key=value`` overrides.

A config file is plain YAML whose keys are the dataclass fields (nested dataclasses are nested
mappings). Overrides on the command line use dotted keys (``shadow.opacity=0.3``); their values
are parsed as YAML (``true``, ``3``, ``[a, b]``) and taken whole: ``#`` starts no comment there
(``name=run #2`` is the string ``run #2``). An unknown key, a value of the wrong type or a YAML
syntax error is a :class:`ConfigError` that names the key (or the file and line) and the fix; a
date or number where a string (a path, a name) belongs gets a hint to quote it.

    cfg = load_config(SynthConfig, "configs/demo/synth.yaml", ["size=512", "seed=3"])
    save_config(cfg, out_dir)            # writes OUT/config.yaml, the resolved config
"""
from __future__ import annotations

import dataclasses
import datetime
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")

CONFIG_FILENAME = "config.yaml"


class ConfigError(ValueError):
    """A config file or override that does not fit the stage's config class."""


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to floats)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in get_args(tp):
            return None
        errors = []
        for arg in get_args(tp):
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{key}: expected one of {list(get_args(tp))}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, prefix=f"{key}.")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_coerce(k, kt, f"{key}.{k}"): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string (a path or a name), got {_yaml_reading(value)}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def _yaml_reading(value: Any) -> str:
    """How YAML read an unquoted value, with the hint to quote it when that was not meant."""
    kind = {datetime.date: "a date", datetime.datetime: "a date and time", bool: "true/false", int: "a number",
            float: "a number"}.get(type(value))
    if kind is None:
        return repr(value)
    text = value.isoformat() if isinstance(value, datetime.date) else str(value).lower()
    return f"{text}, which YAML reads as {kind}; quote it to keep it a string: '\"{text}\"'"


def parse_value(raw: str, key: str) -> Any:
    """An override's value: YAML (``3``, ``true``, ``[a, b]``, ``null``), taken whole.

    On the command line ``#`` starts no comment: a plain value holding one is that string. A
    YAML syntax error is a :class:`ConfigError` naming the key.
    """
    if raw == "":
        return ""
    flow = raw.lstrip()[:1] in ("[", "{", "'", '"')
    if "#" in raw and not flow:
        return raw  # YAML would cut " #..." as a comment and write the rest elsewhere
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"{key}={raw}: not valid YAML ({_yaml_problem(e)}); quote the value, e.g. {key}='\"{raw}\"'") from None
    if "#" in raw:  # anything after YAML's last token is a comment it dropped
        end = max((tok.end_mark.index for tok in yaml.scan(raw) if not isinstance(tok, yaml.StreamEndToken)), default=0)
        if raw[end:].strip():
            raise ConfigError(f"{key}={raw}: YAML reads {raw[end:].strip()!r} as a comment; quote the item holding '#'")
    return value


def _yaml_problem(e: Exception) -> str:
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def _build(cls: type[T], data: dict, prefix: str = "") -> T:
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s} for {cls.__name__}; valid keys: "
            + ", ".join(prefix + n for n in names)
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a required field without a default
        raise ConfigError(f"{cls.__name__}: {e}") from None
    check = getattr(obj, "check_inputs", None)
    if callable(check):
        check()
    return obj


def to_dict(cfg: Any) -> dict:
    """A config as plain YAML-able data (tuples become lists)."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(cfg)


def _set_dotted(data: dict, cls: type, dotted: str, raw: str) -> None:
    parts = dotted.split(".")
    node, node_cls = data, cls
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(node_cls)} if dataclasses.is_dataclass(node_cls) else None
        if fields is None or part not in fields:
            valid = ", ".join(fields) if fields else "(none: not a section)"
            raise ConfigError(f"unknown config key {dotted!r} for {cls.__name__}; valid keys here: {valid}")
        if i == len(parts) - 1:
            node[part] = parse_value(raw, dotted)
            return
        sub_cls = get_type_hints(node_cls)[part]
        if not dataclasses.is_dataclass(sub_cls):
            raise ConfigError(f"config key {'.'.join(parts[:i + 1])!r} is not a section; cannot set {dotted!r}")
        node = node.setdefault(part, {})
        node_cls = sub_cls


def parse_overrides(items: typing.Iterable[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. size=512 or shadow.opacity=0.3)")
        key, raw = item.split("=", 1)
        pairs.append((key.strip(), raw))
    return pairs


@dataclasses.dataclass(frozen=True)
class StorageConfig:
    """Where ``s3://`` paths live, for any stage: a ``storage:`` section in its YAML (or
    ``storage.endpoint_url=...`` on the command line). Each key sets the standard AWS variable
    that pyarrow's S3 filesystem reads, for this process and the Ray workers it starts, when the
    entry point that runs the config calls :func:`apply_storage`; a key
    left out keeps the variable as the environment has it. Keys never go in a YAML file: they
    stay in a credentials file (a mounted secret) named here, or in the environment. The section
    is not written into the resolved ``config.yaml`` beside outputs."""

    endpoint_url: typing.Optional[str] = None      # an S3-compatible store (MinIO, Ceph, R2...): AWS_ENDPOINT_URL
    region: typing.Optional[str] = None            # AWS_REGION
    profile: typing.Optional[str] = None           # AWS_PROFILE: a profile of the credentials file
    credentials_file: typing.Optional[str] = None  # AWS_SHARED_CREDENTIALS_FILE (the same path on every node)

    ENV = {"endpoint_url": "AWS_ENDPOINT_URL", "region": "AWS_REGION", "profile": "AWS_PROFILE",
           "credentials_file": "AWS_SHARED_CREDENTIALS_FILE"}

    def check_inputs(self) -> None:
        if self.credentials_file and not Path(self.credentials_file).expanduser().is_file():
            raise ConfigError(f"storage.credentials_file: {self.credentials_file} does not exist; give the path of an "
                              "AWS credentials file ([profile] with aws_access_key_id and aws_secret_access_key)")
        if self.endpoint_url and "://" not in self.endpoint_url:
            raise ConfigError(f"storage.endpoint_url: {self.endpoint_url!r} is not a URL; e.g. http://minio:9000")

    def apply(self) -> dict[str, str]:
        """Set the AWS variables of the keys given (the Ray workers get them through
        ``segsynth.ray_env.FORWARDED_ENV``); returns what was set."""
        import os

        env = {var: str(Path(v).expanduser()) if key == "credentials_file" else str(v)
               for key, var in self.ENV.items() if (v := getattr(self, key))}
        os.environ.update(env)
        return env


STORAGE = "storage"  # the section every stage's YAML may hold besides its own keys


def _read_yaml(path: str | Path | None) -> dict:
    """The mapping a config file holds; ``{}`` without a file."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass --config with a YAML file, e.g. configs/demo/synth.yaml")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path}: not valid YAML ({_yaml_problem(e)}); fix the syntax there") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} cannot be read ({getattr(e, 'strerror', None) or e}); "
                          "check its permissions and that it is a YAML text file") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return loaded


def _split_storage(cls: type | None, data: dict, overrides: typing.Iterable[str]) -> tuple[StorageConfig | None, list]:
    """Take the ``storage:`` section (and ``storage.*`` overrides) out of ``data``: returns it
    checked (None when absent, or when ``cls`` has a ``storage`` key of its own) and the other
    overrides as ``(key, raw)`` pairs."""
    own_storage = cls is not None and STORAGE in {f.name for f in dataclasses.fields(cls)}
    storage = {} if own_storage else data.pop(STORAGE, None) or {}
    if not isinstance(storage, dict):
        raise ConfigError(f"{STORAGE}: a section of keys ({', '.join(StorageConfig.ENV)}), got {storage!r}")
    rest = []
    for key, raw in parse_overrides(overrides):
        if not own_storage and key.split(".", 1)[0] == STORAGE:
            storage[key.split(".", 1)[-1]] = parse_value(raw, key)
        else:
            rest.append((key, raw))
    unknown = [k for k in storage if k not in StorageConfig.ENV]
    if unknown:
        raise ConfigError(f"unknown config key {STORAGE}.{unknown[0]}; valid keys: "
                          + ", ".join(f"{STORAGE}.{k}" for k in StorageConfig.ENV)
                          + " (access keys go in the file storage.credentials_file names, or in the environment)")
    return (_build(StorageConfig, storage, prefix=f"{STORAGE}.") if storage else None), rest


def load_config(cls: type[T], path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> T:
    """Build ``cls`` from the YAML file ``path`` (optional) and dotted ``key=value`` overrides.

    Pure: reading a config changes nothing. A ``storage:`` section (:class:`StorageConfig`) is
    checked and left out of ``cls`` (unless ``cls`` has a ``storage`` key of its own); the entry
    point that runs the config applies it with :func:`apply_storage`."""
    data = _read_yaml(path)
    _, rest = _split_storage(cls, data, overrides)
    for key, raw in rest:
        _set_dotted(data, cls, key, raw)
    return _build(cls, data)


def apply_storage(path: str | Path | None, overrides: typing.Iterable[str] = (), cls: type | None = None) -> dict[str, str]:
    """Apply the ``storage:`` section of a config (the file ``path`` and its ``storage.*``
    overrides) to this process's environment, and so to the Ray workers it starts: what an entry
    point (``segsynth <stage>``, ``serve.app:build``, each step of a pipeline) calls before it
    runs the config that :func:`load_config` reads. ``cls``: the config class, when it may have
    a ``storage`` key of its own (then nothing is applied). Returns the variables set."""
    storage, _ = _split_storage(cls, _read_yaml(path), overrides)
    return storage.apply() if storage else {}


def dump_config(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Any, out: str, name: str = CONFIG_FILENAME) -> str:
    """Write the resolved config beside an output (``out`` is a folder, local or URI)."""
    from segsynth import io

    uri = io.join(out, name)
    io.write_bytes(uri, dump_config(cfg).encode())
    return uri


def check_resume_config(cfg: Any, out: str, settings: typing.Callable[[dict], dict], holds: str = "outputs") -> None:
    """Refuse to resume into ``out`` when its ``config.yaml`` was resolved with other output settings.

    ``settings`` takes a resolved config as plain data (as YAML reads it) and returns the part
    that changes the output (no pool sizes, no ``out``); a key whose value differs is a
    :class:`ConfigError` naming it and the fix. No ``config.yaml`` in ``out``: nothing to compare.
    """
    from segsynth import io

    path = io.join(out, CONFIG_FILENAME)
    if not io.exists(path):
        return
    old = settings(yaml.safe_load(io.read_bytes(path)) or {})
    new = settings(yaml.safe_load(dump_config(cfg)))  # both sides as YAML reads them
    changed = [k for k in new if old.get(k) != new[k]]
    if changed:
        raise ConfigError(f"{out} already holds {holds} made with a different {', '.join(changed)}; "
                          f"use a new out=FOLDER or delete {out} to start over")
