"""Imported first by a benchmark script run by its path, `python benchmarks/X.py`.

Run that way, Python puts `benchmarks/` itself on `sys.path`, not the repository root, so `benchmarks` would not
import as the package it is. This puts the root first. Run as `python -m benchmarks.X`, or imported (the tests),
a script does not import this module: the root is on the path already.
"""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
