"""One config system: YAML (safe loader) -> typed dataclasses, with command-line overrides.

YAML holds plain values only; each component declares a dataclass next to its code.
``--key=value``, ``--key value`` and bare ``--flag`` (booleans) override any field, nested
with dots (``--optim.lr=1e-3``). Unknown keys and values of the wrong type raise
:class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from audiointerp.errors import ConfigError
from audiointerp.io import write_text_atomic

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader (no object construction)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML ({error})") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def parse_overrides(argv: list[str]) -> dict[str, str | bool]:
    """``['--a.b=1', '--c', '2', '--flag']`` -> ``{'a.b': '1', 'c': '2', 'flag': True}``.

    Values stay raw strings; they are typed against the dataclass later.
    """
    overrides: dict[str, str | bool] = {}
    index = 0
    while index < len(argv):
        token = argv[index]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"unexpected argument {token!r}; overrides look like --key=value")
        body = token[2:]
        if "=" in body:
            key, value = body.split("=", 1)
            overrides[key.replace("-", "_")] = value
            index += 1
        elif index + 1 < len(argv) and not argv[index + 1].startswith("--"):
            overrides[body.replace("-", "_")] = argv[index + 1]
            index += 2
        else:
            overrides[body.replace("-", "_")] = True
            index += 1
    return overrides


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, raw: bool) -> Any:
    """Check/convert ``value`` to type ``tp``. ``raw``: value is a command-line string."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if type(None) in options and (
            value is None or (raw and isinstance(value, str) and value.lower() in ("null", "none"))
        ):
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key, raw)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{key}: cannot be None")
    if origin is Literal:
        choices = get_args(tp)
        candidate = value
        if raw and isinstance(value, str) and value not in choices:
            candidate = yaml.safe_load(value)
        if candidate not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")
        return candidate
    if origin in (list, tuple):
        if raw and isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_type, *_) = get_args(tp) or (Any,)
        items = [_coerce(v, item_type, f"{key}[{i}]", False) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if raw and isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        _, value_type = get_args(tp) or (str, Any)
        return {str(k): _coerce(v, value_type, f"{key}.{k}", False) for k, v in value.items()}
    if tp is Any:
        return yaml.safe_load(value) if raw and isinstance(value, str) else value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if raw:
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {_type_name(tp)} fields")
        return from_dict(tp, value, prefix=f"{key}.")
    raise ConfigError(f"{key}: unsupported field type {_type_name(tp)}")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a plain mapping; unknown keys and bad types raise."""
    fields = _field_types(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        names = ", ".join(prefix + k for k in unknown)
        raise ConfigError(f"unknown config key(s): {names} (valid: {', '.join(sorted(fields))})")
    kwargs = {
        name: _coerce(value, fields[name], prefix + name, False) for name, value in data.items()
    }
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {error}") from error


def to_dict(config: Any) -> dict[str, Any]:
    """Dataclass -> plain mapping (what a YAML file holds)."""
    return dataclasses.asdict(config)


def apply_overrides(config: T, overrides: dict[str, str | bool]) -> T:
    """Return a copy of ``config`` with dotted-key overrides applied and typed."""
    data = to_dict(config)
    for dotted, raw in overrides.items():
        node_cls: Any = type(config)
        node = data
        parts = dotted.split(".")
        for depth, part in enumerate(parts):
            fields = _field_types(node_cls)
            if part not in fields:
                where = ".".join(parts[:depth]) or "top level"
                raise ConfigError(
                    f"unknown config key: {dotted} ({part!r} is not a field of {where}; "
                    f"valid: {', '.join(sorted(fields))})"
                )
            if depth == len(parts) - 1:
                if raw is True and fields[part] is not bool:
                    raise ConfigError(f"{dotted}: needs a value (--{dotted}=VALUE)")
                node[part] = _coerce(raw, fields[part], dotted, True)
            else:
                node_cls = fields[part]
                if not dataclasses.is_dataclass(node_cls):
                    raise ConfigError(f"{dotted}: {'.'.join(parts[: depth + 1])} has no sub-keys")
                node = node[part]
    return from_dict(type(config), data)


def load_config(cls: type[T], path: str | Path | None = None, argv: list[str] | None = None) -> T:
    """Defaults of ``cls`` <- YAML file ``path`` <- command-line ``argv`` overrides."""
    config = from_dict(cls, load_yaml(path)) if path is not None else cls()
    return apply_overrides(config, parse_overrides(argv or []))


def describe(cls: type, prefix: str = "") -> list[str]:
    """One line per overridable key: ``--dotted.key (type, default: value)``."""
    lines = []
    instance = cls()
    for name, tp in _field_types(cls).items():
        value = getattr(instance, name)
        if dataclasses.is_dataclass(tp):
            lines.extend(describe(tp, f"{prefix}{name}."))
        else:
            lines.append(f"  --{prefix}{name}  ({_type_name(tp)}, default: {value!r})")
    return lines


def save_config(config: Any, path: str | Path) -> Path:
    """Write the effective config as YAML (atomically), so a run records what it used."""
    return write_text_atomic(path, yaml.safe_dump(to_dict(config), sort_keys=False))
