"""One config system: YAML (safe loader) -> typed dataclasses, with command-line overrides.

YAML holds plain values only; each component declares a dataclass next to its code.
``--key=value``, ``--key value`` and bare ``--flag`` (booleans) override any field, nested
with dots (``--optim.lr=1e-3``). Unknown keys and values of the wrong type raise
:class:`ConfigError` naming the key.

- ``extends: BASE.yaml`` in a file: BASE (a path relative to that file, else a packaged
  config name) is loaded first and the file deep-merged over it.
- A field typed as a union of dataclasses that each declare ``name: Literal["x"]`` is a
  *tagged section*: its ``name`` selects the class (``scheduler: {name: plateau, ...}``;
  a bare string is short for ``{name: ...}``).
- A field's ``metadata={"aliases": ("old",)}`` accepts ``old`` as well (giving both is an
  error); :func:`to_dict` writes the field's own name.
- A class attribute ``retired_keys = {"old_option": off_value}`` lets files written before
  an option was removed load, when they hold it at its off value.
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

PACKAGED = Path(__file__).resolve().parent / "hparams"  # the configs shipped with the package


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


def find_config(name: str | Path, folders: list[Path]) -> Path:
    """``name`` if absolute, else the first of ``folders / name`` that exists, else a
    packaged config (a leading ``hparams/`` is optional there)."""
    name = Path(name)
    candidates = [name] if name.is_absolute() else [folder / name for folder in folders]
    if not name.is_absolute():
        packaged = name.relative_to("hparams") if name.parts[:1] == ("hparams",) else name
        candidates.append(PACKAGED / packaged)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(
        f"config file not found: {name} (looked in {', '.join(map(str, candidates))})"
    )


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep merge; a tagged section whose ``name`` changes is replaced, not merged."""
    merged = dict(base)
    for key, value in update.items():
        old = merged.get(key)
        both_mappings = isinstance(old, dict) and isinstance(value, dict)
        if both_mappings and value.get("name", old.get("name")) == old.get("name"):
            merged[key] = _merge(old, value)
        else:
            merged[key] = value
    return merged


def load_hparams(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping, resolving its ``extends:`` chain (deep-merged, base first)."""
    path = Path(path).resolve()
    data = load_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends must be a file name, got {parent!r}")
    try:
        base = find_config(parent, [path.parent])
    except ConfigError as error:
        raise ConfigError(f"{path}: extends {parent!r}: {error}") from error
    chain = (*_chain, path)
    if base in chain:
        cycle = " -> ".join(str(p) for p in (*chain[chain.index(base) :], base))
        raise ConfigError(f"{path}: extends {parent!r}: a cycle ({cycle})")
    return _merge(load_hparams(base, chain), data)


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


def tagged_options(tp: Any) -> dict[str, type] | None:
    """The classes of a tagged section type by their ``name``; None for any other type."""
    if get_origin(tp) not in (Union, types.UnionType):
        return None
    options = {}
    for option in get_args(tp):
        hint = (
            typing.get_type_hints(option).get("name") if dataclasses.is_dataclass(option) else None
        )
        if get_origin(hint) is not Literal or len(get_args(hint)) != 1:
            return None
        options[get_args(hint)[0]] = option
    return options


def _coerce_tagged(value: Any, options: dict[str, type], key: str) -> Any:
    """A tagged section: ``name`` (or the bare string) picks the class of ``options``."""
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping with a name (one of {list(options)})")
    if value.get("name") not in options:
        raise ConfigError(f"{key}.name: {value.get('name')!r} is not one of {list(options)}")
    return from_dict(options[value["name"]], value, prefix=f"{key}.")


def _coerce(value: Any, tp: Any, key: str, raw: bool) -> Any:
    """Check/convert ``value`` to type ``tp``. ``raw``: value is a command-line string."""
    origin = get_origin(tp)
    options = tagged_options(tp)
    if options:
        return _coerce_tagged(value, options, key)
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


def _aliases(cls: type) -> dict[str, str]:
    """``{alias: field name}`` from the fields' ``metadata["aliases"]``."""
    return {
        alias: f.name for f in dataclasses.fields(cls) for alias in f.metadata.get("aliases", ())
    }


def _canonical(cls: type, data: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``data`` with aliases replaced by field names; a field given twice raises."""
    aliases = _aliases(cls)
    canonical: dict[str, Any] = {}
    for key, value in data.items():
        name = aliases.get(key, key)
        if name in canonical:
            raise ConfigError(f"{prefix}{name}: given twice (also as its alias {key!r})"
                              if key != name else f"{prefix}{name}: given twice")  # fmt: skip
        canonical[name] = value
    return canonical


def _drop_retired(cls: type, data: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Drop the keys of removed options (``cls.retired_keys``: {key: its off value}) that
    old files hold at their off value; any other value of such a key raises."""
    retired: dict[str, Any] = getattr(cls, "retired_keys", {})
    kept = {}
    for key, value in data.items():
        if key not in retired:
            kept[key] = value
        elif value != retired[key]:
            raise ConfigError(f"{prefix}{key}: removed; only {retired[key]!r} (off) is accepted")
    return kept


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a plain mapping; unknown keys and bad types raise."""
    fields = _field_types(cls)
    data = _drop_retired(cls, _canonical(cls, data, prefix), prefix)
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
    given: dict[tuple[str, ...], str] = {}  # field path -> the override that set it
    for dotted, raw in overrides.items():
        node_cls: Any = type(config)
        node = data
        parts = dotted.split(".")
        path: tuple[str, ...] = ()
        for depth, part in enumerate(parts):
            fields = _field_types(node_cls)
            part = _aliases(node_cls).get(part, part)
            path = (*path, part)
            if part not in fields:
                where = ".".join(parts[:depth]) or "top level"
                raise ConfigError(
                    f"unknown config key: {dotted} ({part!r} is not a field of {where}; "
                    f"valid: {', '.join(sorted(fields))})"
                )
            options = tagged_options(fields[part])
            rest = parts[depth + 1 :]
            if not rest and path in given:
                raise ConfigError(f"{dotted}: given twice (also as --{given[path]})")
            given[path] = dotted
            if raw is True and (options or fields[part] is not bool) and rest in ([], ["name"]):
                raise ConfigError(f"{dotted}: needs a value (--{dotted}=VALUE)")
            if options and rest in ([], ["name"]):  # a new section of the named class
                if raw not in options:
                    raise ConfigError(f"{dotted}: {raw!r} is not one of {list(options)}")
                node[part] = to_dict(options[raw]())
                break
            if not rest:
                node[part] = _coerce(raw, fields[part], dotted, True)
            elif options:
                node_cls, node = options[node[part]["name"]], node[part]
            elif dataclasses.is_dataclass(fields[part]):
                node_cls, node = fields[part], node[part]
            else:
                raise ConfigError(f"{dotted}: {'.'.join(parts[: depth + 1])} has no sub-keys")
    return from_dict(type(config), data)


def load_config(cls: type[T], path: str | Path | None = None, argv: list[str] | None = None) -> T:
    """Defaults of ``cls`` <- YAML file ``path`` <- command-line ``argv`` overrides."""
    config = from_dict(cls, load_hparams(path)) if path is not None else cls()
    return apply_overrides(config, parse_overrides(argv or []))


def describe(cls: type, prefix: str = "") -> list[str]:
    """One line per overridable key: ``--dotted.key (type, default: value[, alias: old])``;
    a tagged section lists its choices, then the keys of its default class."""
    lines = []
    instance = cls()
    aliases = {f.name: f.metadata.get("aliases", ()) for f in dataclasses.fields(cls)}
    for name, tp in _field_types(cls).items():
        value = getattr(instance, name)
        options = tagged_options(tp)
        if options:
            lines.append(f"  --{prefix}{name}  (one of {'|'.join(options)}, default: "
                         f"{value.name!r}; then its keys:)")  # fmt: skip
            lines.extend(describe(type(value), f"{prefix}{name}."))
        elif dataclasses.is_dataclass(tp):
            lines.extend(describe(tp, f"{prefix}{name}."))
        else:
            alias = "".join(f", alias: --{prefix}{old}" for old in aliases[name])
            lines.append(f"  --{prefix}{name}  ({_type_name(tp)}, default: {value!r}{alias})")
    return lines


def save_config(config: Any, path: str | Path) -> Path:
    """Write the effective config as YAML (atomically), so a run records what it used."""
    return write_text_atomic(path, yaml.safe_dump(to_dict(config), sort_keys=False))
