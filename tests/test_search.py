"""Architecture learning recovers a constructed ground truth: a teacher whose per-language LoRAs are
source-indexed in the lower encoder layers, target-indexed elsewhere, and live only in fc1/fc2. A student
distilled from it must find that routing (routing search) and rank fc1/fc2 first (placement search)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model

from lslo import LSLoConfig, LsloError, add_lslo
from lslo.layer import LSLoLinear
from lslo.pruning import PruningConfig
from lslo.routing import Routing
from lslo.search import MixedRouteLinear, cross_entropy_loss, search_placement, search_routing, token_loss

LANGS = {"en": "high", "fr": "high", "sw": "low"}
RANKS = {"high": 2, "medium": 2, "low": 2}
FFN = dict(encoder_modules=["fc1", "fc2"], decoder_modules=["fc1", "fc2"])
TRUE_ENCODER, TRUE_DECODER = "src*2,tgt*2", "tgt*4"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher():
    """The tiny random base plus strong random per-language deltas in fc1/fc2 only, with the true routing."""
    config = LSLoConfig(languages=dict(LANGS), ranks=dict(RANKS), encoder_routing=TRUE_ENCODER,
                        decoder_routing=TRUE_DECODER, **FFN)  # fmt: skip
    model = add_lslo(tiny_model(0), config).eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for layer in model.lslo_layers().values():
            layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=g) * 0.7)
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.7)
    return model


def distillation_batches(teacher, seed: int = 0, n: int = 16, length: int = 8):
    """Endless random token batches with every sample's language pair drawn at random, plus the teacher's
    hidden states of every encoder and decoder layer."""
    g = torch.Generator().manual_seed(seed)
    langs = list(LANGS)
    while True:
        ids = torch.randint(3, 90, (n, length), generator=g)
        pairs = torch.randint(0, len(langs), (n, 2), generator=g).tolist()
        batch = dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                     decoder_input_ids=torch.randint(3, 90, (n, length), generator=g),
                     src_lang=[langs[s] for s, _ in pairs], tgt_lang=[langs[t] for _, t in pairs])  # fmt: skip
        with torch.no_grad():
            out = teacher(**batch, output_hidden_states=True)
        batch["teacher"] = out.encoder_hidden_states[1:] + out.decoder_hidden_states[1:]
        yield batch


def distill(model, batch) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "teacher"}
    out = model(**inputs, output_hidden_states=True)
    mine = out.encoder_hidden_states[1:] + out.decoder_hidden_states[1:]
    return sum(F.mse_loss(a, b) for a, b in zip(mine, batch["teacher"], strict=True))


def test_routing_search_recovers_the_teacher_routing(teacher, tmp_path):
    student = LSLoConfig(languages=dict(LANGS), ranks=dict(RANKS), **FFN)  # default routing: src*3,tgt*1 / tgt
    assert (student.encoder_routing, student.routes("encoder", 4)) == (None, ["src", "src", "src", "tgt"])
    result = search_routing(tiny_model(0), student, distillation_batches(teacher), steps=150, lr=1e-2,
                            arch_lr=1e-1, loss_fn=distill)  # fmt: skip
    assert result.config.encoder_routing == TRUE_ENCODER
    assert result.config.decoder_routing == TRUE_DECODER
    assert sorted(result.weights) == sorted([f"encoder.{i}" for i in range(4)] + [f"decoder.{i}" for i in range(4)])
    for key, (w_src, w_tgt) in result.weights.items():
        assert w_src + w_tgt == pytest.approx(1.0)
        assert max(w_src, w_tgt) > 0.6, key  # a clear decision, not a coin flip
    assert sum(result.losses[-10:]) < 0.3 * sum(result.losses[:10])
    # The result is a ready config: it builds an LSLo model with exactly the teacher's routing.
    result.save(tmp_path / "routing")
    again = LSLoConfig.load(tmp_path / "routing" / "lslo_config.json")
    built = add_lslo(tiny_model(0), again)
    assert {n: m.route for n, m in built.lslo_layers().items()} == {n: m.route for n, m in teacher.lslo_layers().items()}
    assert (tmp_path / "routing" / "routing.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "routing" / "routing_weights.json").read_text())["weights"] == result.weights


def test_placement_search_ranks_ffn_above_attention(teacher, tmp_path):
    student = LSLoConfig(languages=dict(LANGS), ranks=dict(RANKS), encoder_routing=TRUE_ENCODER,
                         decoder_routing=TRUE_DECODER)  # fmt: skip
    result = search_placement(tiny_model(0), student, distillation_batches(teacher, seed=1), steps=200, lr=1e-2,
                              loss_fn=distill)  # fmt: skip
    for side in ("encoder", "decoder"):
        rows = sorted((r for r in result.positions if r["side"] == side), key=lambda r: r["rank"])
        assert len(rows) == (6 if side == "encoder" else 10)
        assert {r["position"] for r in rows[:2]} == {"fc1", "fc2"}, rows
        attention = max(r["share"] for r in rows if r["position"] not in ("fc1", "fc2"))
        assert min(r["share"] for r in rows if r["position"] in ("fc1", "fc2")) > attention
        assert {"fc1", "fc2"} <= set(getattr(result.config, f"{side}_modules"))
    # Every language ends at the pruning ratio (language scope), whatever the positions got.
    assert all(share == pytest.approx(0.1, abs=0.01) for share in result.report["tiers"].values())
    assert result.config.encoder_routing == TRUE_ENCODER and result.config.encoder_layers is None
    result.save(tmp_path / "placement")
    assert LSLoConfig.load(tmp_path / "placement" / "lslo_config.json") == result.config
    assert (tmp_path / "placement" / "placement.png").read_bytes()[:4] == b"\x89PNG"


def test_mixed_route_layer_is_the_weighted_sum_of_a_source_and_a_target_layer():
    torch.manual_seed(0)
    linear = torch.nn.Linear(6, 5)
    routing = Routing()
    mix = torch.nn.Parameter(torch.tensor([0.3, -0.4]))
    mixed = MixedRouteLinear(linear, [2, 3], [1.0, 0.5], routing, mix)
    src, tgt = LSLoLinear(linear, [2, 3], [1.0, 0.5], "src", routing), LSLoLinear(linear, [2, 3], [1.0, 0.5], "tgt", routing)
    with torch.no_grad():
        for p in (mixed.lora_A, mixed.lora_B, mixed.tgt_A, mixed.tgt_B):
            p.normal_()
        src.lora_A.copy_(mixed.lora_A), src.lora_B.copy_(mixed.lora_B)
        tgt.lora_A.copy_(mixed.tgt_A), tgt.lora_B.copy_(mixed.tgt_B)
    routing.set("src", [0, 1, 1], "cpu")
    routing.set("tgt", [1, 0, 1], "cpu")
    x = torch.randn(3, 4, 6)
    w = torch.softmax(mix.detach(), 0)
    base = linear(x)
    want = base + w[0] * (src(x) - base) + w[1] * (tgt(x) - base)
    torch.testing.assert_close(mixed(x), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(LsloError, match="search layer"):
        mixed.delta_weight(0)


def test_per_position_weights_and_bad_scope(teacher):
    student = LSLoConfig(languages=dict(LANGS), ranks=dict(RANKS), encoder_modules=["q", "fc1"], decoder_modules=["fc2"])
    result = search_routing(tiny_model(0), student, distillation_batches(teacher), steps=3, per_position=True,
                            loss_fn=distill)  # fmt: skip
    assert sorted(result.weights) == sorted(
        [f"encoder.{i}.{p}" for i in range(4) for p in ("q", "fc1")] + [f"decoder.{i}.fc2" for i in range(4)]
    )
    with pytest.raises(LsloError, match="scope='language'"):
        search_placement(tiny_model(0), student, distillation_batches(teacher), steps=3, loss_fn=distill,
                         pruning=PruningConfig(scope="layer", unit="step", start=1, duration=1))  # fmt: skip


def test_the_search_loss_is_the_training_loss_per_target_token():
    """One loss: `token_loss(eps)` (what `lslo search` trains on) is `lslo.loss.batch_loss` per target token, i.e.
    the cross-entropy with label smoothing eps; the library default is the same without smoothing."""
    model = add_lslo(tiny_model(0), LSLoConfig(languages=dict(LANGS), ranks=dict(RANKS))).eval()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 90, (4, 6), generator=g)
    labels = torch.randint(3, 90, (4, 6), generator=g)
    labels[0, 4:] = -100  # padding is not counted
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=torch.randint(3, 90, (4, 6), generator=g),
                  src_lang=["en", "fr", "sw", "en"], tgt_lang=["sw", "en", "fr", "fr"])  # fmt: skip
    with torch.no_grad():
        logits = model(**inputs).logits
        for eps in (0.0, 0.1):
            want = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, label_smoothing=eps)
            torch.testing.assert_close(token_loss(eps)(model, {**inputs, "labels": labels}), want)
        assert torch.equal(cross_entropy_loss(model, {**inputs, "labels": labels}), token_loss()(model, {**inputs, "labels": labels}))
