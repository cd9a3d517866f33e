"""LSLo at NLLB scale: every mixed-batch path of `LSLoLinear` (and the cost rule's pick) keeps the core
equivalences, at 12 and at 200 languages (NLLB codes, ranks 2/2/8 by tier, tiny model)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model
from test_core import PAD, assert_mixed_batch_equals_each_alone, make_batch, random_samples
from tiny_nllb import NLLB_CODES

from lslo import LSLoConfig, add_lslo, load_lslo
from lslo.layer import MIXED_PATHS
from lslo.pruning import prune
from lslo.subspace import load_compact, save_compact

TIERS = ("high", "medium", "low")
RANKS = {"high": 2, "medium": 2, "low": 8}
ROUTING = dict(encoder_routing="tgt*2,src*2", decoder_routing="src*1,tgt*3")
SIZES = (3, 12, 200)  # 3: the cost rule's dense pick
PATHS = ("auto", *MIXED_PATHS)
pytestmark = pytest.mark.usefixtures("one_thread")


def languages(n: int) -> dict[str, str]:
    return {code: TIERS[i % 3] for i, code in enumerate(NLLB_CODES[:n])}


def make(n: int, path: str = "auto", randomize: bool = True, seed: int = 0):
    langs = languages(n)
    ids = {code: 96 + i for i, code in enumerate(langs)}
    config = LSLoConfig(languages=langs, ranks=dict(RANKS), lang_token_ids=ids, **ROUTING)
    model = add_lslo(tiny_model(seed, vocab_size=96 + n), config).eval()
    if randomize:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for layer in model.lslo_layers().values():
                layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=g) * 0.3)
                layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.3)
    use_path(model, path)
    return model


def use_path(model, path: str) -> None:
    for layer in model.lslo_layers().values():
        layer.path = path


def pick(n: int, k: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    return [NLLB_CODES[i] for i in torch.randint(n, (k,), generator=g).tolist()]


def test_cost_rule_picks_dense_for_a_few_languages_and_gathered_at_12_and_200():
    assert {layer.mixed_path() for layer in make(3).lslo_layers().values()} == {"dense"}  # ranks 2+2+8 <= 3 x 8
    assert {layer.mixed_path() for layer in make(12).lslo_layers().values()} == {"gathered"}
    assert {layer.mixed_path() for layer in make(200).lslo_layers().values()} == {"gathered"}


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("path", PATHS)
def test_untrained_equals_base_exactly(n, path):
    model = make(n, path, randomize=False)
    reference = tiny_model(0, vocab_size=96 + n)
    batch, _ = make_batch(random_samples(5, seed=1))
    out = model(**batch, src_lang=pick(n, 5, 1), tgt_lang=pick(n, 5, 2))
    assert torch.equal(out.logits, reference(**batch).logits)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("path", PATHS)
def test_mixed_batch_matches_samples_alone(n, path):
    model = make(n, path)
    samples = random_samples(5, seed=3)
    src, tgt = pick(n, 5, 3), pick(n, 5, 4)
    src[3] = src[0]  # two samples share a source language
    assert_mixed_batch_equals_each_alone(model, samples, src, tgt)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("path", PATHS)
def test_absent_languages_get_zero_gradient_and_do_not_move(n, path):
    model = make(n, path)
    src, tgt = pick(n, 4, 5), pick(n, 4, 6)
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch, labels = make_batch(random_samples(4, seed=5))
    for _ in range(2):
        out = model(**batch, src_lang=src, tgt_lang=tgt)
        F.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100).backward()
        grads = {name: layer.lora_A.grad.clone() for name, layer in model.lslo_layers().items()}
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
    for name, layer in model.lslo_layers().items():
        present = {model.languages.index(code) for code in (src if layer.route == "src" else tgt)}
        kept = torch.zeros(layer.lora_A.shape[0], dtype=torch.bool)
        for lang in present:
            kept[layer.span(lang)] = True
        assert torch.count_nonzero(grads[name][~kept]) == 0
        assert torch.equal(layer.lora_A[~kept], before[f"base_model.{name}.lora_A"][~kept])
        assert torch.equal(layer.lora_B[:, ~kept], before[f"base_model.{name}.lora_B"][:, ~kept])
        assert not torch.equal(layer.lora_B[:, kept], before[f"base_model.{name}.lora_B"][:, kept])


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("path", PATHS)
def test_beam_search_with_mixed_targets_matches_alone(n, path):
    model = make(n, path)
    samples = random_samples(4, seed=11)
    src, tgt = pick(n, 4, 7), pick(n, 4, 8)
    batch, _ = make_batch(samples)
    kw = dict(num_beams=3, max_new_tokens=5, do_sample=False, early_stopping=True, num_return_sequences=2)
    out = model.generate(batch["input_ids"], batch["attention_mask"], src_lang=src, tgt_lang=tgt, **kw)
    for i, sample in enumerate(samples):
        one, _ = make_batch([sample])
        alone = model.generate(one["input_ids"], one["attention_mask"], src_lang=src[i], tgt_lang=tgt[i], **kw)
        for k in range(2):
            got = out[2 * i + k][out[2 * i + k] != PAD].tolist()
            assert got == alone[k][alone[k] != PAD].tolist()
            assert got[:2] == [2, model.lang_token_ids[tgt[i]]]


def test_merge_save_load_pruning_and_compact_export_at_200(tmp_path):
    model = make(200)
    prune(model, 0.5, "language", "B")
    batch, _ = make_batch(random_samples(4, seed=2))
    langs = dict(src_lang=pick(200, 4, 9), tgt_lang=pick(200, 4, 10))
    want = model(**batch, **langs).logits
    model.save_pretrained(tmp_path / "adapter")
    loaded = load_lslo(tiny_model(0, vocab_size=296), tmp_path / "adapter").eval()
    save_compact(model, tmp_path / "compact")
    compact = load_compact(tiny_model(0, vocab_size=296), tmp_path / "compact").eval()
    for other in (model, loaded, compact):
        for path in PATHS:
            use_path(other, path)
            torch.testing.assert_close(other(**batch, **langs).logits, want, rtol=1e-5, atol=1e-5)
    merged = loaded.merge_direction(langs["src_lang"][0], langs["tgt_lang"][0])
    one = {k: v[:1] for k, v in batch.items()}
    torch.testing.assert_close(merged(**one).logits, want[:1], rtol=1e-4, atol=1e-4 * want.abs().max().item())


def test_bf16_base_inference_runs_the_lora_in_bf16_and_training_in_fp32():
    model = make(200, "gathered")
    reference = copy.deepcopy(model)
    model.to(torch.bfloat16)
    for layer in model.lslo_layers().values():  # the adapters stay fp32, as `lslo train` keeps them
        layer.lora_A.data, layer.lora_B.data = layer.lora_A.data.float(), layer.lora_B.data.float()
    batch, labels = make_batch(random_samples(3, seed=4))
    langs = dict(src_lang=pick(200, 3, 11), tgt_lang=pick(200, 3, 12))
    want = reference(**batch, **langs).logits
    with torch.no_grad():
        got = model(**batch, **langs).logits
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=0.1, atol=0.1 * want.abs().max().item())
    out = model(**batch, **langs).logits
    F.cross_entropy(out.float().flatten(0, 1), labels.flatten(), ignore_index=-100).backward()
    assert all(layer.lora_A.grad.dtype == torch.float32 for layer in model.lslo_layers().values())
