"""The paper's experiments on bible12: `run.py` (command line), `matrix.py` / `regime.py` (the families as data),
`runner.py` (running), `analysis.py` (statistics), `render.py` (RESULTS.md)."""
