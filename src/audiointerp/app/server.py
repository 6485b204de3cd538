"""`audiointerp serve`: a local page and JSON API to listen to explanations (Starlette/ASGI).

Routes:
    ``GET /``                   the page (static/, no external assets)
    ``GET /api/models``         models (name, method, classes), demo examples, limits, report
    ``POST /api/explain``       multipart: ``file`` or ``example``, ``model``, ``target``,
                                ``top_k``, ``wait`` (default 1: answer with the result; 0:
                                answer 202 with the job to poll)
    ``GET /api/jobs/{id}``      a job's state and window progress, its result once done
    ``GET /results/{id}/{name}`` a result's WAVs and PNGs
    ``GET /report/...``         an existing evaluation report (``--report DIR``)

Uploads and results live in one temporary folder, made when the server starts and removed
when it stops; files are named by generated ids, never by anything in the request.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import soundfile as sf
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audiointerp.app.jobs import JobQueue, QueueFull
from audiointerp.errors import AudioError, UserError
from audiointerp.io import AUDIO_EXTENSIONS, find_audio_files, load_audio_with_rate, save_audio
from audiointerp.longaudio import plan_windows
from audiointerp.pipeline import Explainer, Explanation
from audiointerp.report.figures import explanation_pngs

STATIC = Path(__file__).resolve().parent / "static"
AUDIO_FILES = ("input", "explanation", "removed")
IMAGE_FILES = ("input", "explanation", "removed", "mask")
# The page's own assets only: nothing from elsewhere may load, even if injected.
CONTENT_POLICY = "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; larger requests get a 413 or 400 with the limit named.

    Attributes:
        max_upload_mb: request body size (the uploaded file and the form).
        max_seconds: duration of the audio to explain.
        max_waiting: explanations queued behind the running one; more get a 503.
        max_results: results kept on disk; older ones are deleted.
    """

    max_upload_mb: float = 50.0
    max_seconds: float = 300.0
    max_waiting: int = 8
    max_results: int = 32


@dataclass
class _State:
    """What the routes share: models, limits, the job queue and the temporary folder."""

    models: dict[str, Explainer]
    examples: dict[str, Path]
    limits: Limits
    report: Path | None
    jobs: JobQueue
    root: Path | None = None
    results: OrderedDict[str, dict[str, Path]] = field(default_factory=OrderedDict)


class BodyTooLarge(UserError):
    """A request body over ``Limits.max_upload_mb``."""


class _BodyLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` (declared or streamed) with a 413."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _error(str(self._error()), 413)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise self._error()
            return message

        await self.app(scope, limited, send)

    def _error(self) -> BodyTooLarge:
        return BodyTooLarge(
            f"upload too large: over {self.max_bytes / 1e6:g} MB (the server's --max-upload-mb)"
        )


def model_names(folders: Sequence[str | os.PathLike]) -> list[str]:
    """A short unique name per model folder: its name, or its run's for a ``model/`` folder."""
    names: list[str] = []
    for folder in map(Path, folders):
        folder = folder.resolve()
        base = folder.parent.name if folder.name == "model" else folder.name
        name, copy = base, 1
        while name in names:
            copy += 1
            name = f"{base}-{copy}"
        names.append(name)
    return names


def load_models(folders: Sequence[str | os.PathLike]) -> dict[str, Explainer]:
    """Load each interpreter checkpoint or run folder (CheckpointError on a bad one)."""
    return {
        name: Explainer.from_pretrained(folder)
        for name, folder in zip(model_names(folders), folders, strict=True)
    }


def create_app(
    models: dict[str, Explainer],
    report: str | os.PathLike | None = None,
    examples: str | os.PathLike | None = None,
    limits: Limits = Limits(),
) -> Starlette:
    """The ASGI app serving ``models`` (name -> explainer), in the order given.

    Args:
        report: a folder holding an evaluation report's ``index.html``, served at /report/.
        examples: a folder of audio files the page offers instead of an upload.

    Raises:
        UserError: no models, or a report/examples folder that cannot be served.
    """
    if not models:
        raise UserError("serve needs at least one model folder")
    report_dir = Path(report) if report is not None else None
    if report_dir is not None and not (report_dir / "index.html").is_file():
        raise UserError(f"{report_dir}: no index.html; build it with `audiointerp report RUN_DIR`")
    example_files: dict[str, Path] = {}
    if examples is not None:
        if not Path(examples).is_dir():
            raise UserError(f"{examples}: no such folder of example audio files")
        for path in find_audio_files(examples):
            example_files[path.relative_to(examples).as_posix()] = path
    state = _State(
        models, example_files, limits, report_dir, JobQueue(limits.max_waiting, limits.max_results)
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.root = Path(tempfile.mkdtemp(prefix="audiointerp-serve-"))
        state.jobs.start()
        try:
            yield
        finally:
            state.jobs.stop()
            shutil.rmtree(state.root, ignore_errors=True)

    routes: list[Route | Mount] = [
        Route("/", lambda request: _page(), methods=["GET"]),
        Route("/api/models", lambda request: JSONResponse(_models(state)), methods=["GET"]),
        Route("/api/explain", _explain_route(state), methods=["POST"]),
        Route("/api/jobs/{job_id}", _job_route(state), methods=["GET"]),
        Route("/results/{result_id}/{name}", _file_route(state), methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    if report_dir is not None:
        routes.append(Mount("/report", StaticFiles(directory=report_dir, html=True)))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            BodyTooLarge: lambda request, error: _error(str(error), 413),
            HTTPException: lambda request, error: _error(error.detail, error.status_code),
        },
    )
    app.add_middleware(_BodyLimit, max_bytes=round(limits.max_upload_mb * 1e6))
    return app


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _page() -> Response:
    return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": CONTENT_POLICY})


def _models(state: _State) -> dict[str, Any]:
    return {
        "models": [
            {
                "name": name,
                "method": explainer.interpreter.registry_name,
                "classes": explainer.class_names,
                # False: the method explains only the prediction (the page offers no choice)
                "any_target": explainer.interpreter.capabilities.any_target,
                "sample_rate": explainer.sample_rate,
                "window_seconds": explainer.window / explainer.sample_rate,
            }
            for name, explainer in state.models.items()
        ],
        "examples": list(state.examples),
        "report": "/report/" if state.report is not None else None,
        "limits": {
            "max_upload_mb": state.limits.max_upload_mb,
            "max_seconds": state.limits.max_seconds,
        },
    }


def _explain_route(state: _State) -> Callable[[Request], Any]:
    async def explain(request: Request) -> Response:
        form = await request.form(max_files=1, max_fields=8)
        try:
            model, explainer = _pick_model(state, form.get("model"))
            target = str(form.get("target") or "") or None
            if target is not None:
                explainer.class_index(target)
            top_k = _top_k(form.get("top_k"), len(explainer.class_names))
            audio, rate, source = await _read_audio(state, form.get("file"), form.get("example"))
        except UserError as error:
            return _error(str(error), 400)
        finally:
            await form.close()
        result_id = uuid.uuid4().hex
        assert state.root is not None, "the app's lifespan has not started"
        folder = state.root / "results" / result_id

        def task(progress: Callable[[int, int], None]) -> dict[str, Any]:
            explanation = _explain_with_progress(
                explainer, audio, rate, target, top_k, progress, source
            )
            _keep_result(state, result_id, _write_result(explainer, explanation, audio, folder))
            return _result_json(result_id, model, explainer, explanation, source)

        try:
            job = state.jobs.submit(task)
        except QueueFull as error:
            return _error(str(error), 503)
        if str(form.get("wait", "1")) == "0":
            return JSONResponse({**job.to_dict(), "status_url": f"/api/jobs/{job.id}"}, 202)
        await anyio.to_thread.run_sync(job.finished.wait)
        if job.error is not None:
            return _error(job.error, job.status)
        return JSONResponse(job.result)

    return explain


def _job_route(state: _State) -> Callable[[Request], Any]:
    async def job_status(request: Request) -> Response:
        job = state.jobs.get(request.path_params["job_id"])
        if job is None:
            return _error("no such job (finished jobs are kept for a while only)", 404)
        return JSONResponse({**job.to_dict(), "position": state.jobs.position(job)})

    return job_status


def _file_route(state: _State) -> Callable[[Request], Any]:
    async def result_file(request: Request) -> Response:
        files = state.results.get(request.path_params["result_id"], {})
        path = files.get(request.path_params["name"])  # looked up, never joined
        if path is None or not path.is_file():
            return _error("no such result file (older results are deleted)", 404)
        return FileResponse(path)

    return result_file


def _pick_model(state: _State, name: Any) -> tuple[str, Explainer]:
    name = str(name or next(iter(state.models)))
    if name not in state.models:
        raise UserError(f"unknown model {name!r}; available: {', '.join(state.models)}")
    return name, state.models[name]


def _top_k(value: Any, n_classes: int) -> int:
    if value is None or value == "":
        return min(5, n_classes)
    text = str(value)
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"top_k must be a positive integer, got {text!r}")
    return min(int(text), n_classes)


async def _read_audio(state: _State, upload: Any, example: Any) -> tuple[np.ndarray, int, str]:
    """The request's audio as mono (N,) float32, its rate and the name to show for it."""
    if isinstance(upload, UploadFile) and (upload.filename or upload.size):
        source = upload.filename or "upload"
        data = await upload.read()
        if not data:
            raise AudioError(source, "the file is empty")
        suffix = Path(source).suffix.lower()
        assert state.root is not None, "the app's lifespan has not started"
        path = (
            state.root
            / "uploads"
            / (uuid.uuid4().hex + (suffix if suffix in AUDIO_EXTENSIONS else ""))
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        try:
            audio, rate = await anyio.to_thread.run_sync(_decode, path, source, state.limits)
        finally:
            path.unlink(missing_ok=True)
        return audio, rate, source
    if example:
        path = state.examples.get(str(example))  # looked up, never joined
        if path is None:
            raise UserError(f"unknown example {str(example)!r}; see GET /api/models")
        audio, rate = await anyio.to_thread.run_sync(_decode, path, str(example), state.limits)
        return audio, rate, str(example)
    raise UserError("send an audio file (form field 'file') or an example name ('example')")


def _decode(path: Path, source: str, limits: Limits) -> tuple[np.ndarray, int]:
    """Read ``path`` at its own rate; AudioError (naming ``source``) if bad or too long."""
    try:
        info = sf.info(str(path))
        seconds = info.frames / info.samplerate
    except Exception:  # unreadable: load_audio_with_rate says why
        seconds = 0.0
    try:
        if seconds <= limits.max_seconds:
            audio, rate = load_audio_with_rate(path, sample_rate=None)
            seconds = len(audio) / rate
    except AudioError as error:
        raise AudioError(source, error.reason.replace(str(path), source)) from None
    if seconds > limits.max_seconds:
        raise AudioError(
            source,
            f"too long: {seconds:.1f} s, over {limits.max_seconds:g} s (the server's "
            "--max-seconds)",
        )
    return audio, rate


def _explain_with_progress(
    explainer: Explainer,
    audio: np.ndarray,
    rate: int,
    target: str | None,
    top_k: int,
    progress: Callable[[int, int], None],
    source: str = "<array>",
) -> Explanation:
    """``explainer.explain`` reporting (windows done, windows) as the interpreter runs."""
    n_samples = round(len(audio) * explainer.sample_rate / rate)
    plan = plan_windows(n_samples, explainer.window, explainer.hop_length, explainer.overlap)
    total, calls = len(plan.starts), 0
    batch = explainer.window_batch if total > 1 else 1  # sized before the hook counts calls
    progress(0, total)

    def count(*_: Any) -> None:  # one interpreter call per batch of windows
        nonlocal calls
        calls += 1
        progress(calls * batch, total)

    handle = explainer.interpreter.register_forward_hook(count)
    try:
        explanation = explainer.explain(audio, rate, target, top_k, source)
    finally:
        handle.remove()
    progress(total, total)
    return explanation


def _write_result(
    explainer: Explainer, explanation: Explanation, audio: np.ndarray, folder: Path
) -> dict[str, Path]:
    """The result's WAVs and PNGs in ``folder``; returns file name -> path."""
    files: dict[str, Path] = {}
    rate = explanation.sample_rate
    for name, samples in zip(
        AUDIO_FILES, (audio, explanation.waveform, explanation.removed), strict=True
    ):
        files[f"{name}.wav"] = save_audio(folder / f"{name}.wav", samples, rate, subtype="FLOAT")
    pictures = explanation_pngs(
        explanation.spectrogram.astype(np.float32),
        explanation.mask.astype(np.float32),
        explainer.interpreter.mask_domain,
        len(audio) / rate,
        explanation.model_sample_rate / 2000.0,
    )
    for name, png in pictures.items():
        files[f"{name}.png"] = folder / f"{name}.png"
        files[f"{name}.png"].write_bytes(png)
    return files


def _keep_result(state: _State, result_id: str, files: dict[str, Path]) -> None:
    """Register a result; delete the oldest beyond ``Limits.max_results``."""
    state.results[result_id] = files
    while len(state.results) > state.limits.max_results:
        _, old = state.results.popitem(last=False)
        shutil.rmtree(next(iter(old.values())).parent, ignore_errors=True)


def _result_json(
    result_id: str, model: str, explainer: Explainer, explanation: Explanation, source: str
) -> dict[str, Any]:
    base = f"/results/{result_id}"
    return {
        "id": result_id,
        "source": source,
        "model": model,
        "method": explainer.interpreter.registry_name,
        "predicted": explanation.predicted,
        "probability": explanation.probability,
        "target": explanation.target,
        "top_k": [{"class": name, "probability": p} for name, p in explanation.top_k],
        "duration_s": len(explanation.waveform) / explanation.sample_rate,
        "sample_rate": explanation.sample_rate,
        "audio": {name: f"{base}/{name}.wav" for name in AUDIO_FILES},
        "images": {name: f"{base}/{name}.png" for name in IMAGE_FILES},
    }


def serve(
    model_folders: Sequence[str | os.PathLike],
    host: str = "127.0.0.1",
    port: int = 8000,
    report: str | os.PathLike | None = None,
    examples: str | os.PathLike | None = None,
    limits: Limits = Limits(),
) -> None:
    """Load the models and serve the page until interrupted (the temp folder goes with it)."""
    import uvicorn

    app = create_app(load_models(model_folders), report, examples, limits)
    shown = f"[{host}]" if ":" in host else host
    print(f"audiointerp: serving on http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"audiointerp: warning: bound to {host}: others on the network can use it")
    uvicorn.run(app, host=host, port=port, log_level="warning")
