"""`audiointerp serve`'s JSON API through Starlette's test client, on tiny model folders.

The models are a tiny conv2d classifier with the ``energy`` control (a binary mask of the
loud bins, no weights) or the ``random`` one, saved in our checkpoint format: explaining a
second of audio takes milliseconds, and mask-in plus mask-out adds up to the input.
"""

from __future__ import annotations

import io
import itertools
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from starlette.testclient import TestClient

from audiointerp.app import Limits, create_app, load_models
from audiointerp.app.jobs import JobQueue
from audiointerp.app.server import _explain_with_progress
from audiointerp.checkpoints import save_checkpoint
from audiointerp.cli import main
from audiointerp.errors import UnsupportedTargetError
from audiointerp.features import FeatureConfig
from audiointerp.longaudio import plan_windows
from audiointerp.models import ClassifierConfig, build_classifier, classifier_checkpoint
from audiointerp.pipeline import Explainer

RATE = 8000
FEATURES = FeatureConfig(sample_rate=RATE, n_fft=256, hop_ms=16.0, win_ms=32.0)  # hop 128
CLASSES = ["dog", "rain", "siren"]
WINDOW_S = 0.5


def make_model(folder: Path, method: str = "energy") -> Path:
    """A tiny conv2d + ``method`` (a weightless control) checkpoint folder; 0.5-s windows."""
    torch.manual_seed(0)
    config = ClassifierConfig(dim=4, lin_neurons=8, features=FEATURES)
    tensors, config_map, meta = classifier_checkpoint(build_classifier(config, CLASSES), config)
    config_map["interpreter"] = {"name": method}
    return save_checkpoint(folder, tensors, config_map, {**meta, "duration_s": WINDOW_S})


def tone_wav(seconds: float, rate: int = 16000, channels: int = 1, freq: float = 700.0) -> bytes:
    """A WAV file's bytes: a tone with a noise floor, ``channels`` identical channels."""
    t = np.arange(round(seconds * rate)) / rate
    noise = np.random.default_rng(0).standard_normal(len(t))
    audio = (0.5 * np.sin(2 * np.pi * freq * t) + 0.02 * noise).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, np.repeat(audio[:, None], channels, axis=1), rate, format="WAV")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve-models")
    examples = root / "examples"
    (examples / "sub").mkdir(parents=True)
    (examples / "sub" / "mix.wav").write_bytes(tone_wav(0.8, RATE))
    return {
        "energy": make_model(root / "energy" / "model"),
        "random": make_model(root / "random", "random"),
        "examples": examples,
    }


@pytest.fixture(scope="module")
def models(folders: dict[str, Path]) -> dict[str, Explainer]:
    return load_models([folders["energy"], folders["random"]])


@pytest.fixture()
def client(models: dict[str, Explainer], folders: dict[str, Path]):
    with TestClient(create_app(models, examples=folders["examples"])) as test_client:
        yield test_client


def post(client: TestClient, data: bytes | None, name: str = "clip.wav", **fields: str):
    files = {"file": (name, data, "audio/wav")} if data is not None else None
    return client.post("/api/explain", files=files, data=fields)


def test_models_lists_names_methods_classes_and_examples(client: TestClient) -> None:
    info = client.get("/api/models").json()
    assert [(m["name"], m["method"]) for m in info["models"]] == [
        ("energy", "energy"),
        ("random", "random"),
    ]
    assert info["models"][0]["classes"] == CLASSES
    assert info["models"][0]["sample_rate"] == RATE
    assert info["models"][0]["window_seconds"] == pytest.approx(WINDOW_S)
    assert [m["any_target"] for m in info["models"]] == [True, True]  # controls: any class
    assert info["examples"] == ["sub/mix.wav"]
    assert info["report"] is None
    assert info["limits"] == {"max_upload_mb": 50.0, "max_seconds": 300.0}


def test_page_is_self_contained(client: TestClient) -> None:
    page = client.get("/")
    assert (
        page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    )
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text and client.get(asset).status_code == 200
    everything = (
        page.text + client.get("/static/app.js").text + client.get("/static/style.css").text
    )
    assert "http://" not in everything.replace("http://HOST", "")
    assert "https://" not in everything


def test_good_file_gives_classes_audio_and_pictures(client: TestClient) -> None:
    wav = tone_wav(1.3, RATE, channels=2)  # stereo, 4 windows
    reply = post(client, wav, top_k="2")
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["model"] == "energy" and result["method"] == "energy"
    assert result["predicted"] in CLASSES and result["target"] == result["predicted"]
    assert [entry["class"] for entry in result["top_k"]][0] == result["predicted"]
    assert len(result["top_k"]) == 2
    probabilities = [entry["probability"] for entry in result["top_k"]]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6
    assert result["probability"] == pytest.approx(probabilities[0])
    assert result["duration_s"] == pytest.approx(1.3) and result["sample_rate"] == RATE
    assert result["source"] == "clip.wav"

    audio = {}
    for name, url in result["audio"].items():
        response = client.get(url)
        assert response.status_code == 200
        audio[name], rate = sf.read(io.BytesIO(response.content), dtype="float32")
        assert rate == RATE and audio[name].shape == (round(1.3 * RATE),)
    expected, _ = sf.read(io.BytesIO(wav), dtype="float32")
    np.testing.assert_allclose(audio["input"], expected.mean(axis=1), atol=1e-4)
    # a binary linear-domain mask: what is kept plus what is removed is the input
    np.testing.assert_allclose(audio["explanation"] + audio["removed"], audio["input"], atol=2e-3)
    assert np.abs(audio["removed"]).max() > 1e-3 and np.abs(audio["explanation"]).max() > 0.1

    assert set(result["images"]) == {"input", "explanation", "removed", "mask"}
    for url in result["images"].values():
        png = client.get(url).content
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


@pytest.mark.parametrize(
    ("name", "fmt"), [("clip.flac", "FLAC"), ("clip.ogg", "OGG"), ("x", "WAV")]
)
def test_other_formats_are_read(client: TestClient, name: str, fmt: str) -> None:
    buffer = io.BytesIO()
    audio, _ = sf.read(io.BytesIO(tone_wav(0.7, 22050)), dtype="float32")
    sf.write(buffer, audio, 22050, format=fmt)
    reply = post(client, buffer.getvalue(), name=name)
    assert reply.status_code == 200, reply.text
    assert reply.json()["sample_rate"] == 22050 and reply.json()["duration_s"] == pytest.approx(0.7)


def test_target_model_and_example_are_honoured(client: TestClient) -> None:
    reply = client.post(
        "/api/explain", data={"example": "sub/mix.wav", "model": "random", "target": "siren"}
    )
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert (result["model"], result["method"], result["target"]) == ("random", "random", "siren")
    assert result["source"] == "sub/mix.wav" and result["duration_s"] == pytest.approx(0.8)
    assert len(result["top_k"]) == 3


@pytest.mark.parametrize(
    ("data", "fields", "status", "message"),
    [
        (b"", {}, 400, "clip.wav: the file is empty"),
        (
            b"this is not audio at all" * 10,
            {},
            400,
            "clip.wav: not an audio file soundfile can read",
        ),
        (b"RIFF\0\0\0\0WAVE", {}, 400, "clip.wav: not an audio file soundfile can read"),
        (tone_wav(3.5), {}, 400, "clip.wav: too long: 3.5 s, over 3 s"),
        (tone_wav(0.5), {"model": "lmac"}, 400, "unknown model 'lmac'; available: energy, random"),
        (tone_wav(0.5), {"target": "cat"}, 400, "unknown target class 'cat'; valid: dog, rain"),
        (tone_wav(0.5), {"top_k": "-1"}, 400, "top_k must be a positive integer"),
        (None, {}, 400, "send an audio file (form field 'file') or an example name"),
        (None, {"example": "../../etc/passwd"}, 400, "unknown example '../../etc/passwd'"),
        (
            np.zeros(400, np.int16).tobytes(),
            {},
            400,
            "clip.wav: not an audio file soundfile can read",
        ),
    ],
)
def test_bad_requests_get_one_clear_line(
    models: dict[str, Explainer],
    data: bytes | None,
    fields: dict[str, str],
    status: int,
    message: str,
) -> None:
    with TestClient(create_app(models, limits=Limits(max_seconds=3.0))) as client:
        reply = post(client, data, **fields)
        assert reply.status_code == status, reply.text
        assert reply.json()["error"].startswith(message), reply.json()
        assert "audiointerp-serve-" not in reply.json()["error"]  # no server paths
        assert post(client, tone_wav(0.6)).status_code == 200  # still serving


def test_silent_audio_is_an_error_from_the_explainer(client: TestClient) -> None:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(4000, np.float32), RATE, format="WAV")
    reply = post(client, buffer.getvalue(), name="quiet.wav")
    assert reply.status_code == 400
    assert reply.json()["error"] == "quiet.wav: audio is silent (all zeros): nothing to explain"


def test_too_large_uploads_get_413(models: dict[str, Explainer]) -> None:
    with TestClient(create_app(models, limits=Limits(max_upload_mb=0.05))) as client:
        reply = post(client, tone_wav(2.0))  # 64 kB
        assert reply.status_code == 413
        assert reply.json()["error"] == (
            "upload too large: over 0.05 MB (the server's --max-upload-mb)"
        )

        def chunks():  # no Content-Length: the streamed body is counted
            yield b"--x\r\nContent-Disposition: form-data; name=file; filename=a.wav\r\n\r\n"
            for _ in range(20):
                yield b"\0" * 10_000

        reply = client.post(
            "/api/explain",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
        assert reply.status_code == 413
        assert post(client, tone_wav(0.5)).status_code == 200


class _Unsupported(Explainer):
    """Explains only the predicted class, like a method without ``any_target``."""

    def explain(self, waveform, sample_rate, target=None, top_k=5, source="<array>"):
        if target is not None:
            raise UnsupportedTargetError(f"method cannot explain {target!r}: only the prediction")
        return super().explain(waveform, sample_rate, top_k=top_k, source=source)


def test_a_method_that_cannot_explain_another_class_says_so(folders: dict[str, Path]) -> None:
    explainer = _Unsupported.from_pretrained(folders["energy"])
    with TestClient(create_app({"only": explainer})) as client:
        reply = post(client, tone_wav(0.6), target="rain")
        assert reply.status_code == 400
        assert reply.json()["error"] == "method cannot explain 'rain': only the prediction"
        assert post(client, tone_wav(0.6)).status_code == 200


def test_result_files_are_looked_up_by_id_only(client: TestClient) -> None:
    result = post(client, tone_wav(0.6)).json()
    base = result["audio"]["input"].rsplit("/", 1)[0]
    assert client.get(f"{base}/input.wav").status_code == 200
    for url in (
        f"{base}/mask.npy",
        f"{base}/..%2F..%2Fetc%2Fpasswd",
        "/results/0123456789abcdef/input.wav",
        "/results/..%2F..%2F/input.wav",
    ):
        reply = client.get(url)
        assert reply.status_code == 404, url
    assert client.get("/api/jobs/nope").status_code == 404


def test_old_results_are_deleted_beyond_the_limit(models: dict[str, Explainer]) -> None:
    with TestClient(create_app(models, limits=Limits(max_results=2))) as client:
        urls = [post(client, tone_wav(0.6)).json()["audio"]["input"] for _ in range(3)]
        assert [client.get(url).status_code for url in urls] == [404, 200, 200]


def test_temporary_folder_is_removed_on_exit(
    models: dict[str, Explainer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with TestClient(create_app(models)) as client:
        assert post(client, tone_wav(0.6)).status_code == 200
        (root,) = tmp_path.iterdir()
        assert root.name.startswith("audiointerp-serve-")
        assert sorted(p.name for p in (root / "results").iterdir()) != []
        assert list((root / "uploads").iterdir()) == []  # decoded, then deleted
    assert list(tmp_path.iterdir()) == []


class _Counting(Explainer):
    """Records how many explanations run at once (each holds on for a moment)."""

    running = 0
    most = 0
    lock = threading.Lock()

    def explain(self, *args, **kwargs):
        with self.lock:
            type(self).running += 1
            type(self).most = max(type(self).most, type(self).running)
        time.sleep(0.05)
        try:
            return super().explain(*args, **kwargs)
        finally:
            with self.lock:
                type(self).running -= 1


def test_concurrent_requests_queue_one_at_a_time(folders: dict[str, Path]) -> None:
    explainer = _Counting.from_pretrained(folders["energy"])
    with TestClient(create_app({"energy": explainer})) as client:
        replies: list = [None] * 4

        def request(index: int) -> None:
            replies[index] = post(client, tone_wav(0.4 + 0.1 * index), target=CLASSES[index % 3])

        threads = [threading.Thread(target=request, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert [reply.status_code for reply in replies] == [200] * 4
    results = [reply.json() for reply in replies]
    assert [r["duration_s"] for r in results] == pytest.approx([0.4, 0.5, 0.6, 0.7])
    assert [r["target"] for r in results] == ["dog", "rain", "siren", "dog"]
    assert len({r["id"] for r in results}) == 4
    assert _Counting.most == 1


class _Gated(Explainer):
    """Waits for ``gate`` before explaining, so a test can hold the queue full."""

    gate = threading.Event()

    def explain(self, *args, **kwargs):
        assert self.gate.wait(timeout=30)
        return super().explain(*args, **kwargs)


def _wait_for(client: TestClient, job: str, states: tuple[str, ...]) -> dict:
    for _ in range(400):
        status = client.get(f"/api/jobs/{job}").json()
        if status["state"] in states:
            return status
        time.sleep(0.02)
    raise AssertionError(status)


def test_a_full_queue_refuses_with_503_and_jobs_report_progress(folders: dict[str, Path]) -> None:
    explainer = _Gated.from_pretrained(folders["energy"])
    with TestClient(create_app({"energy": explainer}, limits=Limits(max_waiting=1))) as client:
        first = post(client, tone_wav(1.6, RATE), wait="0")
        assert first.status_code == 202 and first.json()["state"] == "queued"
        assert first.json()["status_url"] == f"/api/jobs/{first.json()['job']}"
        _wait_for(client, first.json()["job"], ("running",))
        second = post(client, tone_wav(0.6), wait="0")
        assert second.status_code == 202
        assert client.get(second.json()["status_url"]).json()["position"] == 0
        third = post(client, tone_wav(0.6), wait="0")
        assert third.status_code == 503
        assert third.json()["error"] == "1 explanations are already waiting; try again shortly"
        _Gated.gate.set()
        done = _wait_for(client, first.json()["job"], ("done", "error"))
        windows = len(plan_windows(round(1.6 * RATE), round(WINDOW_S * RATE), 128, 0.5).starts)
        assert done["state"] == "done" and done["windows_done"] == done["windows"] == windows
        assert done["result"]["duration_s"] == pytest.approx(1.6)
        assert _wait_for(client, second.json()["job"], ("done", "error"))["state"] == "done"


def test_stopping_cancels_the_running_job_at_its_next_window() -> None:
    jobs = JobQueue()
    jobs.start()
    started = threading.Event()

    def endless(progress) -> dict:
        for done in itertools.count():
            progress(done, 10**9)
            started.set()
            time.sleep(0.01)
        return {}

    running, waiting = jobs.submit(endless), jobs.submit(lambda progress: {})
    assert started.wait(timeout=10)
    jobs.stop()
    assert not jobs.worker.is_alive()
    for job in (running, waiting):
        assert (job.state, job.status, job.error) == ("error", 503, "the server is shutting down")
    assert running.windows == 10**9  # it ran until told to stop


def test_progress_counts_windows(models: dict[str, Explainer]) -> None:
    explainer = models["energy"]
    explainer.window_batch = 1  # one step a window (a budgeted batch steps by the batch)
    audio = np.sin(np.arange(3 * RATE) / 7.0).astype(np.float32)  # 3 s: 12 half-second windows
    seen: list[tuple[int, int]] = []
    _explain_with_progress(explainer, audio, RATE, None, 3, lambda *step: seen.append(step))
    total = len(plan_windows(3 * RATE, explainer.window, explainer.hop_length, 0.5).starts)
    assert total == 12
    assert seen == [(0, total)] + [(done, total) for done in range(1, total + 1)] + [(total, total)]
    assert not explainer.interpreter._forward_hooks  # the counting hook is gone


def test_report_folder_is_served(models: dict[str, Explainer], tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "index.html").write_text("<h1>audiointerp evaluation report</h1>")
    (tmp_path / "img" / "a.png").write_bytes(b"\x89PNG fake")
    with TestClient(create_app(models, report=tmp_path)) as client:
        assert client.get("/api/models").json()["report"] == "/report/"
        assert "evaluation report" in client.get("/report/").text
        assert client.get("/report/img/a.png").content == b"\x89PNG fake"
        assert client.get("/report/../../etc/passwd").status_code == 404


def test_cli_reports_bad_folders_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], folders: dict[str, Path]
) -> None:
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert (
        capsys.readouterr().err
        == f"audiointerp: error: {tmp_path / 'missing'}: no such model folder\n"
    )
    assert main(["serve", str(folders["energy"]), "--report", str(tmp_path)]) == 2
    assert "no index.html; build it with `audiointerp report RUN_DIR`" in capsys.readouterr().err
