"""DVC's -S key=value grammar (sweeps/overrides.py)."""

from __future__ import annotations

import pytest

from spelltune.sweeps.overrides import SweepError, format_value, parse_override


@pytest.mark.parametrize("value, text", [
    (1e-4, "0.0001"), (2e-05, "2e-05"), (16, "16"), (True, "true"), (None, "null"),
    ("cosine", "cosine"), ("/tmp/tiny model", "'/tmp/tiny model'"), (["q_proj", "v_proj"], "[q_proj,v_proj]"),
    ("true", "'true'"),
])
def test_override_values_as_dvc_reads_them(value, text):
    assert format_value(value) == text


def test_cli_overrides_are_checked():
    assert parse_override("train.lr=1e-3") == ("train.lr", 1e-3)
    assert parse_override("lora.target_modules=[q_proj, v_proj]") == ("lora.target_modules", ["q_proj", "v_proj"])
    with pytest.raises(SweepError, match="unknown params key"):
        parse_override("train.lrr=1")
