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
