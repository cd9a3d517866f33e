"""A new user's workflow on their own NLLB-style model and FLORES-200 data, driven only through the CLI.

The base is a tiny NLLB-style checkpoint (`tests/tiny_nllb.py`: NllbTokenizer from a local SentencePiece model +
a random M2M100ForConditionalGeneration, saved together), the data a FLORES-200-layout folder of four languages
outside every built-in tier table. Every run (lslo, lora, full), the base, every export (adapter, compact,
merged, CTranslate2 when installed) and a hub id resolved from an offline local Hugging Face cache are trained,
evaluated or translated with.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_nllb import make_tiny_nllb, sentence, write_flores200

from lslo.cli import main

LANGS = ["pol_Latn", "por_Latn", "arb_Arab", "tur_Latn"]  # in no built-in tier table
TIERS = {"pol_Latn": "high", "por_Latn": "high", "arb_Arab": "low", "tur_Latn": "low"}
ROOT = Path(__file__).resolve().parents[1]


def cli(capsys, *argv: str) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Loading weights" not in err  # transformers' progress bar is silenced in every command
    return out


def cli_error(capsys, *argv: str) -> str:
    code = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("lslo: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def byo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("byo")
    make_tiny_nllb(root / "base", sentences=[sentence(c, i) for c in LANGS for i in range(40)])
    _no_language_tokens_in_output(root / "base")
    write_flores200(root / "flores", LANGS, dev=12, devtest=4)
    languages = ", ".join(f"{c}: {t}" for c, t in TIERS.items())
    (root / "run.yaml").write_text(
        f"data: {root / 'flores'}\nbase_model: {root / 'base'}\nout_dir: {root / 'runs/lslo'}\n"
        f"train_split: dev\nvalid_split: devtest\nlanguages: {{{languages}}}\n"
        "max_steps: 3\nmax_tokens: 96\nmax_len: 32\nwarmup_steps: 1\nsave_every: 2\neval_every: 2\nlr: 5e-3\n",
        encoding="utf-8",
    )
    return root


def _no_language_tokens_in_output(folder: Path) -> None:
    """Zero the language tokens' embedding rows: a random model then writes words (decoded text to compare),
    not the language tokens that decoding drops."""
    import torch
    from tiny_nllb import NLLB_CODES
    from transformers import M2M100ForConditionalGeneration

    from lslo.tokenizer import load_tokenizer

    model = M2M100ForConditionalGeneration.from_pretrained(folder)
    ids = load_tokenizer(folder).convert_tokens_to_ids(list(NLLB_CODES))
    with torch.no_grad():
        model.get_input_embeddings().weight[ids] = 0
        model.get_output_embeddings().weight[ids] = 0
    model.save_pretrained(folder)


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text(encoding="utf-8"))


def evaluate(capsys, byo: Path, model: Path | str, name: str, *extra: str) -> dict:
    cli(capsys, "eval", model, "--data", byo / "flores", "--split", "devtest", "--out", byo / "eval" / name,
        "--beams", "1", "--max-sentences", "2", "--no-progress", *extra)  # fmt: skip
    got = results(byo / "eval" / name)
    assert len(got["directions"]) == len(LANGS) * (len(LANGS) - 1)
    return got


def evaluate_one(capsys, byo: Path, model: Path, name: str, direction: str, *extra: str) -> dict:
    cli(capsys, "eval", model, "--data", byo / "flores", "--split", "devtest", "--out", byo / "eval" / name,
        "--beams", "1", "--max-sentences", "2", "--no-progress", "--directions", direction, *extra)  # fmt: skip
    return results(byo / "eval" / name)["directions"][direction]


@pytest.fixture(scope="module")
def runs(byo) -> dict[str, Path]:
    """An lslo, a lora and a full run of `byo`'s run.yaml, trained through the CLI."""
    import contextlib
    import io

    out = {}
    for method in ("lslo", "lora", "full"):
        out[method] = byo / "runs" / method
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main([str(a) for a in ("train", byo / "run.yaml", "--no-progress", "--set", f"method={method}",
                                          f"out_dir={out[method]}")])  # fmt: skip
        assert code == 0, err.getvalue()
        assert "Loading weights" not in err.getvalue()
        assert (out[method] / "model").is_dir()
    return out


def test_train_eval_translate_export_every_kind(capsys, byo, runs):
    # Codes are echoed as written: the adapter's languages, the result folders and keys.
    adapter = json.loads((runs["lslo"] / "model" / "adapter_config.json").read_text())
    assert list(adapter["config"]["languages"]) == list(TIERS)

    # Runs: tiers from the run's own config; the base: an overall table, or tier tables with --tiers.
    for method, run in runs.items():
        got = evaluate(capsys, byo, run, method)
        assert {row["src"]: row["src_tier"] for row in got["directions"].values()} == TIERS
        assert (byo / "eval" / method / "directions" / "pol_Latn-arb_Arab" / "hyp.txt").is_file()
        assert got["groups"]["chrf"]["H->L"]["n_directions"] == 4
    base = evaluate(capsys, byo, byo / "base", "base")
    assert set(base["tiers"].values()) == {None} and "| all (12) |" in (byo / "eval/base/tiers.md").read_text()
    tiers_file = byo / "tiers.json"
    tiers_file.write_text(json.dumps(TIERS))
    tiered = evaluate(capsys, byo, byo / "base", "base-tiers", "--tiers", tiers_file)
    assert tiered["tiers"] == {c: TIERS[c] for c in tiered["tiers"]} and len(tiered["tiers"]) == 4
    assert tiered["directions"] == {
        k: {**v, "src_tier": TIERS[v["src"]], "tgt_tier": TIERS[v["tgt"]]} for k, v in base["directions"].items()
    }
    assert "arb_Arab" in cli_error(capsys, "eval", byo / "base", "--data", byo / "flores", "--split", "devtest",
                                   "--out", byo / "eval/x", "--tiers", "pol_Latn=high")  # fmt: skip

    # Translate; an unknown target fails with one line even on empty input.
    source = byo / "in.txt"
    source.write_text("".join(sentence("pol_Latn", i) + "\n" for i in range(3)), encoding="utf-8")
    lslo_out = cli(capsys, "translate", runs["lslo"], "--src", "pol_Latn", "--tgt", "tur_Latn", "--beams", "1",
                   "--input", source)  # fmt: skip
    assert len(lslo_out.splitlines()) == 3 and all(line.strip() for line in lslo_out.splitlines())
    assert "'xx_unknown'" in cli_error(capsys, "translate", runs["lslo"], "--src", "pol_Latn", "--tgt", "xx_unknown",
                                       "--input", os.devnull)  # fmt: skip

    # Exports: each loads in eval and translate; the merged model translates as the LSLo model does.
    exports = {"adapter": [], "compact": ["--compact"], "merged": ["--merge", "pol_Latn-tur_Latn"]}
    for name, flags in exports.items():
        cli(capsys, "export", runs["lslo"], "--out", byo / "export" / name, *flags)
    for name in ("adapter", "compact"):
        got = evaluate(capsys, byo, byo / "export" / name, f"export-{name}")
        assert got["directions"] == results(byo / "eval/lslo")["directions"]
    merged = cli(capsys, "translate", byo / "export/merged", "--src", "pol_Latn", "--tgt", "tur_Latn", "--beams", "1",
                 "--input", source)  # fmt: skip
    assert merged == lslo_out
    evaluate(capsys, byo, byo / "export/merged", "export-merged")
    for method in ("lora", "full"):
        cli(capsys, "export", runs[method], "--out", byo / "export" / method)
        # A lora/full export holds no tiers: --tiers gives them (without, one overall table).
        got = evaluate(capsys, byo, byo / "export" / method, f"export-{method}", "--tiers", tiers_file)
        assert got["directions"] == results(byo / "eval" / method)["directions"]

    # --base on a run folder moves the model and its tokenizer.
    moved = byo / "moved-base"
    shutil.copytree(byo / "base", moved)
    hidden = byo / "base-hidden"
    (byo / "base").rename(hidden)
    try:
        assert "base" in cli_error(capsys, "translate", runs["lslo"], "--src", "pol_Latn", "--tgt", "tur_Latn",
                                   "--input", source)  # fmt: skip
        assert cli(capsys, "translate", runs["lslo"], "--base", moved, "--src", "pol_Latn", "--tgt", "tur_Latn",
                   "--beams", "1", "--input", source) == lslo_out  # fmt: skip
    finally:
        hidden.rename(byo / "base")


@pytest.mark.skipif(importlib.util.find_spec("ctranslate2") is None,
                    reason="ctranslate2 is not installed (the `deploy` extra): the CTranslate2 export is not checked")
def test_a_ctranslate2_export_translates_and_scores_as_the_lslo_model(capsys, byo, runs):
    """The merged CTranslate2 export of one direction (the `deploy` extra, in `dev`): reported as a skip, not passed
    silently, where ctranslate2 is not installed."""
    source = byo / "in-ct2.txt"
    source.write_text("".join(sentence("pol_Latn", i) + "\n" for i in range(3)), encoding="utf-8")
    lslo_out = cli(capsys, "translate", runs["lslo"], "--src", "pol_Latn", "--tgt", "tur_Latn", "--beams", "1",
                   "--input", source)  # fmt: skip
    tiers_file = byo / "tiers-ct2.json"
    tiers_file.write_text(json.dumps(TIERS))
    cli(capsys, "export", runs["lslo"], "--merge", "pol_Latn-tur_Latn", "--format", "ctranslate2", "--out",
        byo / "export/ct2")  # fmt: skip
    fast = cli(capsys, "translate", byo / "export/ct2", "--src", "pol_Latn", "--tgt", "tur_Latn", "--beams", "1",
               "--compute-type", "float32", "--input", source)  # fmt: skip
    assert fast == lslo_out
    want = evaluate_one(capsys, byo, runs["lslo"], "lslo-ct2-ref", "pol_Latn-tur_Latn", "--tiers", tiers_file)
    got = evaluate_one(capsys, byo, byo / "export/ct2", "export-ct2", "pol_Latn-tur_Latn", "--tiers", tiers_file)
    assert got == want
    assert "translates pol_Latn->tur_Latn only" in cli_error(
        capsys, "translate", byo / "export/ct2", "--src", "tur_Latn", "--tgt", "pol_Latn", "--input", source)


def hub_cache(root: Path, repo: str, files: Path) -> dict[str, str]:
    """A local Hugging Face cache holding `files` as hub repo `repo`; the environment that reads it offline."""
    cache = root / "hf" / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    shutil.copytree(files, snapshot)
    (snapshot.parents[1] / "refs").mkdir(parents=True)
    (snapshot.parents[1] / "refs" / "main").write_text(commit)
    return {"HF_HOME": str(root / "hf"), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def test_a_hub_id_trains_and_evaluates_from_the_offline_cache(byo, tmp_path):
    env = {**os.environ, **hub_cache(tmp_path, "tiny-org/nllb-tiny", byo / "base"), "PYTHONPATH": str(ROOT)}

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lslo.cli", *map(str, argv)], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)  # fmt: skip

    out = tmp_path / "run"
    done = run("train", byo / "run.yaml", "--no-progress", "--set", "base_model=tiny-org/nllb-tiny", f"out_dir={out}",
               "valid_split=null")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "run.json").read_text())["base_model"] == "tiny-org/nllb-tiny"
    done = run("eval", out, "--data", byo / "flores", "--split", "devtest", "--out", tmp_path / "eval", "--beams", "1",
               "--max-sentences", "2", "--no-progress")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert results(tmp_path / "eval")["meta"]["base_model"] == "tiny-org/nllb-tiny"
    missing = run("translate", "tiny-org/not-cached", "--src", "pol_Latn", "--tgt", "tur_Latn", "--input", os.devnull)
    assert missing.returncode == 2 and missing.stderr.startswith("lslo: error: base model tiny-org/not-cached")
