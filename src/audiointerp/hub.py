"""Published models straight from the Hugging Face hub: download once, convert once.

>>> folder = pull("speechbrain/PIQ-ESC50")                      # doctest: +SKIP
>>> Explainer.from_pretrained("speechbrain/PIQ-ESC50")           # doctest: +SKIP

:func:`pull` downloads a known model's files one by one with
``huggingface_hub.hf_hub_download`` at a pinned revision, converts them with the safe
importer (``torch.load(weights_only=True)``, strict keys) into
``<cache>/audiointerp/<owner>--<name>/<commit>/`` and returns that checkpoint folder; later
calls at a pinned commit find it and make no request. ``huggingface_hub`` reads its
environment variables once, at import, so the endpoint, cache folder and offline mode are
read here at each call and passed to every download.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audiointerp.checkpoints import is_checkpoint
from audiointerp.errors import CheckpointError
from audiointerp.interpreters.speechbrain import PSI_FILE, import_piq
from audiointerp.models.speechbrain import HEAD_FILE, LABEL_ENCODER_FILE, read_label_encoder

DEFAULT_ENDPOINT = "https://huggingface.co"
_COMMIT = re.compile(r"[0-9a-f]{40}")
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class HubModel:
    """A published model: its repository, pinned commit, files and converter.

    Attributes:
        repo: the hub repository (also the name users pass).
        revision: the pinned commit of ``repo``.
        files: what the converter reads from ``repo``, under their published names.
        labels: ``(repository, revision, file)`` of the SpeechBrain label encoder.
        convert: ``(folder of files, out_dir, class_names, meta) -> checkpoint folder``.
    """

    repo: str
    revision: str
    files: tuple[str, ...]
    labels: tuple[str, str, str]
    convert: Callable[..., Path]


# The PIQ-ESC50 pretrainer loads its label encoder from speechbrain/cnn14-esc50.
HUB_MODELS: dict[str, HubModel] = {
    "speechbrain/PIQ-ESC50": HubModel(
        repo="speechbrain/PIQ-ESC50",
        revision="25df5defacccec561df5ce40989e4d8dece18e86",
        files=("embedding_modelft.ckpt", HEAD_FILE, PSI_FILE),
        labels=("speechbrain/cnn14-esc50", "main", LABEL_ENCODER_FILE),
        convert=import_piq,
    ),
}


def default_cache_dir() -> Path:
    """The hub cache as ``huggingface_hub`` would choose it, from the environment now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    home = os.environ.get("HF_HOME") or os.path.join(cache_home, "huggingface")
    return Path(home).expanduser() / "hub"


def default_endpoint() -> str:
    """``HF_ENDPOINT`` as set now, else the public hub."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline_from_environment() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set to a true value now."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def converted_folder(cache_dir: str | os.PathLike, name: str, commit: str) -> Path:
    """Where the converted checkpoint of ``name`` at ``commit`` lives in ``cache_dir``."""
    return Path(cache_dir) / "audiointerp" / name.replace("/", "--") / commit


def pull(
    name: str,
    revision: str | None = None,
    *,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
) -> Path:
    """Download and convert a published model once; return its checkpoint folder.

    Args:
        name: a key of :data:`HUB_MODELS`, e.g. ``"speechbrain/PIQ-ESC50"``.
        revision: commit, branch or tag of the model's repository (default: the pin).
        endpoint: hub URL (default: ``HF_ENDPOINT``, else huggingface.co).
        cache_dir: hub cache folder (default: ``HF_HUB_CACHE``, else ``HF_HOME/hub``).
        offline: use only the cache (default: ``HF_HUB_OFFLINE``).

    Raises:
        CheckpointError: an unknown name, a download that failed (no network, 404...),
            files missing from the cache offline, or files the importer refuses; the
            message names the repository and file.
    """
    if name not in HUB_MODELS:
        raise CheckpointError(f"{name}: not a known hub model (known: {', '.join(HUB_MODELS)})")
    model = HUB_MODELS[name]
    revision = revision or model.revision
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    offline = offline_from_environment() if offline is None else offline
    if _COMMIT.fullmatch(revision) and is_checkpoint(converted_folder(cache, name, revision)):
        return converted_folder(cache, name, revision)
    label_repo, label_revision, label_file = model.labels
    wanted = [(model.repo, revision, file) for file in model.files]
    wanted.append((label_repo, label_revision, label_file))
    endpoint = (endpoint or default_endpoint()).rstrip("/")
    paths = _download_all(wanted, endpoint, cache, offline)
    source = paths[0].parent  # snapshots/<commit>/, where every model file now is
    commit = source.name
    folder = converted_folder(cache, name, commit)
    if is_checkpoint(folder):
        return folder
    try:
        class_names = read_label_encoder(paths[-1])
        hub = {"repo": model.repo, "revision": commit, "files": list(model.files)}
        hub["labels"] = {"repo": label_repo, "revision": paths[-1].parent.name, "file": label_file}
        return model.convert(source, folder, class_names, {"hub": hub})
    except CheckpointError as error:
        raise CheckpointError(f"{model.repo}@{commit[:12]}: cannot convert: {error}") from error


def _download_all(
    files: Sequence[tuple[str, str, str]], endpoint: str, cache_dir: Path, offline: bool
) -> list[Path]:
    """Local paths of ``(repo, revision, file)``s; offline, one error lists every missing one."""
    from huggingface_hub.errors import LocalEntryNotFoundError  # the hub client loads lazily

    paths, missing = [], []
    for repo, revision, file in files:
        try:
            paths.append(_download(repo, revision, file, endpoint, cache_dir, offline))
        except LocalEntryNotFoundError:  # raised by _download only when offline
            missing.append(f"{repo}/{file}@{_short(revision)}")
    if missing:
        raise CheckpointError(
            f"offline (HF_HUB_OFFLINE or --offline) and not in the cache {cache_dir}: "
            f"{', '.join(missing)}; run `audiointerp pull` once with network"
        )
    return paths


def _download(
    repo: str, revision: str, file: str, endpoint: str, cache_dir: Path, offline: bool
) -> Path:
    """One file from the hub cache or the endpoint; failures become one named line."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        path = hf_hub_download(
            repo,
            file,
            revision=revision,
            endpoint=endpoint,
            cache_dir=cache_dir,
            local_files_only=offline,
        )
    except LocalEntryNotFoundError:
        if offline:
            raise
        reason = f"cannot reach {endpoint} and the file is not in the cache {cache_dir}"
        raise CheckpointError(f"{repo}/{file}@{_short(revision)}: {reason}") from None
    except (OSError, ValueError, EntryNotFoundError) as error:
        reason = _first_line(error)
        raise CheckpointError(f"{repo}/{file}@{_short(revision)}: {reason}") from error
    return Path(path)


def _short(revision: str) -> str:
    return revision[:12] if _COMMIT.fullmatch(revision) else revision


def _first_line(error: BaseException) -> str:
    """The HTTP status or the first line of ``error`` (hub errors span several lines)."""
    response: Any = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None:
        return f"HTTP {status} from {response.request.url}"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
