"""LSLo core: exactness, per-sample routing, gradient isolation, generation, merge, save/load, accounting."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import LANG_IDS, tiny_model
from transformers import M2M100Config, M2M100ForConditionalGeneration

from lslo import LSLoConfig, LsloError, add_lslo, load_lslo
from lslo.layer import LSLoLinear

LANGS = {"en": "high", "fr": "high", "zh": "medium", "sw": "low", "wo": "low"}
RANKS = {"high": 2, "medium": 2, "low": 8}
PAD = 1


def make_lslo(seed=0, randomize=True, **cfg):
    base = tiny_model(seed)
    config = LSLoConfig(languages=dict(LANGS), ranks=dict(RANKS), lang_token_ids=dict(LANG_IDS), **cfg)
    model = add_lslo(base, config).eval()
    if randomize:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for layer in model.lslo_layers().values():
                layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=g) * 0.3)
                layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.3)
    return model


def make_batch(samples):
    """samples: list of (src_ids, tgt_ids) -> right-padded M2M-100 style tensors."""
    s_len = max(len(s) for s, _ in samples)
    t_len = max(len(t) for _, t in samples)
    ids = torch.full((len(samples), s_len), PAD)
    mask = torch.zeros((len(samples), s_len), dtype=torch.long)
    dec = torch.full((len(samples), t_len), PAD)
    labels = torch.full((len(samples), t_len), -100)
    for i, (s, t) in enumerate(samples):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        dec[i, : len(t)] = torch.tensor([2] + t[:-1])
        labels[i, : len(t)] = torch.tensor(t)
    return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec}, labels


def assert_mixed_batch_equals_each_alone(model, samples, src, tgt):
    """One mixed batch gives each sample's logits and, summed, the gradients of the samples run alone (1e-5)."""
    batch, labels = make_batch(samples)
    out = model(**batch, src_lang=src, tgt_lang=tgt)
    F.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum").backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    summed = {n: torch.zeros_like(g) for n, g in grads.items()}
    for i, sample in enumerate(samples):
        one, one_labels = make_batch([sample])
        o = model(**one, src_lang=src[i], tgt_lang=tgt[i])
        torch.testing.assert_close(out.logits[i][labels[i] != -100], o.logits[0], rtol=1e-5, atol=1e-5)
        F.cross_entropy(o.logits[0], one_labels[0], reduction="sum").backward()
        for n, p in model.named_parameters():
            if p.requires_grad:
                summed[n] += p.grad
        model.zero_grad()
    for n in grads:
        torch.testing.assert_close(grads[n], summed[n], rtol=1e-5, atol=1e-5)


def random_samples(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        s = torch.randint(3, 90, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
        t = torch.randint(3, 90, (int(torch.randint(2, 8, (1,), generator=g)),), generator=g).tolist()
        out.append((s + [2], t + [2]))
    return out


ROUTINGS = [
    dict(encoder_routing="src*3,tgt*1", decoder_routing="tgt"),
    dict(encoder_routing="tgt*2,src*2", decoder_routing="src*1,tgt*3"),
]


# 1. Untrained LSLo is the base model, exactly.
@pytest.mark.parametrize("routing", ROUTINGS)
def test_untrained_lslo_equals_base_exactly(routing):
    base = tiny_model(0)
    reference = copy.deepcopy(base)
    model = add_lslo(base, LSLoConfig(languages=dict(LANGS), ranks=dict(RANKS), decoder_modules=
                     ["q", "k", "v", "o", "cross_q", "cross_k", "cross_v", "cross_o", "fc1", "fc2"], **routing))
    batch, _ = make_batch(random_samples(5))
    langs = ["en", "fr", "zh", "sw", "wo"]
    out = model(**batch, src_lang=langs, tgt_lang=langs[::-1], output_hidden_states=True)
    ref = reference(**batch, output_hidden_states=True)
    assert torch.equal(out.logits, ref.logits)
    assert torch.equal(out.encoder_last_hidden_state, ref.encoder_last_hidden_state)
    assert all(p.requires_grad is False for n, p in model.named_parameters() if ".lora_" not in n)
    assert all(p.requires_grad for n, p in model.named_parameters() if ".lora_" in n)


# 2. A mixed batch equals each sample alone: logits and summed gradients.
@pytest.mark.parametrize("routing", ROUTINGS)
def test_mixed_batch_matches_samples_alone(routing):
    model = make_lslo(**routing)
    samples = random_samples(6, seed=3)
    src = ["en", "sw", "zh", "wo", "fr", "sw"]
    tgt = ["wo", "en", "sw", "fr", "zh", "en"]
    assert_mixed_batch_equals_each_alone(model, samples, src, tgt)
    # The batch really mixed ranks 2 and 8 and both routes.
    layers = model.lslo_layers().values()
    assert {layer.route for layer in layers} == {"src", "tgt"}
    assert {2, 8} <= set(next(iter(layers)).ranks)


# 3. A language absent from the batch gets exactly zero gradient and does not move under Adam.
@pytest.mark.parametrize("src,tgt", [(["en", "fr", "zh"], ["fr", "zh", "en"]), ("en", "fr")])
def test_absent_language_is_isolated(src, tgt):
    model = make_lslo(**ROUTINGS[1])
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2, betas=(0.9, 0.98))
    batch, labels = make_batch(random_samples(3 if isinstance(src, list) else 1, seed=5))
    for _ in range(2):
        out = model(**batch, src_lang=src, tgt_lang=tgt)
        F.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
    for name, layer in model.lslo_layers().items():
        for lang in ("sw", "wo"):  # never in a batch
            s = layer.span(model.languages.index(lang))
            assert torch.equal(layer.lora_A[s], before[f"base_model.{name}.lora_A"][s]), (name, lang)
            assert torch.equal(layer.lora_B[:, s], before[f"base_model.{name}.lora_B"][:, s]), (name, lang)
        routed = (src if layer.route == "src" else tgt)[0] if isinstance(src, list) else (src if layer.route == "src" else tgt)
        present = model.languages.index(routed)
        assert not torch.equal(layer.lora_B[:, layer.span(present)], before[f"base_model.{name}.lora_B"][:, layer.span(present)])


def test_absent_language_gradient_is_exactly_zero():
    model = make_lslo(**ROUTINGS[0])
    batch, labels = make_batch(random_samples(4, seed=9))
    out = model(**batch, src_lang=["en", "fr", "zh", "en"], tgt_lang=["fr", "zh", "en", "sw"])
    F.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100).backward()
    wo = model.languages.index("wo")
    for layer in model.lslo_layers().values():
        assert torch.count_nonzero(layer.lora_A.grad[layer.span(wo)]) == 0
        assert torch.count_nonzero(layer.lora_B.grad[:, layer.span(wo)]) == 0
        assert torch.count_nonzero(layer.lora_B.grad) > 0


# 4. Beam search on a batch mixing 3 target languages equals each sample generated alone.
def test_generate_beam_mixed_targets_matches_alone():
    model = make_lslo(**ROUTINGS[1])
    samples = random_samples(5, seed=11)
    src = ["en", "fr", "zh", "sw", "wo"]
    tgt = ["sw", "en", "fr", "sw", "en"]
    batch, _ = make_batch(samples)
    kw = dict(num_beams=4, max_new_tokens=6, do_sample=False, early_stopping=True)
    out = model.generate(batch["input_ids"], batch["attention_mask"], src_lang=src, tgt_lang=tgt, num_return_sequences=2, **kw)
    assert out.shape[0] == 10
    for i, sample in enumerate(samples):
        one, _ = make_batch([sample])
        alone = model.generate(one["input_ids"], one["attention_mask"], src_lang=src[i], tgt_lang=tgt[i], num_return_sequences=2, **kw)
        for k in range(2):
            got = out[2 * i + k][out[2 * i + k] != PAD].tolist()
            assert got == alone[k][alone[k] != PAD].tolist()
            assert got[:2] == [2, LANG_IDS[tgt[i]]]


# 5. A merged direction is a plain transformers model with the same logits.
def test_merge_direction_matches_and_round_trips(tmp_path):
    model = make_lslo(**ROUTINGS[1])
    batch, _ = make_batch(random_samples(3, seed=2))
    want = model(**batch, src_lang="sw", tgt_lang="zh").logits
    merged = model.merge_direction("swh_Latn", "zh")
    assert type(merged) is M2M100ForConditionalGeneration
    assert not any(isinstance(m, LSLoLinear) for m in merged.modules())
    got = merged(**batch).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    # The LSLo model is untouched by merging.
    torch.testing.assert_close(model(**batch, src_lang="sw", tgt_lang="zh").logits, want, rtol=0, atol=0)
    merged.save_pretrained(tmp_path / "merged")
    reloaded = M2M100ForConditionalGeneration.from_pretrained(tmp_path / "merged").eval()
    torch.testing.assert_close(reloaded(**batch).logits, got, rtol=0, atol=0)


def test_merged_context_matches_routing_and_restores_the_model():
    model = make_lslo(**ROUTINGS[1])
    batch, _ = make_batch(random_samples(3, seed=5))
    want = model(**batch, src_lang="sw", tgt_lang="zh").logits
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.mergeable
    with model.merged("swh_Latn", "zh"):
        got = model(**batch, src_lang="sw", tgt_lang="zh").logits
        assert all(layer.merged_weight is not None for layer in model.lslo_layers().values())
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    assert not torch.equal(got, model(**batch, src_lang="en", tgt_lang="zh").logits)  # the merge is per direction
    # Leaving restores the exact model, also when the block raises.
    with pytest.raises(RuntimeError), model.merged("en", "fr"):
        raise RuntimeError
    assert all(layer.merged_weight is None for layer in model.lslo_layers().values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(model(**batch, src_lang="sw", tgt_lang="zh").logits, want)


# 6. save/load round trip, and loading onto the wrong base fails with one line.
def test_save_load_round_trip_and_wrong_base(tmp_path):
    model = make_lslo(**ROUTINGS[0])
    batch, _ = make_batch(random_samples(4, seed=4))
    langs = dict(src_lang=["en", "sw", "zh", "wo"], tgt_lang=["wo", "fr", "en", "zh"])
    want = model(**batch, **langs).logits
    model.save_pretrained(tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    loaded = load_lslo(tiny_model(0), tmp_path / "adapter").eval()
    assert torch.equal(loaded(**batch, **langs).logits, want)
    assert loaded.lslo_config == model.lslo_config

    with pytest.raises(LsloError, match="d_model") as err:
        load_lslo(tiny_model(0, d_model=32), tmp_path / "adapter")
    assert "\n" not in str(err.value)
    with pytest.raises(LsloError, match="fingerprint") as err:
        load_lslo(tiny_model(1), tmp_path / "adapter")
    assert "\n" not in str(err.value)
    with pytest.raises(LsloError, match="not found"):
        load_lslo(tiny_model(0), tmp_path / "nowhere")


# 7. Language codes in three styles; an unknown code names itself.
def test_language_code_styles_and_unknown_code():
    model = make_lslo()
    batch, _ = make_batch(random_samples(2, seed=6))
    a = model(**batch, src_lang=["en", "sw"], tgt_lang=["fr", "zh"]).logits
    b = model(**batch, src_lang=["eng", "swh"], tgt_lang=["fra", "zho_simpl"]).logits
    c = model(**batch, src_lang=["eng_Latn", "swh_Latn"], tgt_lang=["fra_Latn", "zho_Hans"]).logits
    assert torch.equal(a, b) and torch.equal(a, c)
    with pytest.raises(LsloError, match="'xx_Yyyy'"):
        model(**batch, src_lang=["en", "xx_Yyyy"], tgt_lang="fr")
    with pytest.raises(LsloError, match="de"):  # a real language that is not configured
        model(**batch, src_lang="en", tgt_lang=["fr", "deu_Latn"])
    with pytest.raises(LsloError, match="3 codes for a batch of 2"):
        model(**batch, src_lang=["en", "fr", "zh"], tgt_lang="fr")


def test_routing_lasts_one_call_and_backward_does_not_need_it():
    """The routing a call sets is cleared when it ends: the base model run alone then fails loudly instead of
    reusing the last call's languages, and a loss computed inside the call still back-propagates."""
    model = make_lslo()
    batch, labels = make_batch(random_samples(2, seed=7))
    logits = model(**batch, src_lang=["en", "sw"], tgt_lang=["fr", "zh"]).logits
    with pytest.raises(RuntimeError, match="called without routing"):
        model.base_model(**batch)
    F.cross_entropy(logits.transpose(1, 2), labels).backward()
    grads = [layer.lora_B.grad for layer in model.lslo_layers().values()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    with pytest.raises(ValueError):  # a call that fails inside the model clears it as well
        model(**batch, src_lang=["en", "sw"], tgt_lang=["fr", "zh"], labels=torch.full((3, 1), 0))
    with pytest.raises(RuntimeError, match="called without routing"):
        model.base_model(**batch)


# 8. Exact parameter accounting on the real M2M-100 418M shape, built on the meta device.
def test_parameter_report_m2m100_418m_on_meta():
    cfg = M2M100Config(vocab_size=128112, d_model=1024, encoder_layers=12, decoder_layers=12, encoder_ffn_dim=4096,
                       decoder_ffn_dim=4096, encoder_attention_heads=16, decoder_attention_heads=16)
    with torch.device("meta"):
        base = M2M100ForConditionalGeneration(cfg)
    langs = {"en": "high", "fr": "high", "it": "high", "de": "high", "nl": "medium", "zh": "medium", "ja": "medium",
             "ko": "medium", "oc": "low", "or": "low", "sd": "low", "wo": "low"}
    report = add_lslo(base, LSLoConfig(languages=langs)).parameter_report()
    d, f, v, L = 1024, 4096, 128112, 12
    # Hand count. One language of rank r owns r*(in+out) per adapted linear:
    # encoder q,k,v (d->d) + fc1 (d->f) + fc2 (f->d); decoder q,k,v,cross_q,cross_k,cross_v + fc1 + fc2.
    per_rank = L * (3 * 2 * d + 2 * (d + f)) + L * (6 * 2 * d + 2 * (d + f))
    attn = 4 * (d * d + d)
    ffn = d * f + f + f * d + d
    ln = 2 * d
    base_count = v * d + L * (attn + ffn + 2 * ln) + L * (2 * attn + ffn + 3 * ln) + 2 * ln  # tied embeddings once
    assert report["base_params"] == base_count
    for lang, tier in langs.items():
        r = {"high": 2, "medium": 2, "low": 8}[tier]
        assert report["languages"][lang]["params"] == r * per_rank
    assert report["tiers"]["low"]["params"] == 4 * 8 * per_rank
    assert report["total"] == (8 * 2 + 4 * 8) * per_rank
    assert report["percent_of_base"] == pytest.approx(100 * 48 * per_rank / base_count)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(encoder_routing="src*3"), "encoder_routing"),
        (dict(decoder_routing="src*2,sideways*2"), "decoder_routing"),
    ],
)
def test_bad_routing_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        add_lslo(tiny_model(0), LSLoConfig(languages=dict(LANGS), **kwargs))


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(encoder_modules=["q", "gate"]), "encoder_modules"),
        (dict(encoder_modules=["cross_q"]), "encoder_modules"),
        (dict(ranks={"high": 0, "medium": 2, "low": 8}), "ranks"),
        (dict(ranks={"high": 2}), "ranks"),
        (dict(languages={"en": "very-high"}), "languages"),
        (dict(dropout=1.5), "dropout"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    values = dict(languages=dict(LANGS))
    values.update(kwargs)
    with pytest.raises(ValueError, match=field):
        LSLoConfig(**values)


def test_config_json_round_trip_and_rank_override(tmp_path):
    cfg = LSLoConfig(languages=dict(LANGS), ranks={**RANKS, "wo": 4}, encoder_routing="src*3,tgt*1")
    cfg.save(tmp_path / "c.json")
    again = LSLoConfig.load(tmp_path / "c.json")
    assert again == cfg and again.rank("wo") == 4 and again.rank("sw") == 8
    assert again.routes("encoder", 4) == ["src", "src", "src", "tgt"]
    assert LSLoConfig(languages=dict(LANGS)).routes("encoder", 12) == ["src"] * 9 + ["tgt"] * 3  # paper default


def test_bf16_base_without_autocast():
    base = tiny_model(0).to(torch.bfloat16)
    reference = copy.deepcopy(base)
    model = add_lslo(base, LSLoConfig(languages=dict(LANGS)))
    batch, _ = make_batch(random_samples(3))
    out = model(**batch, src_lang=["en", "sw", "zh"], tgt_lang="fr").logits
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, reference(**batch).logits)
