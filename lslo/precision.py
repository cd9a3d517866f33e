"""Numeric precision of the forward pass (training and generation): names, the `auto` rule, the autocast.

Weights stay fp32 whatever is chosen; autocast runs matmuls in the lower precision. On CPU, bf16 must be
asked for: it is faster on CPUs with bf16 instructions (AVX512-BF16, AMX) but changes results a little, and
on a CPU without them it is emulated: an LSLo step of the shipped base took 27x as long as in fp32 on an
AVX2-only AMD EPYC (measured). `fast` picks bf16 where the hardware has it (a GPU, or a CPU with bf16
instructions) and fp32 elsewhere.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import torch

from lslo.errors import LsloError

PRECISIONS = ("auto", "fast", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as oneDNN reports it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


_warned: set[str] = set()


def effective_precision(precision: str) -> str:
    """`auto` -> bf16 on a GPU that has it, else fp32; `fast` -> bf16 also on a CPU with bf16 instructions;
    fp16 only on a GPU. Explicit bf16 on a CPU without bf16 instructions runs (emulated) with a warning."""
    if precision not in PRECISIONS:
        raise LsloError(f"precision={precision}: use one of {', '.join(PRECISIONS)}")
    cuda = torch.cuda.is_available()
    if precision in ("auto", "fast"):
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if precision == "fast" and native_bf16_cpu() else "fp32"
    if precision == "fp16" and not cuda:
        raise LsloError("precision=fp16: needs a GPU; use bf16 or fp32 on CPU")
    if precision == "bf16" and not cuda and not native_bf16_cpu() and "bf16" not in _warned:
        _warned.add("bf16")
        print("lslo: warning: precision bf16 on a CPU without bf16 instructions (AVX512-BF16, AMX) is emulated and "
              "many times slower than fp32; use precision fast (bf16 only where the hardware has it) or fp32",
              file=sys.stderr)  # fmt: skip
    return precision


def autocast(precision: str, device: torch.device | str) -> Any:
    """A context that runs the forward pass on `device` in `precision` (a no-op for fp32)."""
    chosen = effective_precision(precision)
    if chosen == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=_DTYPES[chosen])
