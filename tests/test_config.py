"""Config: safe YAML -> dataclasses, dotted overrides, strict keys and types."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from audiointerp.config import (
    ConfigError,
    apply_overrides,
    load_config,
    load_yaml,
    parse_overrides,
    save_config,
)


@dataclass
class Optim:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class Recipe:
    data_folder: str = ""
    epochs: int = 10
    test_only: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    limit: int | None = None
    optim: Optim = field(default_factory=Optim)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hparams.yaml"
    path.write_text(text)
    return path


def test_yaml_values_and_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path, "epochs: 3\noptim:\n  lr: 2.0e-5\n")
    config = load_config(Recipe, path)
    assert config.epochs == 3 and config.optim.lr == 2e-5
    assert config.optim.betas == [0.9, 0.999] and config.data_folder == ""


def test_overrides_both_spellings_dotted_and_flags(tmp_path: Path) -> None:
    path = _write(tmp_path, "epochs: 3\n")
    argv = [
        "--data_folder=/x/y",
        "--optim.lr",
        "1e-4",
        "--test_only",
        "--device=cpu",
        "--limit",
        "null",
        "--optim.betas=[0.5, 0.6]",
    ]
    config = load_config(Recipe, path, argv)
    assert config.data_folder == "/x/y" and config.optim.lr == 1e-4 and config.test_only
    assert config.device == "cpu" and config.limit is None and config.optim.betas == [0.5, 0.6]
    assert load_config(Recipe, path, ["--limit=7", "--test_only=false"]).limit == 7
    assert load_config(Recipe, path, ["--test-only"]).test_only is True


def test_parse_overrides() -> None:
    assert parse_overrides(["--a.b=1", "--c", "2", "--flag"]) == {
        "a.b": "1",
        "c": "2",
        "flag": True,
    }
    with pytest.raises(ConfigError, match="unexpected argument 'stray'"):
        parse_overrides(["stray"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("epoch: 3\n", "unknown config key.*epoch"),
        ("optim:\n  learning_rate: 1\n", "unknown config key.*optim.learning_rate"),
        ("epochs: three\n", "epochs: expected an integer"),
        ("epochs: 2.5\n", "epochs: expected an integer"),
        ("epochs: true\n", "epochs: expected an integer"),
        ("optim:\n  lr: fast\n", "optim.lr: expected a number"),
        ("test_only: maybe\n", "test_only: expected true/false"),
        ("device: tpu\n", "device: 'tpu' is not one of"),
        ("optim: 3\n", "optim: expected a mapping"),
        ("data_folder: 12\n", "data_folder: expected a string"),
        ("optim:\n  betas: [0.9, x]\n", r"optim.betas\[1\]: expected a number"),
    ],
)
def test_file_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(Recipe, _write(tmp_path, text))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epoch=3"], "unknown config key: epoch"),
        (["--optim.momentum=0.9"], "unknown config key: optim.momentum"),
        (["--epochs.x=1"], "epochs.x: epochs has no sub-keys"),
        (["--epochs=many"], "epochs: expected an integer"),
        (["--epochs"], "epochs: needs a value"),
        (["--device=gpu"], "device: 'gpu' is not one of"),
    ],
)
def test_override_errors_name_the_key(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(Recipe, None, argv)


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = _write(tmp_path, "epochs: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_yaml(path)
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_yaml(_write(tmp_path, "- 1\n- 2\n"))


def test_save_config_round_trip(tmp_path: Path) -> None:
    config = apply_overrides(Recipe(), {"optim.lr": "0.5", "epochs": "4"})
    path = save_config(config, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load(path.read_text())["optim"]["lr"] == 0.5
    assert load_config(Recipe, path) == config


def test_describe_lists_every_overridable_key() -> None:
    from audiointerp.config import describe

    lines = describe(Recipe)
    keys = [line.split()[0] for line in lines]
    assert keys == [
        "--data_folder", "--epochs", "--test_only", "--device", "--limit",
        "--optim.lr", "--optim.betas",
    ]  # fmt: skip
    assert "default: 10" in lines[1]
