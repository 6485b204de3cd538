"""Config: safe YAML -> dataclasses, dotted overrides, strict keys and types."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import yaml

from audiointerp.config import (
    PACKAGED,
    ConfigError,
    apply_overrides,
    describe,
    find_config,
    from_dict,
    load_config,
    load_hparams,
    load_yaml,
    parse_overrides,
    save_config,
    to_dict,
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
    lines = describe(Recipe)
    keys = [line.split()[0] for line in lines]
    assert keys == [
        "--data_folder", "--epochs", "--test_only", "--device", "--limit",
        "--optim.lr", "--optim.betas",
    ]  # fmt: skip
    assert "default: 10" in lines[1]


# --- extends, tagged sections, aliases ---------------------------------------------------


@dataclass
class Steady:
    name: Literal["steady"] = "steady"


@dataclass
class Decay:
    name: Literal["decay"] = "decay"
    factor: float = 0.5
    every: int = 10


@dataclass
class Tuned:
    loud_threshold: float = field(default=0.35, metadata={"aliases": ("mask_th",)})
    schedule: Steady | Decay = field(default_factory=Steady)

    retired_keys: ClassVar[dict[str, Any]] = {"refiner_width": 0}


def test_extends_deep_merges_relative_files_and_names_the_bad_file(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "root.yaml").write_text("epochs: 3\noptim: {lr: 0.1, betas: [1, 2]}\n")
    (tmp_path / "child.yaml").write_text("extends: base/root.yaml\noptim: {lr: 0.2}\n")
    (tmp_path / "grandchild.yaml").write_text("extends: child.yaml\ntest_only: true\n")
    config = load_config(Recipe, tmp_path / "grandchild.yaml", ["--epochs=4"])
    assert config == Recipe(epochs=4, test_only=True, optim=Optim(lr=0.2, betas=[1.0, 2.0]))

    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    cycle = r"b.yaml: extends 'a.yaml': a cycle \(.*a.yaml -> .*b.yaml -> .*a.yaml\)"
    with pytest.raises(ConfigError, match=cycle):
        load_hparams(tmp_path / "a.yaml")
    (tmp_path / "orphan.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"orphan.yaml: extends 'nowhere.yaml': .*not found"):
        load_hparams(tmp_path / "orphan.yaml")


def test_extends_falls_back_to_a_packaged_config_name(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("extends: piq_demo.yaml\ntrain: {epochs: 1}\n")
    merged = load_hparams(tmp_path / "mine.yaml")
    assert merged["train"]["epochs"] == 1 and merged["train"]["lr"] == 4.0e-3
    assert merged["interpreter"]["name"] == "piq" and merged["interpreter"]["n_keys"] == 200


def test_packaged_configs_resolve_by_name_without_a_recipes_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no recipes/ or hparams/ here
    for name in ("lmac_demo.yaml", "hparams/lmac_demo.yaml"):
        path = find_config(name, [tmp_path / "elsewhere"])
        assert path == (PACKAGED / "lmac_demo.yaml").resolve()
        assert "recipes" not in path.parts and path.parent.name == "hparams"
    assert load_hparams(find_config("conv2d_demo.yaml", []))["classifier"]["dim"] == 16


def test_a_tagged_section_is_picked_by_name_and_replaced_when_the_name_changes(
    tmp_path: Path,
) -> None:
    assert from_dict(Tuned, {"schedule": {"name": "decay", "every": 3}}).schedule == Decay(every=3)
    assert from_dict(Tuned, {"schedule": "decay"}).schedule == Decay()  # bare name
    with pytest.raises(ConfigError, match=r"schedule.name: 'cosine' is not one of"):
        from_dict(Tuned, {"schedule": {"name": "cosine"}})
    with pytest.raises(ConfigError, match=r"unknown config key\(s\): schedule.factor"):
        from_dict(Tuned, {"schedule": {"name": "steady", "factor": 0.1}})  # unused key

    (tmp_path / "base.yaml").write_text("schedule: {name: decay, factor: 0.1}\n")
    (tmp_path / "same.yaml").write_text("extends: base.yaml\nschedule: {every: 2}\n")
    (tmp_path / "other.yaml").write_text("extends: base.yaml\nschedule: {name: steady}\n")
    assert load_config(Tuned, tmp_path / "same.yaml").schedule == Decay(factor=0.1, every=2)
    assert load_config(Tuned, tmp_path / "other.yaml").schedule == Steady()

    decay = apply_overrides(Tuned(), {"schedule": "decay", "schedule.every": "7"})
    assert decay.schedule == Decay(every=7)
    assert apply_overrides(decay, {"schedule.name": "steady"}).schedule == Steady()
    with pytest.raises(ConfigError, match="'patience' is not a field of schedule"):
        apply_overrides(decay, {"schedule.patience": "1"})


def test_aliases_are_accepted_once_and_written_under_the_new_name(tmp_path: Path) -> None:
    assert from_dict(Tuned, {"mask_th": 0.2}).loud_threshold == 0.2
    assert apply_overrides(Tuned(), {"mask_th": "0.3"}).loud_threshold == 0.3
    with pytest.raises(ConfigError, match="loud_threshold: given twice .*alias 'mask_th'"):
        from_dict(Tuned, {"loud_threshold": 0.2, "mask_th": 0.3})
    with pytest.raises(ConfigError, match="mask_th: given twice .also as --loud_threshold."):
        apply_overrides(Tuned(), {"loud_threshold": "0.2", "mask_th": "0.3"})
    saved = save_config(Tuned(loud_threshold=0.25), tmp_path / "config.yaml")
    assert yaml.safe_load(saved.read_text()) == {
        "loud_threshold": 0.25,
        "schedule": {"name": "steady"},
    }
    lines = describe(Tuned)
    assert "--loud_threshold  (float, default: 0.35, alias: --mask_th)" in lines[0]
    assert lines[1].startswith("  --schedule  (one of steady|decay, default: 'steady'")


def test_a_removed_option_loads_from_old_files_only_when_off() -> None:
    assert from_dict(Tuned, {"refiner_width": 0, "mask_th": 0.3}) == Tuned(loud_threshold=0.3)
    with pytest.raises(ConfigError, match="refiner_width: removed; only 0 .off. is accepted"):
        from_dict(Tuned, {"refiner_width": 8})
    assert "refiner_width" not in to_dict(Tuned())
