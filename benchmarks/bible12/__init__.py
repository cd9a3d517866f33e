"""The paper's experiments on bible12: `run.py` (command line), `matrix.py` / `regime_family.py` (the families as
data), `runner.py` (running), `analysis.py` (statistics), `render.py` (RESULTS.md). The regime family: `regime.py`
(plan and runs), `regime_sweep.py`, `regime_verdicts.py`, `regime_curves.py`, `regime_render.py`."""
