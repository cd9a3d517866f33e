"""The tiny NLLB-style world of `tests/tiny_nllb.py`: a working tokenizer, a matching model, FLORES-200 files."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tiny_nllb import NLLB_CODES, make_tiny_nllb, sentence, write_flores200, write_world

from lslo.data.readers import read_corpus
from lslo.languages import detect_style, lang_token_ids, lookup
from lslo.loading import load_base
from lslo.tokenizer import load_tokenizer


def test_tiny_nllb_tokenizer_and_model(tmp_path):
    folder = make_tiny_nllb(tmp_path / "nllb")
    tok = load_tokenizer(folder)
    assert type(tok).__name__ == "NllbTokenizer" and detect_style(tok) == "nllb"
    ids = tok(sentence("eng_Latn", 0), add_special_tokens=False)["input_ids"]
    assert ids and tok.unk_token_id not in ids  # words are pieces, not <unk>
    assert tok.decode(ids) == sentence("eng_Latn", 0)
    codes = lang_token_ids(tok, NLLB_CODES)
    assert len(set(codes.values())) == len(NLLB_CODES) == 202
    model = load_base(str(folder))
    assert model.config.vocab_size > max(codes.values())
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "sentencepiece.bpe.model", "tokenizer.json"}


def test_flores200_folder_reads_every_code(tmp_path):
    write_flores200(tmp_path / "flores", NLLB_CODES[:20], dev=5, devtest=3)
    assert sorted((tmp_path / "flores" / "dev").iterdir())[0].name == "ace_Arab.dev"
    corpus = read_corpus(tmp_path / "flores", fmt="flores", split="dev")
    assert len(corpus.languages) == 20 and len(corpus.ids(corpus.languages[0])) == 5


def test_lslo_train_and_eval_at_200_nllb_languages(tmp_path, capsys):
    from lslo.cli import main
    from lslo.loading import load_model

    world = write_world(tmp_path, n=200, steps=3)
    assert main(["train", str(world["config"])]) == 0
    model, tok, _ = load_model(str(world["run"]))
    assert len(model.languages) == 200 and "kab_Latn" in model.languages and "yue_Hant" in model.languages
    assert {layer.mixed_path() for layer in model.lslo_layers().values()} == {"gathered"}
    moved = torch.stack([layer.lora_B.abs().sum(0) > 0 for layer in model.lslo_layers().values() if layer.route == "src"])
    assert moved.any() and not moved.all()  # 3 steps train the languages they saw, the others stay untouched
    directions = ["ace_Arab-kab_Latn", "kab_Latn-yue_Hant", "zho_Hans-eng_Latn", "eng_Latn-fra_Latn"]
    out = tmp_path / "eval"
    assert main(["eval", str(world["run"]), "--data", str(world["data"]), "--split", "devtest", "--directions", *directions,
                 "--max-sentences", "3", "--beams", "2", "--no-progress", "--out", str(out)]) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["directions"]) == sorted(directions)  # codes echoed as written
    for name, row in results["directions"].items():
        assert row["n"] == 3 and len((out / row["files"]["hyp"]).read_text(encoding="utf-8").splitlines()) == 3, name


def test_flores200_nllb_config_trains_every_nllb_language(tmp_path):
    import yaml

    from lslo.cli import main
    from lslo.loading import load_model

    config = Path(__file__).resolve().parents[1] / "configs" / "flores200-nllb.yaml"
    tiers = yaml.safe_load(config.read_text(encoding="utf-8"))["languages"]
    assert sorted(tiers) == sorted(NLLB_CODES) and set(tiers.values()) == {"high", "low"}
    model_dir = make_tiny_nllb(tmp_path / "model")
    data = write_flores200(tmp_path / "flores", NLLB_CODES, dev=2, devtest=1)
    sets = [f"data={data}", f"base_model={model_dir}", f"out_dir={tmp_path / 'run'}", "max_steps=1", "max_epochs=null",
            "max_tokens=256", "progress=false", "save_every=1", "precision=fp32"]  # fmt: skip
    assert main(["train", str(config), "--set", *sets]) == 0
    model, _, _ = load_model(str(tmp_path / "run"))
    assert len(model.languages) == 202
    layer = next(iter(model.lslo_layers().values()))
    assert layer.ranks == [2 if tiers[lookup(code).flores200] == "high" else 8 for code in model.languages]
