"""Numeric precision of the forward pass (training and generation): names, the `auto` rule, the autocast.

Weights stay fp32 whatever is chosen; autocast runs matmuls in the lower precision. On CPU, bf16 must be
asked for: it is faster on CPUs with bf16 instructions (AVX512-BF16, AMX) but changes results a little.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from lslo.errors import LsloError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def effective_precision(precision: str) -> str:
    """`auto` -> bf16 on a GPU that has it, else fp32; fp16 only on a GPU."""
    if precision not in PRECISIONS:
        raise LsloError(f"precision={precision}: use one of {', '.join(PRECISIONS)}")
    cuda = torch.cuda.is_available()
    if precision == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not cuda:
        raise LsloError("precision=fp16: needs a GPU; use bf16 or fp32 on CPU")
    return precision


def autocast(precision: str, device: torch.device | str) -> Any:
    """A context that runs the forward pass on `device` in `precision` (a no-op for fp32)."""
    chosen = effective_precision(precision)
    if chosen == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=_DTYPES[chosen])
