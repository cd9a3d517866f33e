"""Tiny worlds for docs/add-a-language.md: an M2M-100 one and an NLLB one.

`python tests/tiny_newlang.py OUT` writes, for each of `m2m100/` and `nllb/`: `model/` (a random tiny base and its
tokenizer: an M2M100Tokenizer on a SentencePiece model trained here, or an NllbTokenizer), `data/` (multi-way
train/valid splits of three old languages plus `tyv_Cyrl`, a code no registry knows, and Spanish, whose language
token the tokenizer has but the model never trained on) and `new.yaml` (an `lslo train` config that adds the two).
Seconds; nothing is downloaded.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

WORDS = ["a", "bo", "ci", "du", "ek", "fa", "gi", "ho", "ja", "ku", "lo", "mi"]
TUVAN = ["тыва", "дыл", "чурт", "кижи", "хем", "даг", "аът", "ном", "ой", "суг", "ак", "кара"]
KINDS = {"m2m100": (("en", "fr", "sw"), "es"), "nllb": (("eng_Latn", "fra_Latn", "swh_Latn"), "spa_Latn")}


def sentences(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(len(WORDS)) for _ in range(rng.randint(2, 7))] for _ in range(n)]


def write_world(folder: str | Path, kind: str, train: int = 120, valid: int = 8) -> dict[str, Path]:
    """One tiny world of `kind` ("m2m100" or "nllb") under `folder`; returns its paths."""
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    from lslo.data.corpus import MultiwayCorpus, write_multiway
    from lslo.languages import register_language
    from lslo.tokenizer import load_tokenizer, model_vocab_size, train_tokenizer

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_nllb import make_tiny_nllb

    folder = Path(folder)
    old, untrained = KINDS[kind]
    register_language("tyv_Cyrl")
    prefix = dict(zip(old, ("en", "fr", "ku"), strict=True))  # letters the tiny NLLB tokenizer has
    spell = {code: (lambda w, p=prefix[code]: p + WORDS[w]) for code in old}
    spell[untrained] = lambda w: "es" + WORDS[w]
    spell["tyv_Cyrl"] = lambda w: TUVAN[w]
    rows = sentences(train + valid)
    for split, part in (("train", rows[:train]), ("valid", rows[train:])):
        ids = [f"s.{i}" for i in range(len(part))]
        text = {code: [" ".join(f(w) for w in row) for row in part] for code, f in spell.items()}
        write_multiway(MultiwayCorpus(text, dict.fromkeys(text, ids)), folder / "data" / split)
    if kind == "m2m100":
        texts = {code: [" ".join(spell[code](w) for w in row) for row in rows[:train]] for code in old}
        train_tokenizer(texts, folder / "model", 300, per_language=100)
    else:
        make_tiny_nllb(folder / "model")
    tok = load_tokenizer(folder / "model")
    config = M2M100Config(
        vocab_size=model_vocab_size(tok), d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64, dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.eos_token_id, scale_embedding=True,
    )  # fmt: skip
    torch.manual_seed(0)
    M2M100ForConditionalGeneration(config).save_pretrained(folder / "model")
    tok.save_pretrained(str(folder / "model"))
    run = {
        "base_model": str(folder / "model"), "data": str(folder / "data"), "out_dir": str(folder / "run"),
        "languages": dict(zip(old, ("high", "high", "low"), strict=True)),
        "new_languages": {"tyv_Cyrl": {"tier": "low", "related": old[0]}, untrained: "medium"},
        "new_language_vocab": 60, "max_steps": 10, "max_tokens": 256, "max_len": 24, "warmup_steps": 1, "lr": 1e-2,
        "log_every": 5, "save_every": 10, "eval_every": 10, "progress": False, "lslo": {"encoder_routing": "src*1,tgt*1"},
    }  # fmt: skip
    (folder / "new.yaml").write_text(json.dumps(run, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"model": folder / "model", "data": folder / "data", "config": folder / "new.yaml", "run": folder / "run"}


if __name__ == "__main__":  # python tests/tiny_newlang.py OUT
    for kind in KINDS:
        for name, path in write_world(Path(sys.argv[1]) / kind, kind).items():
            print(f"{kind} {name}: {path}")
