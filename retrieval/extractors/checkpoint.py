"""The checkpoint format: a folder any extractor path can point at.

::

    OUT/model.safetensors   weights of the best epoch (what extractors load)
    OUT/config.json         what the network is, how it embeds, how it was trained
    OUT/last.safetensors    weights after the latest epoch     } only while training
    OUT/resume.pt           optimizer, schedule, epoch, history } can be resumed

safetensors holds tensors only and cannot run code when read, so a checkpoint from
someone else is safe to load; the JSON is readable without torch. Each file is written
to a temporary name and renamed, so an interrupted save leaves the previous one whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import RetrievalError

__all__ = ["FORMAT", "MODEL_FILE", "CONFIG_FILE", "checkpoint_dir", "read_config", "load_model", "save_model",
           "save_resume", "load_resume", "has_resume", "write_config"]

FORMAT = "retrieve-checkpoint"
VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LAST_FILE = "last.safetensors"
RESUME_FILE = "resume.pt"


def checkpoint_dir(path: str | os.PathLike[str]) -> Path:
    """The checkpoint folder for a path to it or to one of its files."""
    p = Path(path).expanduser()
    return p.parent if p.is_file() else p


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's JSON config.

    Raises:
        RetrievalError: no checkpoint there, or not one this version can read.
    """
    folder = checkpoint_dir(path)
    file = folder / CONFIG_FILE
    if not file.is_file() or not (folder / MODEL_FILE).is_file():
        raise RetrievalError(f"no trained checkpoint at {path} (expected {CONFIG_FILE} and {MODEL_FILE}; "
                             "`retrieve train` writes them)")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise RetrievalError(f"cannot read {file}: {e}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise RetrievalError(f"{file} is not a retrieve checkpoint config")
    if config.get("version", 0) > VERSION:
        raise RetrievalError(f"{file} was written by a newer version of retrieve (format {config['version']})")
    return config


def load_model(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, config) of a checkpoint's best weights, on the CPU."""
    config = read_config(path)
    return _load_tensors(checkpoint_dir(path) / MODEL_FILE), config


def save_model(folder: str | os.PathLike[str], state: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Write the weights and config that extractors load (the best epoch so far)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _save_tensors(state, folder / MODEL_FILE)
    write_config(folder, config)


def write_config(folder: str | os.PathLike[str], config: dict[str, Any]) -> None:
    """(Re)write the JSON config beside the weights, e.g. with the finished run's history."""
    text = json.dumps({"format": FORMAT, "version": VERSION, **config}, indent=2)
    _atomic_write(Path(folder) / CONFIG_FILE, text)


def save_resume(folder: str | os.PathLike[str], state: dict[str, torch.Tensor], progress: dict[str, Any]) -> None:
    """Write the latest weights and the trainer's own state (optimizer, epoch, history)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _save_tensors(state, folder / LAST_FILE)
    tmp = folder / (RESUME_FILE + ".tmp")
    torch.save(progress, tmp)
    os.replace(tmp, folder / RESUME_FILE)


def has_resume(folder: str | os.PathLike[str]) -> bool:
    return (Path(folder) / RESUME_FILE).is_file() and (Path(folder) / LAST_FILE).is_file()


def load_resume(folder: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(latest weights, trainer state) saved by :func:`save_resume`.

    Raises:
        RetrievalError: there is nothing to resume in `folder`.
    """
    folder = Path(folder)
    if not has_resume(folder):
        raise RetrievalError(f"nothing to resume in {folder} (no {RESUME_FILE}: a finished run keeps it only with "
                             "--keep-resume); start without --resume")
    progress = torch.load(folder / RESUME_FILE, map_location="cpu", weights_only=True)
    return _load_tensors(folder / LAST_FILE), progress


def _save_tensors(state: dict[str, torch.Tensor], file: Path) -> None:
    tmp = file.with_name(file.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
    os.replace(tmp, file)


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except Exception as e:  # safetensors raises its own error types for a damaged file
        raise RetrievalError(f"cannot read weights {file}: {e}") from None


def _atomic_write(file: Path, text: str) -> None:
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, file)
