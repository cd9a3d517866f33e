"""The precision rule: `fast` takes bf16 only where the hardware computes it; emulated bf16 on a CPU warns."""

from __future__ import annotations

import pytest

from lslo import precision
from lslo.errors import LsloError


@pytest.mark.parametrize(("native", "want"), [(True, "bf16"), (False, "fp32")])
def test_fast_is_bf16_only_on_a_cpu_with_bf16_instructions(monkeypatch, native, want):
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "native_bf16_cpu", lambda: native)
    assert precision.effective_precision("fast") == want
    assert precision.effective_precision("auto") == "fp32"  # auto stays fp32 on every CPU (tests rely on it)


def test_emulated_bf16_runs_but_warns_once(monkeypatch, capsys):
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "native_bf16_cpu", lambda: False)
    monkeypatch.setattr(precision, "_warned", set())
    assert precision.effective_precision("bf16") == "bf16"  # asked for explicitly: honoured
    assert precision.effective_precision("bf16") == "bf16"
    err = capsys.readouterr().err
    assert err.count("lslo: warning: precision bf16 on a CPU without bf16 instructions") == 1
    assert "use precision fast" in err
    monkeypatch.setattr(precision, "native_bf16_cpu", lambda: True)
    monkeypatch.setattr(precision, "_warned", set())
    precision.effective_precision("bf16")
    assert capsys.readouterr().err == ""
    with pytest.raises(LsloError, match="precision=fast16: use one of auto, fast, fp32, bf16, fp16"):
        precision.effective_precision("fast16")


def test_native_bf16_cpu_answers_a_bool():
    assert isinstance(precision.native_bf16_cpu(), bool)
