"""Run options shared by every part that runs a model: device, precision, autocast, and
the progress callback type.

torch is imported inside the functions, so a front end can import this module (and the
CLI can answer ``--help``) without loading it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import RetrievalError, UnknownNameError

if TYPE_CHECKING:
    import torch

__all__ = ["DECODE_MODES", "DENOISE_AT", "PRECISIONS", "RUNTIMES", "EngineOptions", "Progress", "autocast",
           "check_decode_mode", "check_device", "check_precision", "check_runtime", "device_kind", "no_cuda_possible",
           "resolve_device", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")  # int8: a quantised graph on the CPU (runtimes.quantize)
DECODE_MODES = ("auto", "cpu", "device")  # where JPEGs are decoded: auto (on a GPU, there), cpu, device
DENOISE_AT = ("query", "index", "both")  # when an Engine cleans images with its denoiser
# What runs the network (retrieval.runtimes): auto (PyTorch on a GPU; on the CPU the fastest
# installed runtime whose vectors agree with PyTorch's), torch, onnx (ONNX Runtime), openvino.
RUNTIMES = ("auto", "torch", "onnx", "openvino")

Progress = Callable[[str, int, int], None]
"""Called as progress(phase, done, total) while long work runs (total 0 when unknown)."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA when a GPU is visible, else the CPU."""
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RetrievalError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu")
    return dev


def device_kind(device: str | torch.device = "auto") -> str:
    """What `device` resolves to ("cpu", "cuda", ...), without importing PyTorch where that
    can be told: a CPU named as such, or "auto" where no CUDA GPU can be visible (see
    :func:`no_cuda_possible`). A query run by an exported graph then never loads PyTorch,
    whose import is most of a cold `retrieve query`."""
    name = str(device)
    if name == "cpu" or (name == "auto" and "torch" not in sys.modules and no_cuda_possible()):
        return "cpu"
    return resolve_device(device).type


def no_cuda_possible() -> bool:
    """Whether no CUDA GPU can be visible to this process, known without loading a driver:
    on Linux the NVIDIA driver's control node is missing (/dev/nvidiactl; /dev/dxg under
    WSL2), and macOS has no CUDA. False where it cannot be told this way."""
    if sys.platform == "darwin":
        return True
    return sys.platform.startswith("linux") and not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/dxg"))


def check_precision(precision: str) -> str:
    """`precision`, if it is one of PRECISIONS.

    Raises:
        UnknownNameError: it is not.
    """
    if precision not in PRECISIONS:
        raise UnknownNameError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
    return precision


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """'auto' is bf16 on a GPU that supports it (fp16 otherwise) and fp32 on the CPU.
    `device` is a device or its kind (:func:`device_kind`).

    Raises:
        RetrievalError: int8, which a PyTorch model (training, a denoiser, ``--runtime
            torch``) does not run: only the quantised graph of an index's extractor does.
    """
    if check_precision(precision) == "int8":
        raise RetrievalError("int8 runs the extractor's quantised graph when indexing and searching on the CPU; "
                             "here choose auto, fp32, bf16 or fp16")
    if precision != "auto":
        return precision
    if (device if isinstance(device, str) else device.type) != "cuda":
        return "fp32"
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context for a resolved precision: bf16 or fp16, or off for fp32."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def check_runtime(runtime: str) -> str:
    """`runtime`, if it is one of RUNTIMES: a typo fails before a model is built."""
    if runtime not in RUNTIMES:
        raise UnknownNameError(f"unknown runtime {runtime!r}; choose {', '.join(RUNTIMES)}")
    return runtime


def check_decode_mode(mode: str) -> str:
    """The mode, if it is one of DECODE_MODES: a typo fails before any work is done."""
    if mode not in DECODE_MODES:
        raise UnknownNameError(f"unknown decode mode {mode!r}; choose {', '.join(DECODE_MODES)}")
    return mode


def check_device(device: object) -> str:
    """`device` as text, if it names a torch device kind we run on (auto, cpu, cuda[:N], mps)."""
    text = str(device)
    kind, _, ordinal = text.partition(":")
    if kind not in ("auto", "cpu", "cuda", "mps") or (ordinal and (kind != "cuda" or not ordinal.isdigit())):
        raise UnknownNameError(f"unknown device {text!r}; choose auto, cpu, cuda or cuda:N")
    return text


@dataclass(frozen=True)
class EngineOptions:
    """How an Engine runs: none of this changes the vectors, so none of it is stored in
    the bundle, and any of it may differ between two processes sharing one index.

    Every field is checked on construction, so a bad option fails before a bundle is
    created or opened.
    """

    device: str = "auto"  # auto (CUDA when visible), cpu, cuda, cuda:N
    precision: str = "auto"  # forward-pass precision: auto (bf16 on a GPU, fp32 on the CPU), fp32, bf16, fp16
    # What runs the network: auto, torch, onnx, openvino (same vectors from each); the
    # environment's RETRIEVE_RUNTIME, as for the CLI's --runtime, else auto.
    runtime: str = field(default_factory=lambda: os.environ.get("RETRIEVE_RUNTIME") or "auto")
    batch_size: int = 32  # images per forward pass when indexing
    workers: int | None = None  # decode worker processes; None: see images.batches.default_workers
    decode: str = "auto"  # where JPEGs are decoded: auto, cpu (loader workers), device
    denoise: str | os.PathLike[str] | None = None  # a `retrieve train autoencoder` checkpoint
    denoise_at: str = "both"  # which images the denoiser cleans: query, index or both
    lock_timeout: float = 30.0  # seconds a writer waits for another writer before IndexBusyError

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", check_device(self.device))
        check_precision(self.precision)
        check_runtime(self.runtime)
        check_decode_mode(self.decode)
        if self.denoise_at not in DENOISE_AT:
            raise UnknownNameError(f"unknown denoise_at {self.denoise_at!r}; choose {', '.join(DENOISE_AT)}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise RetrievalError(f"batch_size must be a positive integer, not {self.batch_size!r}")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 0):
            raise RetrievalError(f"workers must be a non-negative integer, not {self.workers!r}")
        if not isinstance(self.lock_timeout, (int, float)) or not self.lock_timeout >= 0:
            raise RetrievalError(f"lock_timeout must be a non-negative number of seconds, not {self.lock_timeout!r}")
