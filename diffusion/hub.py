"""Hugging Face Hub I/O: find a model folder locally or download it, and upload one."""

from __future__ import annotations

import os
from pathlib import Path

import huggingface_hub
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

# A text model keeps its SpriteCLIP in a text_encoder/ sub-folder, a latent model its SpriteVAE
# in autoencoder/.
MODEL_FILES = ("config.json", "model.safetensors", "README.md", "text_encoder/*", "autoencoder/*")


def resolve_model_dir(name: str | os.PathLike) -> Path:
    """A local model folder as is, else the snapshot of the Hub model repo ``name``.

    Raises FileNotFoundError, with the reason, when it is neither.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    try:
        validate_repo_id(os.fspath(name))
    except HFValidationError:
        raise FileNotFoundError(f"no model folder at {path}") from None
    try:
        return Path(huggingface_hub.snapshot_download(os.fspath(name), allow_patterns=MODEL_FILES))
    except Exception as err:  # offline, unknown repo, gated repo, network: all mean "not found"
        raise FileNotFoundError(
            f"{name!r} is neither a local model folder nor a model repo on the Hugging Face Hub "
            f"that could be downloaded ({type(err).__name__}: {err})"
        ) from err


def push_to_hub(folder: str | os.PathLike, repo_id: str, private: bool = False) -> str:
    """Upload a saved model folder to the Hub model repo ``repo_id``; returns its URL."""
    api = huggingface_hub.HfApi()
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=os.fspath(folder), allow_patterns=MODEL_FILES)
    return str(url)
