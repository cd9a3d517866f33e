"""benchmarks/generate_compile.py on the tiny world: both copies translate the same mixed chunks; section written."""

from __future__ import annotations

import json

from benchmarks import generate_compile


def test_compiled_and_eager_generation_are_timed_on_the_same_chunks(world, tmp_path, monkeypatch):
    from lslo.run_config import TrainConfig
    from lslo.train import train

    bench = generate_compile
    monkeypatch.setattr(bench, "OUT", tmp_path / "generate_compile.json")
    monkeypatch.setattr(bench.results_md, "RESULTS_MD", tmp_path / "RESULTS.md")
    run = tmp_path / "run"
    train(TrainConfig(data=str(world / "data"), base_model=str(world / "model"), out_dir=str(run), method="lslo",
                      languages={"en": "high", "fr": "high", "sw": "low"}, valid_split=None, max_steps=1, max_tokens=96,
                      max_len=24, progress=False))  # fmt: skip
    args = [str(run), "--data", str(world / "data"), "--split", "valid", "--languages", "en", "fr", "sw", "--per-direction", "2",
            "--chunks", "2", "--beams", "2", "--threads", "1", "--backend", "aot_eager"]  # fmt: skip
    assert bench.main(args) == 0
    data = json.loads((tmp_path / "generate_compile.json").read_text())
    r = data["result"]
    assert r["items"] == 6 * 2 and r["directions"] == 6 and r["layers_compiled"] > 0
    assert r["identical"] == r["items"]  # traced and differentiated, not code-generated: the same beams
    assert r["seconds"]["eager"] > 0 and r["ratio"] == r["seconds"]["eager"] / r["seconds"]["compiled"]
    assert "| 12 of 12 |" in (tmp_path / "RESULTS.md").read_text()
    assert bench.main([str(tmp_path / "missing"), "--data", str(world / "data")]) == 2
