"""Published models from the hub (audiointerp.hub) against a stand-in hub on 127.0.0.1:
download file by file, convert once, reuse without a request, offline, refusals."""

from __future__ import annotations

import io
import shlex
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hubserver import FakeHub, serve
from test_piq_import import write_reference

from audiointerp.checkpoints import load_checkpoint
from audiointerp.cli import main
from audiointerp.data.esc50 import ESC50_REFERENCE_CLASSES
from audiointerp.errors import CheckpointError
from audiointerp.hub import HUB_MODELS, converted_folder, pull
from audiointerp.pipeline import Explainer

NAME = "speechbrain/PIQ-ESC50"
PIN = HUB_MODELS[NAME].revision
LABELS_REPO = "speechbrain/cnn14-esc50"
LABELS_COMMIT = "c" * 40
MODEL_FILES = ("embedding_modelft.ckpt", "classifier.ckpt", "psi_model.ckpt")
# Reversed, so a test can tell the names came from the file, not from the built-in order.
CLASS_NAMES = list(reversed(ESC50_REFERENCE_CLASSES))


def label_encoder(names: list[str]) -> bytes:
    """SpeechBrain's CategoricalEncoder text format."""
    lines = [f"{name!r} => {index}" for index, name in enumerate(names)]
    return "\n".join([*lines, "================", "'starting_index' => 0", ""]).encode()


def published_files(folder: Path) -> dict[str, bytes]:
    """Small checkpoints in the published layout (dim 8, 64 codebook keys)."""
    write_reference(folder, dim=8, n_keys=64)
    return {name: (folder / name).read_bytes() for name in MODEL_FILES}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, bytes]:
    return published_files(tmp_path / "published")


@pytest.fixture
def hub(files: dict[str, bytes]) -> Iterator[FakeHub]:
    fake = FakeHub()
    for name, data in files.items():
        fake.add(NAME, PIN, name, data)
    fake.add(LABELS_REPO, LABELS_COMMIT, "label_encoder.txt", label_encoder(CLASS_NAMES))
    with serve(fake):
        yield fake


def test_first_pull_downloads_and_converts_the_second_makes_no_request(
    hub: FakeHub, files: dict[str, bytes], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    folder = pull(NAME, endpoint=hub.url, cache_dir=cache)
    assert folder == converted_folder(cache, NAME, PIN)
    fetched = sorted(r.split()[1].rsplit("/", 1)[1] for r in hub.requests if r.startswith("GET"))
    assert fetched == sorted([*MODEL_FILES, "label_encoder.txt"])
    assert len(hub.requests) == 8  # one HEAD and one GET per file
    checkpoint = load_checkpoint(folder)
    psi = torch.load(io.BytesIO(files["psi_model.ckpt"]), weights_only=True)
    interpreter = checkpoint.state_dict("interpreter")
    assert all(torch.equal(interpreter[key], value) for key, value in psi.items())
    assert checkpoint.meta["class_names"] == CLASS_NAMES
    assert checkpoint.meta["normalization"] == "none"
    assert checkpoint.meta["hub"]["revision"] == PIN
    assert checkpoint.meta["hub"]["labels"] == {
        "repo": LABELS_REPO,
        "revision": LABELS_COMMIT,
        "file": "label_encoder.txt",
    }

    before = len(hub.requests)
    assert pull(NAME, endpoint=hub.url, cache_dir=cache) == folder
    assert pull(NAME, cache_dir=cache, offline=True) == folder
    assert len(hub.requests) == before


def test_revision_overrides_the_pin_and_a_branch_resolves_to_its_commit(
    hub: FakeHub, tmp_path: Path
) -> None:
    other = "d" * 40
    psi = {k: v + 1 for k, v in torch.load(io.BytesIO(hub.files[(NAME, PIN, "psi_model.ckpt")]),
                                             weights_only=True).items()}  # fmt: skip
    buffer = io.BytesIO()
    torch.save(psi, buffer)
    for name in MODEL_FILES:
        data = buffer.getvalue() if name == "psi_model.ckpt" else hub.files[(NAME, PIN, name)]
        hub.add(NAME, other, name, data)
    hub.branches[(NAME, "dev")] = other
    folder = pull(NAME, "dev", endpoint=hub.url, cache_dir=tmp_path / "cache")
    assert folder == converted_folder(tmp_path / "cache", NAME, other)
    interpreter = load_checkpoint(folder).state_dict("interpreter")
    assert torch.equal(interpreter["up.bias"], psi["up.bias"])
    pinned = pull(NAME, endpoint=hub.url, cache_dir=tmp_path / "cache")
    assert pinned != folder and not torch.equal(
        load_checkpoint(pinned).state_dict("interpreter")["up.bias"], psi["up.bias"]
    )


def test_offline_with_an_empty_cache_names_every_missing_file(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at call time, not at import
    with pytest.raises(CheckpointError) as raised:
        pull(NAME, endpoint=hub.url, cache_dir=tmp_path / "empty")
    message = str(raised.value)
    assert "offline" in message and str(tmp_path / "empty") in message
    for name in MODEL_FILES:
        assert f"{NAME}/{name}@{PIN[:12]}" in message
    assert f"{LABELS_REPO}/label_encoder.txt@main" in message
    assert "\n" not in message and hub.requests == []


def test_a_pre_seeded_cache_is_converted_with_local_files_only(
    files: dict[str, bytes], tmp_path: Path
) -> None:
    """The hub cache layout written by hand; no server exists at all."""
    cache = tmp_path / "cache"
    snapshot = cache / "models--speechbrain--PIQ-ESC50" / "snapshots" / PIN
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    labels = cache / "models--speechbrain--cnn14-esc50"
    (labels / "snapshots" / LABELS_COMMIT).mkdir(parents=True)
    (labels / "snapshots" / LABELS_COMMIT / "label_encoder.txt").write_bytes(
        label_encoder(CLASS_NAMES)
    )
    (labels / "refs").mkdir()
    (labels / "refs" / "main").write_text(LABELS_COMMIT)
    folder = pull(NAME, cache_dir=cache, endpoint="http://127.0.0.1:9", offline=True)
    assert load_checkpoint(folder).meta["class_names"] == CLASS_NAMES


class _Payload:
    """Unpickling this calls ``Path.touch(marker)``: a pickle that would run code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["code", "html"])
def test_a_served_file_that_is_not_a_plain_checkpoint_is_refused(
    hub: FakeHub, tmp_path: Path, kind: str
) -> None:
    marker = tmp_path / "payload-ran"
    buffer = io.BytesIO()
    torch.save({"up.bias": _Payload(marker)}, buffer)
    data = buffer.getvalue() if kind == "code" else b"<html>Moved</html>"
    hub.add(NAME, PIN, "psi_model.ckpt", data)
    with pytest.raises(CheckpointError) as raised:
        pull(NAME, endpoint=hub.url, cache_dir=tmp_path / "cache")
    message = str(raised.value)
    assert message.startswith(f"{NAME}@{PIN[:12]}: cannot convert: ")
    assert "psi_model.ckpt: refused or unreadable" in message and "\n" not in message
    assert not marker.exists()
    assert not converted_folder(tmp_path / "cache", NAME, PIN).exists()


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (b"<html>Not a label encoder</html>", "label_encoder.txt: line 1 is not"),
        (label_encoder(CLASS_NAMES[:10]), "head has 50 classes; given: 10 class names"),
        (b"'dog' => 0\n'cat' => 2\n", r"label_encoder.txt: label indices are not 0..C-1"),
    ],
)
def test_a_label_encoder_that_does_not_fit_is_refused(
    hub: FakeHub, tmp_path: Path, labels: bytes, message: str
) -> None:
    hub.add(LABELS_REPO, LABELS_COMMIT, "label_encoder.txt", labels)
    with pytest.raises(CheckpointError, match=message):
        pull(NAME, endpoint=hub.url, cache_dir=tmp_path / "cache")
    assert not converted_folder(tmp_path / "cache", NAME, PIN).exists()


def test_a_missing_file_names_repository_and_file(hub: FakeHub, tmp_path: Path) -> None:
    del hub.files[(LABELS_REPO, LABELS_COMMIT, "label_encoder.txt")]
    with pytest.raises(CheckpointError, match=rf"^{LABELS_REPO}/label_encoder.txt@main: HTTP 404"):
        pull(NAME, endpoint=hub.url, cache_dir=tmp_path / "cache")


def test_no_network_names_the_file_and_the_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # the hub client's retry backoff
    with serve(FakeHub()) as closed:
        url = closed.url  # a port nothing listens on once the server is gone
    with pytest.raises(CheckpointError) as raised:
        pull(NAME, endpoint=url, cache_dir=tmp_path / "cache")
    message = str(raised.value)
    assert message.startswith(f"{NAME}/embedding_modelft.ckpt@{PIN[:12]}: cannot reach {url}")


def test_unknown_names_list_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a known hub model.*speechbrain/PIQ-ESC50"):
        pull("someone/else", cache_dir=tmp_path)


def test_an_interrupted_conversion_leaves_no_model_and_the_next_pull_finishes(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import audiointerp.checkpoints as checkpoints

    real = checkpoints.save_file

    def killed(tensors: dict, path: str) -> None:
        real(tensors, path)
        raise KeyboardInterrupt  # as if killed after the weights were written

    monkeypatch.setattr(checkpoints, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        pull(NAME, endpoint=hub.url, cache_dir=tmp_path / "cache")
    folder = converted_folder(tmp_path / "cache", NAME, PIN)
    assert not folder.exists() and list(folder.parent.iterdir()) == []
    monkeypatch.setattr(checkpoints, "save_file", real)
    requests = len(hub.requests)
    assert pull(NAME, endpoint=hub.url, cache_dir=tmp_path / "cache") == folder
    # The downloads were kept: nothing is fetched again; the label encoder's branch
    # ("main") is only looked up (HEAD).
    assert [r.split()[0] for r in hub.requests[requests:]] == ["HEAD"]
    assert len(load_checkpoint(folder).meta["class_names"]) == 50


def test_cli_pull_prints_the_folder_and_fails_in_one_line(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    assert main(["pull", NAME, "--endpoint", hub.url, "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert str(converted_folder(cache, NAME, PIN)) in out and "normalization none" in out
    assert main(["pull", NAME, "--offline", "--cache-dir", str(tmp_path / "empty")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("audiointerp: error: offline") and error.count("\n") == 1


def _clip(path: Path) -> Path:
    generator = torch.Generator().manual_seed(6)
    audio = 0.5 * torch.randn(80000, generator=generator) * torch.linspace(0.2, 1.0, 80000)
    sf.write(str(path), audio.numpy(), 16000, subtype="FLOAT")
    return path


def test_interpret_takes_the_normalization_as_an_option(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    clip = _clip(tmp_path / "clip.wav")
    explainer = Explainer.from_pretrained(NAME)
    assert explainer.normalization == "none"  # SpeechBrain's interface's default
    default = explainer.explain_file(clip).waveform
    out = tmp_path / "peak"
    assert main(["interpret", NAME, str(clip), "--out", str(out), "--normalization", "peak"]) == 0
    scaled, rate = sf.read(str(out / "clip.explanation.wav"), dtype="float32")
    assert rate == 16000 and scaled.shape == default.shape
    assert float(np.abs(scaled - default).max()) > 1e-3 * float(np.abs(default).max())


def test_a_local_folder_of_the_same_name_wins(hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    """A path that exists is a folder to load, even when it spells a hub name."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(pull(NAME, endpoint=hub.url, cache_dir=tmp_path / "cache"), NAME)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert Explainer.from_pretrained(NAME).class_names == CLASS_NAMES
    assert not (tmp_path / "elsewhere").exists()


def _docs_examples() -> tuple[list[str], str]:
    """docs/hub.md's one-command example (argv) and its first Python block."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "hub.md").read_text()
    command = next(line for line in text.splitlines() if line.startswith("audiointerp interpret"))
    python = text.split("```python\n", 1)[1].split("```", 1)[0]
    return shlex.split(command)[1:], python


def test_the_documented_examples_run_as_written(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    _clip(tmp_path / "clip.wav")
    argv, python = _docs_examples()
    assert argv[:2] == ["interpret", NAME] and main(argv) == 0  # downloads and converts
    predicted = capsys.readouterr().out.split("\t")[1]
    assert predicted in CLASS_NAMES
    explanation, rate = sf.read(str(tmp_path / "explained" / "clip.explanation.wav"))
    assert rate == 16000 and explanation.shape == (80000,)
    requests = len(hub.requests)
    exec(compile(python, "docs/hub.md", "exec"), {})
    name, probability, shape = capsys.readouterr().out.split(maxsplit=2)
    assert name == predicted and 0 < float(probability) <= 1 and shape.strip() == "(80000,)"
    assert len(hub.requests) == requests  # the converted model is reused
