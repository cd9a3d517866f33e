"""What the README claims, checked through public APIs with settings that would expose a broken implementation.

Every other test of the LSLo math uses alpha=None (every scale 1.0), runs each model once, and trains with the
defaults; these use alpha=16 (scales alpha/rank = 8 and 2), variable ranks, repeated no-grad calls on one model,
and weight decay, so a dropped scale, a stale per-call cache or a plain AdamW shows. The expected values are
computed by hand from `lora_state_dict()` (the saved per-language matrices), not from the layer's own code.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import LANG_IDS, tiny_model
from test_core import make_batch, random_samples

from lslo import LSLoConfig, add_lslo

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest, and the CPU is shared

LANGS = {"en": "high", "fr": "high", "zh": "medium", "sw": "low", "wo": "low"}
ALPHA = 16.0
# Ranks summing to at most 3x the largest (dense mixed path) and above it (gathered mixed path): both cost-rule
# branches are reached through the config alone.
RANKS = {"dense": {"high": 2, "medium": 2, "low": 8}, "gathered": {"high": 4, "medium": 4, "low": 8}}
MIXED = (["en", "sw", "zh", "wo", "fr", "sw"], ["wo", "en", "sw", "fr", "zh", "en"])


def scaled_model(ranks: dict[str, int], seed: int = 0, alpha: float | None = ALPHA, dropout: float = 0.0):
    config = LSLoConfig(languages=dict(LANGS), ranks=dict(ranks), lang_token_ids=dict(LANG_IDS), alpha=alpha,
                        dropout=dropout, encoder_routing="tgt*2,src*2", decoder_routing="src*1,tgt*3")  # fmt: skip
    model = add_lslo(tiny_model(seed), config).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in (p for n, p in model.named_parameters() if ".lora_" in n):
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def hand_delta(model, name: str, route: str, x: torch.Tensor, src: list[str], tgt: list[str]) -> torch.Tensor:
    """(alpha / r_l) B_l A_l x for each sample's language l on `route`, in float64, from the saved matrices."""
    state = model.lora_state_dict()
    rows = []
    per_sample = x.shape[0] // len(src)
    for i in range(x.shape[0]):
        lang = (src if route == "src" else tgt)[i // per_sample]
        a, b = state[f"{name}.lora_A.{lang}"].double(), state[f"{name}.lora_B.{lang}"].double()
        rank = a.shape[0]
        assert rank == model.lslo_config.rank(lang)
        rows.append((ALPHA / rank) * (x[i].double() @ a.T @ b.T))
    return torch.stack(rows)


def capture(model) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list]:
    """Each LSLo layer's (input, output) of the next call, by module name."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = [
        layer.register_forward_hook(lambda m, args, out, name=name: seen.__setitem__(name, (args[0].detach(), out.detach())))
        for name, layer in model.lslo_layers().items()
    ]
    return seen, handles


@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "grad"])
@pytest.mark.parametrize("path", sorted(RANKS))
@pytest.mark.parametrize("langs", ["one", "mixed"])
def test_every_layer_is_base_plus_alpha_over_rank_b_a_x(path, langs, grad):
    """With alpha=16 and ranks 2..8, each LSLo layer's output is W x + b + (alpha/r_l) B_l A_l x, sample by sample,
    for a batch of one direction (the one-language path) and a batch mixing five languages (the mixed paths), in
    inference (no grad) and in training (autograd on)."""
    model = scaled_model(RANKS[path])
    src, tgt = (["sw"] * 6, ["fr"] * 6) if langs == "one" else MIXED
    batch, _ = make_batch(random_samples(6, seed=4))
    routes = dict(model.lslo_config.targets(4, 4))
    seen, handles = capture(model)
    with torch.set_grad_enabled(grad):
        model(**batch, src_lang=src, tgt_lang=tgt)
    for h in handles:
        h.remove()
    assert set(seen) == set(routes) and {"src", "tgt"} == set(routes.values())
    for name, (x, y) in seen.items():
        base = model.lslo_layers()[name].base_layer
        want = torch.nn.functional.linear(x.double(), base.weight.double(), base.bias.double())
        want = want + hand_delta(model, name, routes[name], x, src, tgt)
        torch.testing.assert_close(y.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item(), msg=name)


def test_the_scale_is_alpha_over_each_languages_rank():
    """alpha=None is unscaled; alpha=16 multiplies a language's LoRA term by 16/rank (8 at rank 2, 2 at rank 8)."""
    batch, _ = make_batch(random_samples(3, seed=6))
    base = tiny_model(0)(**batch).logits
    for lang, rank in (("en", 2), ("sw", 8)):
        unscaled = scaled_model(RANKS["dense"], alpha=None)
        scaled = scaled_model(RANKS["dense"], alpha=rank)  # alpha/rank = 1 for this language: the unscaled model
        with torch.no_grad():
            a = unscaled(**batch, src_lang=lang, tgt_lang=lang).logits
            b = scaled(**batch, src_lang=lang, tgt_lang=lang).logits
            c = scaled_model(RANKS["dense"])(**batch, src_lang=lang, tgt_lang=lang).logits
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        assert not torch.allclose(c, a) and not torch.allclose(a, base)


@pytest.mark.parametrize("path", sorted(RANKS))
def test_merging_a_direction_with_alpha_gives_the_unmerged_logits(path):
    model = scaled_model(RANKS[path])
    batch, _ = make_batch(random_samples(3, seed=2))
    with torch.no_grad():
        want = model(**batch, src_lang="sw", tgt_lang="zh").logits
        got = model.merge_direction("sw", "zh")(**batch).logits
        with model.merged("sw", "zh"):
            in_context = model(**batch, src_lang="sw", tgt_lang="zh").logits
    tol = 1e-4 * want.abs().max().item()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=tol)
    torch.testing.assert_close(in_context, want, rtol=1e-4, atol=tol)


@pytest.mark.parametrize("path", sorted(RANKS))
def test_repeated_no_grad_calls_equal_a_fresh_models(path):
    """A second and third no-grad forward / beam search on one model (other languages, the same batch size) give
    what a fresh copy gives on its first call: nothing of one call's routing outlives it."""
    model = scaled_model(RANKS[path])
    fresh = copy.deepcopy(model)
    batch, _ = make_batch(random_samples(6, seed=8))
    calls = [MIXED, (MIXED[1], MIXED[0]), (["fr", "en", "wo", "sw", "zh", "en"], ["sw", "sw", "en", "zh", "wo", "fr"])]
    kw = dict(num_beams=3, max_new_tokens=5, do_sample=False)
    with torch.no_grad():
        for src, tgt in calls:
            got = model(**batch, src_lang=src, tgt_lang=tgt).logits
            torch.testing.assert_close(got, copy.deepcopy(fresh)(**batch, src_lang=src, tgt_lang=tgt).logits, rtol=0, atol=0)
        for src, tgt in calls:
            got = model.generate(batch["input_ids"], batch["attention_mask"], src_lang=src, tgt_lang=tgt, **kw)
            want = copy.deepcopy(fresh).generate(batch["input_ids"], batch["attention_mask"], src_lang=src, tgt_lang=tgt, **kw)
            assert torch.equal(got, want)


def test_lora_dropout_acts_in_training_only():
    """dropout on the LoRA input: two training-mode calls differ; in eval mode the model is exactly the one without
    dropout; and it touches only the LoRA term (an untrained LSLo, B = 0, is the base model in training mode too)."""
    batch, _ = make_batch(random_samples(4, seed=3))
    src, tgt = MIXED[0][:4], MIXED[1][:4]
    dropped, plain = scaled_model(RANKS["dense"], dropout=0.5), scaled_model(RANKS["dense"])
    with torch.no_grad():
        want = plain(**batch, src_lang=src, tgt_lang=tgt).logits
        assert torch.equal(dropped.eval()(**batch, src_lang=src, tgt_lang=tgt).logits, want)
        dropped.train()
        first = dropped(**batch, src_lang=src, tgt_lang=tgt).logits
        second = dropped(**batch, src_lang=src, tgt_lang=tgt).logits
        one_lang = dropped(**batch, src_lang="sw", tgt_lang="fr").logits
        assert not torch.allclose(first, second) and not torch.allclose(first, want)
        assert not torch.allclose(one_lang, plain(**batch, src_lang="sw", tgt_lang="fr").logits)
    untrained = add_lslo(tiny_model(0), LSLoConfig(languages=dict(LANGS), dropout=0.5)).train()
    with torch.no_grad():
        assert torch.equal(untrained(**batch, src_lang=src, tgt_lang=tgt).logits, tiny_model(0)(**batch).logits)


def test_lslo_train_leaves_an_unused_languages_weights_exactly_unchanged_where_adamw_decays_them(world, tmp_path):
    """`lslo train` of an LSLo model on en<->fr only, with weight decay: under the default optimizer (LanguageAdamW)
    sw's LoRA stays at its initial value (A as initialised, B zero); plain AdamW (optimizer: adamw), from the same
    initial weights, shrinks sw's A by weight decay at every step although sw is in no batch."""
    from transformers import M2M100ForConditionalGeneration

    from lslo import load_lslo
    from lslo.train import TrainConfig, train

    def run(steps: int, **kw) -> dict[str, torch.Tensor]:
        out = tmp_path / f"{kw.get('optimizer', 'auto')}-{steps}"
        train(TrainConfig(data=str(world / "data"), base_model=str(world / "model"), out_dir=str(out), method="lslo",
                          languages={"en": "high", "fr": "high", "sw": "low"}, pairs=["en-fr", "fr-en"],
                          valid_split=None, weight_decay=0.1, lr=3e-3, warmup_steps=1, max_steps=steps,
                          max_tokens=96, max_len=24, progress=False, seed=3, **kw))  # fmt: skip
        base = M2M100ForConditionalGeneration.from_pretrained(world / "model")
        return load_lslo(base, out / "model").lora_state_dict()

    def rows(state: dict[str, torch.Tensor], lang: str, matrix: str = "") -> dict[str, torch.Tensor]:
        return {k: v for k, v in state.items() if k.endswith("." + lang) and f".lora_{matrix}" in k}

    default, plain = run(3), run(3, optimizer="adamw")
    assert rows(default, "sw", "A") and rows(default, "sw", "B")
    assert all(bool(v.abs().sum() > 0) for v in rows(default, "sw", "A").values())  # A is not trivially zero
    assert all(torch.equal(v, torch.zeros_like(v)) for v in rows(default, "sw", "B").values())  # B starts at 0
    assert any(not torch.equal(v, plain[k]) for k, v in rows(default, "en").items())  # the runs differ
    # sw's A is still its initial value under LanguageAdamW; plain AdamW's decoupled weight decay shrank it (by the
    # same factor in every entry: no gradient step, since no batch used sw) although sw was in no batch.
    for k, v in rows(default, "sw", "A").items():
        ratio = plain[k] / v
        assert bool((ratio < 1 - 1e-4).all()) and float(ratio.max() - ratio.min()) < 1e-6, k


# -- the <unk> stop ------------------------------------------------------------------------------------------


class _Unk:
    unk_token_id = 3


def _pieces(unk: int, total: int) -> list[int]:
    return [3] * unk + [7] * (total - unk)


def test_the_unk_stop_is_at_half_the_pieces():
    """`check_coverage` refuses a language whose pieces are more than 50% <unk>: 49% and 50% pass, 51% stops."""
    from lslo.errors import LsloError
    from lslo.tokenizer import check_coverage

    shares = check_coverage({"a": _pieces(49, 100), "b": _pieces(50, 100), "c": []}, _Unk(), "tok")
    assert shares == {"a": 0.49, "b": 0.5, "c": 0.0}
    with pytest.raises(LsloError) as err:
        check_coverage({"a": _pieces(10, 100), "b": _pieces(51, 100)}, _Unk(), "tok")
    assert str(err.value).startswith("tokenizer tok: 51% of the pieces of 'b' are <unk>; the tokenizer does not cover")


def test_lslo_train_stops_on_unk_before_anything_is_written(world, tmp_path, monkeypatch):
    """A tokenizer that turns one language's text into <unk> stops `lslo train` with one line, and the run folder is
    never created (not even the encoded-corpus cache)."""
    import lslo.tokenizer
    from lslo.errors import LsloError
    from lslo.train import TrainConfig, train

    real = lslo.tokenizer.load_tokenizer

    class SwToUnk:
        """The world's tokenizer, except that every piece of a sw sentence (they start with "sw") is <unk>."""

        def __init__(self, tok):
            self.tok = tok

        def __getattr__(self, name):
            return getattr(self.tok, name)

        def __len__(self):
            return len(self.tok)

        def __call__(self, texts, **kw):
            ids = self.tok(texts, **kw)["input_ids"]
            return {"input_ids": [[self.tok.unk_token_id] * len(x) if t.startswith("sw") else x
                                  for t, x in zip(texts, ids, strict=True)]}  # fmt: skip

    monkeypatch.setattr(lslo.tokenizer, "load_tokenizer", lambda *a, **k: SwToUnk(real(*a, **k)))
    out = tmp_path / "run"
    cfg = TrainConfig(data=str(world / "data"), base_model=str(world / "model"), out_dir=str(out), method="lslo",
                      valid_split=None, max_steps=1, max_tokens=96, max_len=24, progress=False)  # fmt: skip
    with pytest.raises(LsloError, match=r"100% of the pieces of 'sw' are <unk>"):
        train(cfg)
    assert not out.exists()


def test_lslo_eval_records_the_precision_it_ran_at(world, tmp_path, capsys):
    """results.json's settings say which --precision generated the translations (fp32 by default)."""
    import json

    from lslo.cli import main

    for flags, want in (([], "fp32"), (["--precision", "bf16"], "bf16")):
        out = tmp_path / want
        code = main(["eval", str(world / "model"), "--data", str(world / "data"), "--split", "valid", "--out", str(out),
                     "--directions", "en-fr", "--beams", "1", "--max-sentences", "2", "--no-progress", *flags])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        assert json.loads((out / "results.json").read_text(encoding="utf-8"))["settings"]["precision"] == want


def test_lslo_eval_of_a_model_trained_on_some_of_the_data_languages_evaluates_those(world, tmp_path, capsys):
    """Without --languages, `lslo eval` of an LSLo run trained on 2 of the data's 3 languages scores their 2
    directions (said on stderr) instead of failing on the third; asked for by name, the third is still refused."""
    import json

    from lslo.cli import main
    from lslo.run_config import TrainConfig
    from lslo.train import train

    train(TrainConfig(data=str(world / "data"), base_model=str(world / "model"), out_dir=str(tmp_path / "two"), method="lslo",
                      languages={"en": "high", "fr": "high"}, valid_split=None, max_steps=1, max_tokens=96, max_len=24,
                      progress=False))  # fmt: skip
    out = tmp_path / "eval"
    code = main(["eval", str(tmp_path / "two"), "--data", str(world / "data"), "--split", "valid", "--out", str(out),
                 "--beams", "1", "--max-sentences", "2", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert sorted(json.loads((out / "results.json").read_text(encoding="utf-8"))["directions"]) == ["en-fr", "fr-en"]
    assert "trained for 2 of the data's 3 languages: evaluating their 2 directions (not sw; --languages chooses)" in err
    code = main(["eval", str(tmp_path / "two"), "--data", str(world / "data"), "--split", "valid", "--out", str(tmp_path / "e2"),
                 "--languages", "en", "fr", "sw", "--beams", "1", "--max-sentences", "2", "--no-progress"])  # fmt: skip
    assert code != 0 and "unknown language 'sw'" in capsys.readouterr().err  # asked for by name: still refused
    pairs = tmp_path / "en-sw.tsv"
    pairs.write_text("en\tsw\nhello\tjambo\n", encoding="utf-8")
    code = main(["eval", str(tmp_path / "two"), "--data", str(pairs), "--out", str(tmp_path / "e3"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "was trained for en, fr, and the data holds 1 of those" in err and "Traceback" not in err
    assert not (tmp_path / "e3").exists()
