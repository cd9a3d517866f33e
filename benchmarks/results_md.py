"""Shared bits of the benchmarks: machine description and the generated sections of RESULTS.md."""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
from pathlib import Path

import torch

from lslo.io import write_text

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "RESULTS.md"
HEADER = (
    "# Benchmark results\n\nEvery number below is generated from the JSON next to it by the command its section names;"
    " nothing is typed in.\n"
)


def machine() -> dict:
    """Where and when a benchmark ran: host, CPU/GPU, library versions, git commit, UTC date."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit, dirty = "unknown", ""
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": commit + ("+dirty" if dirty else ""),
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    model = _cpu_model()
    if model:
        info["cpu_model"] = model
    from lslo.precision import native_bf16_cpu

    info["cpu_bf16"] = native_bf16_cpu()  # False: bf16 autocast on this CPU is emulated (other kernels, slower)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _cpu_model() -> str | None:
    """The CPU's model name (Linux `/proc/cpuinfo`), e.g. "AMD EPYC 7B13"; None where it cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def update_section_in(md: str | os.PathLike | None, name: str, body: str) -> Path:
    """`update_section` on the file `md` (None: RESULTS.md); returns the file written."""
    global RESULTS_MD
    default = RESULTS_MD
    RESULTS_MD = Path(md) if md else default
    try:
        update_section(name, body)
        return RESULTS_MD
    finally:
        RESULTS_MD = default


def update_section(name: str, body: str) -> None:
    """Replace (or append) the section between `<!-- begin NAME -->` and `<!-- end NAME -->`."""
    text = RESULTS_MD.read_text(encoding="utf-8") if RESULTS_MD.exists() else HEADER
    block = f"<!-- begin {name} -->\n{body.rstrip()}\n<!-- end {name} -->"
    pattern = re.compile(rf"<!-- begin {re.escape(name)} -->.*?<!-- end {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    write_text(RESULTS_MD, text)
