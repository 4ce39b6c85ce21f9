"""Engine options (retrieval/options.py): bad values are refused when the options are
built, and the device and precision resolve from what the machine reports (simulated)."""

from __future__ import annotations

import pytest
import torch

from retrieval import RetrievalError
from retrieval.extractors import resolve_device
from retrieval.options import EngineOptions, resolve_precision


@pytest.mark.parametrize("option", [{"decode": "gpu"}, {"denoise_at": "later"}, {"precision": "fp8"},
                                    {"batch_size": 0}, {"workers": -1}, {"device": "gpu"}, {"lock_timeout": -1}])
def test_bad_engine_options_are_refused_on_construction(option: dict) -> None:
    with pytest.raises(RetrievalError):
        EngineOptions(**option)


def test_device_and_precision_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"
    with pytest.raises(RetrievalError, match="precision"):
        resolve_precision("int4", torch.device("cpu"))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(RetrievalError, match="no CUDA GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"


def test_a_cpu_only_machine_resolves_auto_without_loading_pytorch() -> None:
    """What lets a query run by an exported graph skip PyTorch's import (most of a cold query)."""
    import subprocess
    import sys

    code = ("import sys; from retrieval.options import device_kind, no_cuda_possible; "
            "kinds = device_kind('cpu'), device_kind('auto'); print(kinds[0], kinds[1], no_cuda_possible(), "
            "'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "cpu"
    if out[2] == "True":  # no NVIDIA device node here (CI): auto is the CPU, and PyTorch stayed out
        assert out[1:] == ["cpu", "True", "False"]
    else:  # a GPU machine: auto asks PyTorch, which then is loaded
        assert out[3] == "True"
