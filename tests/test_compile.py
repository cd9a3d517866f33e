"""Compiled training (`lslo.compiling`): no recompile when the batches' languages and lengths change, the same
losses as eager, and `compile:` through `lslo train`. Compiling is slow on a small CPU: tiny models, few steps."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import LANG_IDS, tiny_model

from lslo import LSLoConfig, LsloError, add_lslo
from lslo.compiling import apply, backend_of, graphs_compiled, is_compiled
from lslo.optim import LanguageAdamW
from lslo.train import TrainConfig, train


@pytest.fixture(autouse=True)
def eager_loss_afterwards():
    """`compile:` compiles the loss for the rest of the process (`lslo.loss.compile_loss`): not for later tests."""
    from lslo.loss import eager_loss

    with eager_loss():
        yield


LANGS = {"en": "high", "fr": "high", "zh": "medium", "sw": "low", "wo": "low"}
RANKS = {"high": 2, "medium": 2, "low": 8}  # ranks sum to 22 > 3 x 8: the gathered path


def lslo_model(path: str) -> torch.nn.Module:
    """A tiny LSLo model (non-default alpha: scales != 1) whose B is non-zero, so every language changes the loss."""
    config = LSLoConfig(languages=dict(LANGS), ranks=dict(RANKS), alpha=4.0, lang_token_ids=dict(LANG_IDS))
    model = add_lslo(tiny_model(0, encoder_layers=1, decoder_layers=1), config).train()  # 1 graph per layer kind
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in model.lslo_layers().values():
            layer.path = path
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.1)
    return model


def batch(step: int) -> tuple[dict, torch.Tensor]:
    """Step `step`'s batch: its own size, lengths and language mix (every 3rd batch one source language)."""
    g = torch.Generator().manual_seed(step)
    n, src_len, tgt_len = 2 + step % 3, 3 + (step * 2) % 7, 4 + (step * 3) % 5
    ids, dec = torch.randint(3, 90, (n, src_len), generator=g), torch.randint(3, 90, (n, tgt_len), generator=g)
    codes = ["en", "fr", "zh", "sw"]  # never "wo": its LoRA must not move
    src = [codes[int(i)] for i in torch.randint(0, 4, (n,), generator=g)]
    tgt = [codes[int(i)] for i in torch.randint(0, 4, (n,), generator=g)]
    if step % 3 == 0:
        src = [src[0]] * n
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=dec, src_lang=src, tgt_lang=tgt)
    return inputs, torch.roll(dec, -1, 1)


def train_steps(model: torch.nn.Module, steps: range, optimizer: torch.optim.Optimizer) -> list[float]:
    losses = []
    for step in steps:
        inputs, labels = batch(step)
        logits = model(**inputs, use_cache=False).logits
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(("path", "backend"), [("gathered", "inductor"), ("dense", "aot_eager")])
def test_compiled_lslo_steps_match_eager_and_new_languages_and_lengths_do_not_recompile(one_thread, path, backend):
    """Warm-up compiles each layer kind once; then steps with new language mixes, batch sizes and lengths run
    under `fail_on_recompile`. Every step's loss equals eager's within 1e-4 (float rounding of another kernel
    order; the same batches, weights and LanguageAdamW), and a language no batch used keeps its LoRA exactly.
    Inductor (what `compile: true` runs) on the gathered path; the dense path traced the same way, without code
    generation (`aot_eager`: Dynamo + AOTAutograd, the part that decides graph breaks and recompiles)."""
    torch._dynamo.reset()
    eager, compiled = lslo_model(path), lslo_model(path)
    start = {n: (layer.lora_A.detach().clone(), layer.lora_B.detach().clone()) for n, layer in compiled.lslo_layers().items()}
    assert apply(compiled, backend) == 2 and all(is_compiled(m) for m in compiled.base_model.model.decoder.layers)
    opts = [LanguageAdamW([p for p in m.parameters() if p.requires_grad], m, lr=1e-2) for m in (eager, compiled)]
    want = train_steps(eager, range(7), opts[0])
    before = graphs_compiled()
    got = train_steps(compiled, range(1), opts[1])  # warm-up: first and later encoder and decoder layers
    assert graphs_compiled() > before
    with torch.compiler.set_stance("fail_on_recompile"):
        got += train_steps(compiled, range(1, 7), opts[1])
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-4
    for name, layer in compiled.lslo_layers().items():
        a, b = start[name]
        wo, sw = layer.span(4), layer.span(3)  # "wo" in no batch; "sw" in every route's batches
        assert torch.equal(layer.lora_A[wo], a[wo]) and torch.equal(layer.lora_B[:, wo], b[:, wo])
        assert not torch.equal(layer.lora_A[sw], a[sw])
        assert torch.allclose(layer.lora_A, eager.lslo_layers()[name].lora_A, atol=1e-4)


def test_the_compile_setting_is_checked():
    assert backend_of(False) is None and backend_of(True) == "inductor" and backend_of("aot_eager") == "aot_eager"
    with pytest.raises(LsloError, match="compile='nope': use true, false or a torch.compile backend"):
        TrainConfig(data="d", base_model="b", out_dir="o", max_steps=1, compile="nope").check()


def test_lslo_train_with_compile_logs_the_losses_of_the_eager_run(world, tmp_path):
    """`compile:` through `lslo train` (training and validation compiled, LanguageAdamW, dropout on) on the tiny
    world's model cut to one layer a side: the logged training and validation losses equal the eager run's within
    1e-4. Backend `aot_eager` (traced and differentiated as Inductor's input; no C++ build: minutes on 2 cores)."""
    from transformers import M2M100ForConditionalGeneration

    torch._dynamo.reset()
    base = M2M100ForConditionalGeneration.from_pretrained(world / "model")
    base.model.encoder.layers = base.model.encoder.layers[:1]
    base.model.decoder.layers = base.model.decoder.layers[:1]
    base.config.encoder_layers = base.config.decoder_layers = 1
    base.save_pretrained(tmp_path / "model")
    runs = {}
    from lslo import loss

    for name, setting in (("eager", False), ("compiled", "aot_eager")):
        cfg = TrainConfig(data=str(world / "data"), base_model=str(tmp_path / "model"), out_dir=str(tmp_path / name),
                          tokenizer=str(world / "model"),
                          method="lslo", languages={"en": "high", "fr": "high", "sw": "low"}, max_steps=4,
                          max_tokens=96, max_len=24, warmup_steps=1, lr=3e-3, log_every=1, eval_every=4,
                          valid_max_per_direction=2, progress=False, seed=3, compile=setting)  # fmt: skip
        loss.use_compiled_loss(None)
        train(cfg)
        assert (loss.compiled_loss() is not None) == (name == "compiled")  # `compile:` compiles the loss too
        log = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        runs[name] = [(r["step"], r.get("loss", r.get("valid_loss"))) for r in log if "loss" in r or "valid_loss" in r]
    assert [s for s, _ in runs["compiled"]] == [s for s, _ in runs["eager"]] and len(runs["eager"]) >= 5
    assert max(abs(a[1] - b[1]) for a, b in zip(runs["compiled"], runs["eager"], strict=True)) < 1e-4
    assert json.loads((tmp_path / "compiled" / "run.json").read_text())["compile"] == "aot_eager"


def test_the_compiled_loss_equals_eager_with_padding_and_blocked_vocabulary_and_does_not_recompile(one_thread):
    """`compile: true` also compiles the label-smoothed loss: the same sums as eager (padding ignored, smoothing over
    the vocabulary a row may use when some is blocked with -inf, as `lslo.extend` does), one graph for new shapes."""
    from lslo import loss as loss_mod

    torch._dynamo.reset()
    compiled = torch.compile(loss_mod._terms, dynamic=True, backend="inductor")

    def case(step: int, blocked: bool) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(step)
        rows, length, vocab = 2 + step % 3, 3 + step, 11
        logits = torch.randn(rows, length, vocab, generator=g)
        if blocked:
            logits[0, :, 7:] = float("-inf")  # row 0's language may not use the last 4 pieces
        labels = torch.randint(0, 7, (rows, length), generator=g)
        labels[-1, -2:] = loss_mod.IGNORE_INDEX
        return logits, labels

    logits, labels = case(0, True)
    compiled(logits, labels, 0.1)  # warm-up
    with torch.compiler.set_stance("fail_on_recompile"):
        for step, blocked in ((1, True), (2, False), (3, True)):
            logits, labels = case(step, blocked)
            want = loss_mod._terms(logits, labels, 0.1)
            got = compiled(logits, labels, 0.1)
            assert all(torch.isfinite(t).all() for t in got)
            assert torch.allclose(got[0], want[0], rtol=1e-5) and torch.allclose(got[1], want[1], rtol=1e-5)
            assert int(got[2]) == int(want[2]) == labels.numel() - 2
    # The public function switches to the compiled terms once `compile_loss` ran (what lslo.compiling.apply calls).
    plain = loss_mod.label_smoothed_nll(logits, labels, 0.1)
    with loss_mod.eager_loss():
        loss_mod.compile_loss("aot_eager")
        assert loss_mod.compiled_loss() is not None
        again = loss_mod.label_smoothed_nll(logits, labels, 0.1)
        assert torch.allclose(again[0], plain[0], rtol=1e-5) and again[2] == plain[2]
    assert loss_mod.compiled_loss() is None  # the fixture's eager loss is back
