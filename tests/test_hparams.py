"""The packaged hparams: every file loads into its recipe, the demo's figures rest on the
values below, and checkpoints saved with the reference's key names still load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from audiointerp.checkpoints import save_checkpoint
from audiointerp.cli import main
from audiointerp.config import PACKAGED, from_dict, load_hparams
from audiointerp.features import FeatureConfig
from audiointerp.interpreters.l2i import L2IConfig
from audiointerp.interpreters.registry import build_interpreter
from audiointerp.models import ClassifierConfig, build_classifier
from audiointerp.training.loop import CyclicSchedule, NoSchedule, PlateauSchedule
from audiointerp.training.recipes.entry import recipe_class, recipe_name
from audiointerp.training.recipes.interpreter import load_interpreter_task
from audiointerp.training.tasks import InterpreterTask

RECIPES = {
    "conv2d.yaml": "classifier", "cnn14.yaml": "classifier", "conv2d_demo.yaml": "classifier",
    "conv2d_permuted.yaml": "classifier",
    "nmf.yaml": "nmf", "nmf_demo.yaml": "nmf", "piq.yaml": "piq", "piq_demo.yaml": "piq",
    "l2i_conv2dclassifier.yaml": "l2i", "l2i_cnn14.yaml": "l2i", "l2i_demo.yaml": "l2i",
    "lmac_conv2d.yaml": "lmac", "lmac_cnn14.yaml": "lmac", "lmac_demo.yaml": "lmac",
}  # fmt: skip


def load(name: str):
    data = load_hparams(PACKAGED / name)
    return from_dict(recipe_class(recipe_name(data, {}, PACKAGED / name)), data)


def test_every_packaged_config_is_listed_and_names_its_recipe() -> None:
    assert sorted(p.name for p in PACKAGED.glob("*.yaml")) == sorted(RECIPES)
    for name, recipe in RECIPES.items():
        data = load_hparams(PACKAGED / name)
        assert recipe_name(data, {}, PACKAGED / name) == recipe, name
        load(name)  # no unknown key, no unused lr beside a cyclic schedule


def test_the_recipes_scripts_see_the_packaged_folder() -> None:
    hparams = Path(__file__).resolve().parents[1] / "recipes" / "esc50" / "hparams"
    assert (hparams / "lmac_demo.yaml").resolve() == (PACKAGED / "lmac_demo.yaml").resolve()


def test_demo_values() -> None:
    classifier = load("conv2d_demo.yaml")
    assert (classifier.classifier.dim, classifier.classifier.lin_neurons) == (16, 32)
    assert classifier.classifier.logit_scale == 30.0 and classifier.classifier.features.n_fft == 512
    assert classifier.train.scheduler == CyclicSchedule(base_lr=2e-4, max_lr=3e-3, step_size=75)
    assert (classifier.train.epochs, classifier.train.batch_size, classifier.train.lr) == (
        10, 16, None,
    )  # fmt: skip

    nmf = load("nmf_demo.yaml")
    assert (nmf.nmf.n_components, nmf.nmf.epochs, nmf.nmf.max_frames) == (20, 100, 20000)
    assert (nmf.features.n_fft, nmf.features.hop_ms, nmf.nmf.solver) == (
        512,
        16.0,
        "multiplicative",
    )

    l2i = load("l2i_demo.yaml")
    assert (l2i.interpreter.n_components, l2i.interpreter.width, l2i.interpreter.n_frames) == (
        20, 16, 313,
    )  # fmt: skip
    assert l2i.interpreter.classifier_temperature == 0.3
    assert (
        l2i.interpreter.relevance_threshold == 0.2
        and l2i.interpreter.nmf_hparams == "nmf_demo.yaml"
    )
    assert (l2i.train.epochs, l2i.train.lr, l2i.train.weight_decay) == (5, 2e-3, 1e-4)

    piq = load("piq_demo.yaml")
    assert (piq.interpreter.n_keys, piq.interpreter.loud_threshold) == (200, 0.35)
    assert piq.interpreter.reseed_dead_codes and piq.interpreter.loud_weight == 1.0
    assert (piq.train.epochs, piq.train.batch_size, piq.train.lr) == (5, 8, 4e-3)
    assert piq.train.scheduler == NoSchedule() and piq.mixing.prob == 0.0

    lmac = load("lmac_demo.yaml")
    assert (lmac.interpreter.width, lmac.interpreter.guidance_weight) == (0.125, 40.0)
    assert lmac.interpreter.class_conditional and lmac.interpreter.loud_weight == 1.0
    assert (lmac.interpreter.mask_in_weight, lmac.interpreter.l1_weight) == (4.0, 6.4)
    assert (lmac.mixing.prob, lmac.train.epochs, lmac.train.lr) == (0.75, 26, 8e-3)
    assert lmac.classifier_hparams == "conv2d_demo.yaml" and lmac.n_interpretations == 4

    permuted = load("conv2d_permuted.yaml")  # data randomisation: fit the shuffled train folds
    assert permuted.classifier == classifier.classifier
    assert permuted.splits.valid_folds == permuted.splits.train_folds == [1, 2, 3]
    assert permuted.train.scheduler == CyclicSchedule(base_lr=3e-3, max_lr=3e-3, step_size=75)
    assert (permuted.train.epochs, permuted.train.weight_decay) == (80, 0.0)


def test_reference_values() -> None:
    lmac = load("lmac_cnn14.yaml")
    assert lmac.interpreter.l1_weight == 0.4 and lmac.interpreter.reference_l1_batch_scaling
    assert lmac.train.scheduler == PlateauSchedule(factor=0.5, patience=3, start_epoch=100)
    assert load("l2i_cnn14.yaml").train.scheduler.start_epoch == 50
    assert load("piq.yaml").train.select_metric == "fid_in"
    conv2d = load("conv2d.yaml")
    assert conv2d.train.scheduler == CyclicSchedule(base_lr=2e-6, max_lr=2e-5, step_size=65000)


def test_reference_key_names_still_load() -> None:
    old = {"classifier_temp": 0.5, "relevance_th": 0.1}
    assert from_dict(L2IConfig, old) == L2IConfig(
        classifier_temperature=0.5, relevance_threshold=0.1
    )


@pytest.mark.parametrize(
    "name, old, new",
    [
        (
            "lmac",
            {
                "g_w": 3.0,
                "l_in_w": 2.0,
                "l_out_w": 0.1,
                "reg_w_l1": 1.0,
                "reg_w_tv": 0.2,
                "bin_th": 0.3,
            },  # fmt: skip
            {
                "guidance_weight": 3.0,
                "mask_in_weight": 2.0,
                "mask_out_weight": 0.1,
                "l1_weight": 1.0,
                "tv_weight": 0.2,
                "loud_threshold": 0.3,
            },
        ),  # fmt: skip
        (
            "piq",
            {"mask_th": 0.3, "rec_weight": 2.0},
            {"loud_threshold": 0.3, "reconstruction_weight": 2.0},
        ),  # fmt: skip
    ],
)
def test_a_checkpoint_saved_with_the_old_names_loads(
    tmp_path: Path, name: str, old: dict, new: dict
) -> None:
    features = FeatureConfig(n_fft=256, win_ms=16.0, hop_ms=8.0)
    config = ClassifierConfig(name="conv2d", dim=4, lin_neurons=8, features=features)
    torch.manual_seed(0)
    classifier = build_classifier(config, ["a", "b", "c"]).eval()
    extra = {"n_keys": 6} if name == "piq" else {"width": 1 / 16}
    interpreter = build_interpreter(name, extra, classifier)
    tensors, saved, meta = InterpreterTask(interpreter, classifier, config).checkpoint()
    settings = {k: v for k, v in saved["interpreter"].items() if k not in new} | old
    folder = save_checkpoint(tmp_path / "model", tensors, {**saved, "interpreter": settings}, meta)
    assert set(old) <= set(yaml.safe_load((folder / "config.yaml").read_text())["interpreter"])

    task = load_interpreter_task(folder, reference_compatible=False)
    loaded = task.interpreter.config_dict()
    assert {key: loaded[key] for key in new} == new and not set(old) & set(loaded)
    for key, value in interpreter.state_dict().items():
        assert torch.equal(task.interpreter.state_dict()[key], value), key


def test_audiointerp_train_is_the_scripts_entry_point(capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--help"]) == 0
    assert "Packaged configs: cnn14.yaml, conv2d.yaml" in capsys.readouterr().out
    assert main(["train", "lmac_demo.yaml", "--help"]) == 0
    shown = capsys.readouterr().out
    assert "--interpreter.guidance_weight  (float, default: 0.0, alias: --interpreter.g_w)" in shown
    assert "--train.scheduler  (one of cyclic|plateau|none" in shown
    argv = ["train", "lmac_demo.yaml", "--interpreter.g_w=1", "--interpreter.guidance_weight=2"]
    assert main(argv) == 2
    assert "interpreter.guidance_weight: given twice (also as --interpreter.g_w)" in (
        capsys.readouterr().err
    )
    assert main(["train", "piq_demo.yaml", "--train.scheduler=cyclic"]) == 2
    assert "lr is unused with scheduler cyclic" in capsys.readouterr().err
