"""Registry entries whose factory is named by a string: declared and checked without
importing it, imported when first built."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import pytest

from retrieval.errors import RetrievalError, UnknownNameError
from retrieval.registry import Param, Registry


def test_a_factory_named_by_a_string_is_imported_when_first_built() -> None:
    numbers: Registry[Fraction] = Registry("number")
    numbers.add("fraction", "fractions:Fraction", params={"denominator": Param(int, low=1, default=1)})
    assert numbers.names() == ["fraction"] and numbers.resolve("fraction") == {"denominator": 1}
    with pytest.raises(RetrievalError, match="expected an integer of at least 1"):
        numbers.check("fraction", {"denominator": 0})
    assert numbers.create("fraction", {"denominator": 4}, 3) == Fraction(3, 4)
    assert numbers.entry("fraction").factory is Fraction
    with pytest.raises(UnknownNameError, match="unknown number 'float'; choose fraction"):
        numbers.entry("float")


def test_configs_and_their_poolings_are_checked_without_torch() -> None:
    probe = """
import sys
from retrieval.errors import RetrievalError
from retrieval.extractors import ExtractorConfig, Manifest
from retrieval.extractors.pooling import POOLINGS
assert ExtractorConfig(pooling="gem").pooling_params == {"p": 3.0}
try:
    ExtractorConfig(pooling="gem", pooling_params={"p": 99})
except RetrievalError:
    pass
else:
    raise AssertionError("p=99 was accepted")
assert POOLINGS.names() == ["gem", "avg", "max", "rmac"]
print("torch" in sys.modules)
"""
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stdout) == (0, "False\n"), run.stderr
