"""`lslo train` with `new_languages`, then eval / translate / export of the model with added languages."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lslo.cli import main

TUVAN = ["тыва", "дыл", "чурт", "кижи", "хем", "даг", "аът", "ном", "ой", "суг", "ак", "кара"]


def with_new_languages(world, folder):
    """The world's data plus tyv_Cyrl (a code no registry knows) and es, on the same sentence ids."""
    from lslo.data.corpus import MultiwayCorpus, load_multiway, write_multiway
    from lslo.languages import register_language

    register_language("tyv_Cyrl")
    words = ["a", "bo", "ci", "du", "ek", "fa", "gi", "ho", "ja", "ku", "lo", "mi"]
    for split in ("train", "valid"):
        corpus = load_multiway(world / "data", split=split)
        sents = {lang: corpus.sentences(lang) for lang in corpus.languages}
        ids = {lang: corpus.ids(lang) for lang in corpus.languages}
        en = [s.split() for s in sents["en"]]
        sents["tyv_Cyrl"] = [" ".join(TUVAN[words.index(w[2:])] for w in line) for line in en]
        sents["es"] = [" ".join("es" + w[2:] for w in line) for line in en]
        ids["tyv_Cyrl"] = ids["es"] = ids["en"]
        write_multiway(MultiwayCorpus(sents, ids), folder / split)
    return folder


def test_train_new_languages_then_every_command(world, tmp_path, capsys, monkeypatch):
    data = with_new_languages(world, tmp_path / "data")
    common = {"data": str(data), "base_model": str(world / "model"), "method": "lslo", "max_tokens": 128, "max_len": 24,
              "warmup_steps": 1, "progress": False, "lslo": {"encoder_routing": "src*1,tgt*1"}, "dropout": 0.0}  # fmt: skip
    old = {**common, "out_dir": str(tmp_path / "old"), "languages": {"en": "high", "fr": "high", "sw": "low"},
           "max_steps": 4, "lr": 3e-3, "valid_split": None}  # fmt: skip
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    assert main(["train", str(tmp_path / "old.yaml")]) == 0
    new = {**common, "out_dir": str(tmp_path / "new"), "start_from": str(tmp_path / "old"), "max_steps": 12, "lr": 1e-2, "log_every": 2,
           "valid_split": "valid", "eval_every": 12, "new_language_vocab": 60,
           "new_languages": {"tyv_Cyrl": {"tier": "low", "related": "fr"}, "es": "medium"}}  # fmt: skip
    (tmp_path / "new.yaml").write_text(yaml.safe_dump(new))
    assert main(["train", str(tmp_path / "new.yaml")]) == 0
    report = json.loads((tmp_path / "new" / "new_languages.json").read_text())["report"]
    assert report["old_lines_changed"] == 0 and report["pieces_added"] > 0
    assert report["languages"]["tyv_Cyrl"]["new_token"] and not report["languages"]["es"]["new_token"]
    log = [json.loads(line) for line in (tmp_path / "new" / "metrics.jsonl").read_text().splitlines()]
    log = [r for r in log if "nll_loss" in r]
    assert log[-1]["nll_loss"] < log[0]["nll_loss"]  # the new directions train
    # Every old direction translates exactly as before (greedy and beam), in lslo eval.
    old_dirs = ["en-fr", "en-sw", "fr-en", "fr-sw", "sw-en", "sw-fr"]
    for beams in ("1", "2"):
        for run in ("old", "new"):
            assert main(["eval", str(tmp_path / run), "--data", str(data), "--split", "valid", "--out",
                         str(tmp_path / f"ev-{run}-{beams}"), "--directions", *old_dirs, "--beams", beams,
                         "--max-sentences", "3", "--no-progress"]) == 0  # fmt: skip
        for d in old_dirs:
            hyp = f"directions/{d}/hyp.txt"
            assert (tmp_path / f"ev-old-{beams}" / hyp).read_text() == (tmp_path / f"ev-new-{beams}" / hyp).read_text(), d
    # The new codes work in eval and translate; the model with added languages exports and loads back. A fresh
    # process knows tyv_Cyrl only from the model (its tokenizer extension): forget it here as such a process would.
    from lslo import languages

    monkeypatch.delitem(languages._INDEX, "tyv_cyrl")
    assert main(["eval", str(tmp_path / "new"), "--data", str(data), "--split", "valid", "--out", str(tmp_path / "ev-tyv"),
                 "--directions", "tyv_Cyrl-en", "en-tyv_Cyrl", "es-fr", "--beams", "2", "--max-sentences", "3",
                 "--no-progress"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "ev-tyv" / "results.json").read_text())["directions"]
    (tmp_path / "in.txt").write_text("тыва дыл\nкижи хем\n")
    assert main(["translate", str(tmp_path / "new"), "--src", "tyv_Cyrl", "--tgt", "en", "--input",
                 str(tmp_path / "in.txt"), "--output", str(tmp_path / "out.txt")]) == 0  # fmt: skip
    assert len((tmp_path / "out.txt").read_text().splitlines()) == 2
    # Merged exports: an old direction is the old model's own merged model, tensor for tensor; a new direction is a
    # plain model that translates as the LSLo model does with that direction folded in (eval --merge).
    for run in ("old", "new"):
        assert main(["export", str(tmp_path / run), "--out", str(tmp_path / f"m-{run}"), "--merge", "en-sw"]) == 0
    a, b = (load_file(str(tmp_path / f"m-{run}" / "model.safetensors")) for run in ("old", "new"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert main(["export", str(tmp_path / "new"), "--out", str(tmp_path / "m-tyv"), "--merge", "tyv_Cyrl-en"]) == 0
    for name, extra in (("m-tyv", []), ("new", ["--merge"])):
        assert main(["eval", str(tmp_path / name), "--data", str(data), "--split", "valid", "--out",
                     str(tmp_path / f"ev-merge-{name}"), "--directions", "tyv_Cyrl-en", "--beams", "2", "--max-sentences", "3",
                     "--no-progress", *extra]) == 0  # fmt: skip
    hyp = "directions/tyv_Cyrl-en/hyp.txt"
    assert (tmp_path / "ev-merge-m-tyv" / hyp).read_text() == (tmp_path / "ev-merge-new" / hyp).read_text()
    # CTranslate2 exports of new directions (into and out of tyv_Cyrl) translate as the LSLo model does.
    for d in ("tyv_Cyrl-en", "en-tyv_Cyrl"):
        src, tgt = d.split("-")
        assert main(["export", str(tmp_path / "new"), "--out", str(tmp_path / f"ct2-{d}"), "--merge", d, "--format", "ctranslate2"]) == 0
        for name in (f"ct2-{d}", "new"):
            assert main(["eval", str(tmp_path / name), "--data", str(data), "--split", "valid", "--out", str(tmp_path / f"ev-{name}-{d}"),
                         "--directions", d, "--beams", "2", "--max-sentences", "6", "--no-progress"]) == 0  # fmt: skip
        hyp = f"directions/{d}/hyp.txt"
        assert (tmp_path / f"ev-ct2-{d}-{d}" / hyp).read_text() == (tmp_path / f"ev-new-{d}" / hyp).read_text(), d
        assert "__tyv_Cyrl__" not in (tmp_path / f"ev-new-{d}" / hyp).read_text()  # an added language token is no text
    assert main(["export", str(tmp_path / "new"), "--out", str(tmp_path / "ct2"), "--merge", "en-sw", "--format", "ctranslate2"]) == 0
    assert main(["translate", str(tmp_path / "ct2"), "--src", "en", "--tgt", "sw", "--input", str(tmp_path / "in.txt"),
                 "--output", str(tmp_path / "out-ct2.txt")]) == 0  # fmt: skip
    assert main(["report", "--subspace", str(tmp_path / "new"), "--out", str(tmp_path / "subspace")]) == 0
    assert "tyv_Cyrl" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "new"), "--out", str(tmp_path / "adapter")]) == 0
    shutil.rmtree(tmp_path / "new")  # the export alone carries everything (tokenizer extension, new rows)
    assert main(["translate", str(tmp_path / "adapter"), "--src", "tyv_Cyrl", "--tgt", "en", "--input",
                 str(tmp_path / "in.txt"), "--output", str(tmp_path / "out2.txt")]) == 0  # fmt: skip
    assert (tmp_path / "out2.txt").read_text() == (tmp_path / "out.txt").read_text()
    capsys.readouterr()
    assert main(["translate", str(tmp_path / "adapter"), "--src", "xyz_Latn", "--tgt", "en", "--input",
                 str(tmp_path / "in.txt"), "--output", str(tmp_path / "out3.txt")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "xyz_Latn" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "out3.txt").exists()


def test_readme_new_language_example_runs_as_written(tmp_path):
    """docs/add-a-language.md's first commands, as written, with /tmp/newlang moved under tmp_path."""
    import re
    import shlex
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_newlang import KINDS, write_world

    guide = (Path(__file__).parents[1] / "docs" / "add-a-language.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", guide, re.S).group(1)
    lines = [line.split("  #")[0].strip().replace("/tmp/newlang", str(tmp_path)) for line in block.splitlines()]
    lines = [line for line in lines if line]
    assert lines[0].startswith("python tests/tiny_newlang.py") and len(lines) >= 5
    for kind in KINDS:
        write_world(tmp_path / kind, kind)
    for line in lines[1:]:
        assert line.startswith("lslo ")
        assert main(shlex.split(line)[1:]) == 0, line
    assert (tmp_path / "m2m100" / "hyp.txt").read_text().count("\n") == 8
    assert json.loads((tmp_path / "nllb" / "eval" / "results.json").read_text())["directions"]


@pytest.mark.parametrize("method", ["full", "lora"])
def test_baselines_with_the_extended_vocabulary(tmp_path, method, monkeypatch):
    """The practitioners' recipe (method full: the base resized to the extended vocabulary, everything trained) and
    the shared LoRA with the new rows trainable (method lora): the run saves the extended tokenizer, and a fresh
    process (which knows tyv_Cyrl only from the model) translates from the new language."""
    import sys
    from pathlib import Path

    from safetensors import safe_open

    from lslo import languages

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_newlang import write_world

    world = write_world(tmp_path / "w", "m2m100")
    assert main(["train", str(world["config"]), "--set", f"method={method}", "max_steps=4", "save_every=4", "eval_every=4"]) == 0
    ext = json.loads((world["run"] / "new_languages.json").read_text())["extension"]
    rows = ext["base_rows"] + len(ext["pieces"]) + sum(x["new"] for x in ext["languages"])
    if method == "full":
        with safe_open(str(world["run"] / "model" / "model.safetensors"), "pt") as f:
            assert f.get_slice("model.shared.weight").get_shape()[0] == rows
    else:
        assert json.loads((world["run"] / "model" / "lslo_method.json").read_text())["vocab_size"] == rows
        indices = json.loads((world["run"] / "model" / "adapter_config.json").read_text())["trainable_token_indices"]
        assert set(range(ext["base_rows"], rows)) <= set(indices)
        with safe_open(str(world["run"] / "model" / "adapter_model.safetensors"), "pt") as f:  # the trained rows only
            assert sorted(f.get_slice(k).get_shape()[0] for k in f.keys() if "lora_" not in k) == [len(indices)]
    monkeypatch.delitem(languages._INDEX, "tyv_cyrl")
    (tmp_path / "in.txt").write_text("тыва дыл\n")
    assert main(["translate", str(world["run"]), "--src", "tyv_Cyrl", "--tgt", "en", "--input", str(tmp_path / "in.txt"),
                 "--output", str(tmp_path / "out.txt")]) == 0  # fmt: skip
    assert (tmp_path / "out.txt").read_text().count("\n") == 1


def test_shared_lora_with_trainable_new_rows(tmp_path):
    """The shared-LoRA baseline of adding a language (method lora): the base resized as for full fine-tuning, one
    peft LoRA, and only the new rows trainable (peft's trainable_token_indices, tied to the output layer). At the
    start it computes exactly what the resized base computes; a step moves the new rows and no old one; the saved
    adapter loads back to the same logits."""
    import copy
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_newlang import write_world

    from lslo.baselines import SharedLoRA
    from lslo.data.corpus import load_multiway
    from lslo.encoding import encode_sources
    from lslo.extend.run import extend_base
    from lslo.extend.tokenizer import extend_tokenizer
    from lslo.languages import lang_token_ids, register_language
    from lslo.loading import load_base
    from lslo.tokenizer import load_tokenizer

    world = write_world(tmp_path / "w", "m2m100")
    register_language("tyv_Cyrl")
    corpus = load_multiway(world["data"], split="train")
    tok = load_tokenizer(world["model"])
    base = load_base(str(world["model"]))
    rows_before = base.config.vocab_size
    ext, _ = extend_tokenizer(tok, {"tyv_Cyrl": corpus.sentences("tyv_Cyrl")},
                              {c: corpus.sentences(c) for c in ("en", "fr", "sw")}, base_rows=rows_before,
                              existing=["en", "fr", "sw"], related={"tyv_Cyrl": "en"}, vocab_size=60)  # fmt: skip
    trainable = extend_base(base, ext, {"tyv_Cyrl": "en"})
    rows = base.get_input_embeddings().weight.shape[0]
    assert rows > rows_before and trainable == list(range(rows_before, rows))  # the new pieces and the new token
    ref = copy.deepcopy(base).eval()
    langs = ["en", "fr", "sw", "tyv_Cyrl"]
    model = SharedLoRA(base, lang_token_ids(ext, langs), r=2, trainable_tokens=trainable)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or "trainable_tokens_delta" in n for n in names)
    assert any("trainable_tokens_delta" in n for n in names)

    src = corpus.sentences("tyv_Cyrl")[:4]
    batch = encode_sources(ext, src, "tyv_Cyrl")
    dec = torch.tensor([[ext.eos_token_id, lang_token_ids(ext, ["en"])["en"], 5, 6]] * 4)
    model.eval()
    with torch.no_grad():  # B = 0 and the delta rows are the base's rows: the resized base, exactly
        assert torch.equal(model(**batch, decoder_input_ids=dec, src_lang="tyv_Cyrl", tgt_lang="en").logits,
                           ref(**batch, decoder_input_ids=dec).logits)  # fmt: skip
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model(**batch, decoder_input_ids=dec, src_lang="tyv_Cyrl", tgt_lang="en").logits.logsumexp(-1).mean().backward()
    opt.step()
    model.eval()
    weight = model.base_model.get_input_embeddings().token_adapter.get_merged_weights(["default"])
    old = ref.get_input_embeddings().weight
    assert torch.equal(weight[:rows_before], old[:rows_before])  # no old row moves
    assert not torch.equal(weight[rows_before:], old[rows_before:])  # the new rows train

    model.save_pretrained(tmp_path / "lora")
    again = SharedLoRA.from_pretrained(load_base(str(world["model"])), tmp_path / "lora").eval()
    with torch.no_grad():
        assert torch.equal(again(**batch, decoder_input_ids=dec, src_lang="tyv_Cyrl", tgt_lang="en").logits,
                           model(**batch, decoder_input_ids=dec, src_lang="tyv_Cyrl", tgt_lang="en").logits)  # fmt: skip


def test_a_full_fine_tuning_chain_keeps_the_languages_added_before(tmp_path, monkeypatch):
    """A base fully fine-tuned with es added, then given tyv_Cyrl, still knows es: a fresh process translates from es
    with the second model (it was an 'unknown language' error)."""
    import sys
    from pathlib import Path

    from lslo import languages

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_newlang import write_world

    world = write_world(tmp_path / "w", "m2m100")
    cfg = json.loads(world["config"].read_text())
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(json.dumps({**cfg, "method": "full", "new_languages": {"es": "medium"}, "out_dir": str(tmp_path / "r1"),
                                 "max_steps": 2, "save_every": 2, "eval_every": 2}))  # fmt: skip
    assert main(["train", str(first)]) == 0
    start = tmp_path / "r1" / "model"
    second.write_text(json.dumps({**cfg, "method": "full", "base_model": str(start), "out_dir": str(tmp_path / "r2"),
                                  "new_languages": {"tyv_Cyrl": cfg["new_languages"]["tyv_Cyrl"]},
                                  "max_steps": 2, "save_every": 2, "eval_every": 2}))  # fmt: skip
    assert main(["train", str(second)]) == 0
    monkeypatch.delitem(languages._INDEX, "tyv_cyrl")
    (tmp_path / "in.txt").write_text("hola\n")
    for src in ("es", "tyv_Cyrl"):
        assert main(["translate", str(tmp_path / "r2"), "--src", src, "--tgt", "en", "--input", str(tmp_path / "in.txt"),
                     "--output", str(tmp_path / f"{src}.txt")]) == 0  # fmt: skip
