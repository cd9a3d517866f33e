"""Gradual pruning: the cubic schedule, exact ratios per scope, masks that only grow and hold through AdamW,
resume through the trainer, save/load/merge of a pruned adapter, the compact export, accounting."""

from __future__ import annotations

import json
import math
import random
import struct
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import LANG_IDS, tiny_model

from lslo import LSLoConfig, LsloError, add_lslo, load_lslo
from lslo.pruning import GradualPruner, PruningConfig, prune, sparsity_at
from lslo.subspace import COMPACT_WEIGHTS, load_compact, plot_subspace, save_compact, subspace_report

LANGS = {"en": "high", "fr": "high", "zh": "medium", "sw": "low"}
RANKS = {"high": 2, "medium": 2, "low": 8}


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(seed: int = 0, scale: dict[str, float] | None = None):
    model = add_lslo(tiny_model(seed), LSLoConfig(languages=dict(LANGS), ranks=dict(RANKS), lang_token_ids=dict(LANG_IDS),
                                                  encoder_routing="src*3,tgt*1", decoder_routing="tgt"))  # fmt: skip
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in model.lslo_layers().values():
            layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=g) * 0.3)
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.3)
            for lang, factor in (scale or {}).items():
                layer.lora_B[:, layer.span(model.languages.index(lang))] *= factor
    return model


def random_batch(seed: int, n: int = 4):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 90, (n, 7), generator=g)
    labels = torch.randint(3, 90, (n, 6), generator=g)
    dec = torch.cat([torch.full((n, 1), 2), labels[:, :-1]], 1)
    langs = list(LANGS)
    src = [langs[i] for i in torch.randint(0, len(langs), (n,), generator=g).tolist()]
    tgt = [langs[i] for i in torch.randint(0, len(langs), (n,), generator=g).tolist()]
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=dec, src_lang=src, tgt_lang=tgt)
    return inputs, labels


def train_steps(model, optimizer, first: int, last: int, after=None):
    for step in range(first, last + 1):
        inputs, labels = random_batch(step)
        logits = model(**inputs).logits
        F.cross_entropy(logits.flatten(0, 1), labels.flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if after is not None:
            after(step, model)


def pieces(model, kind: str):
    """(layer name, language, weights, keep-mask or None) of every language slice of matrix `kind`."""
    for name, layer in model.lslo_layers().items():
        weight, mask = getattr(layer, f"lora_{kind}"), getattr(layer, f"lora_{kind}_mask")
        for i, lang in enumerate(model.languages):
            s = (layer.span(i),) if kind == "A" else (slice(None), layer.span(i))
            yield name, lang, weight[s], None if mask is None else mask[s]


def pruned_fractions(model, kind: str, by: str) -> dict:
    """Per group (language | layer | (layer, language)): (pruned entries, total entries)."""
    out: dict = {}
    for name, lang, weight, mask in pieces(model, kind):
        key = {"language": lang, "layer": name, "matrix": (name, lang)}[by]
        pruned, total = out.get(key, (0, 0))
        out[key] = (pruned + (0 if mask is None else int((~mask).sum())), total + weight.numel())
    return out


# 1. The schedule is the cubic formula at every step and ends at exactly R; every scope group ends at R.
def formula(t: float, r: float, t1: float, t2: float) -> float:
    if t < t1:
        return 0.0
    if t > t1 + t2:
        return r
    return r - r * (1 - (t - t1) / t2) ** 3


def test_schedule_is_the_cubic_formula():
    cfg = PruningConfig(ratio=0.9, start=2, duration=10)
    for i in range(0, 301):
        t = i / 20
        assert sparsity_at(t, cfg) == pytest.approx(formula(t, 0.9, 2, 10), abs=1e-12), t
    assert sparsity_at(12, cfg) == 0.9 and sparsity_at(40, cfg) == 0.9 and sparsity_at(1.999, cfg) == 0.0


@pytest.mark.parametrize("unit,steps_per_epoch,every", [("step", None, 1), ("step", None, 3), ("epoch", 4, 1)])
def test_pruner_follows_the_schedule_at_every_step(unit, steps_per_epoch, every):
    model = make_model()
    cfg = PruningConfig(ratio=0.9, start=2, duration=10, unit=unit, every=every)
    pruner = GradualPruner(model, cfg, steps_per_epoch=steps_per_epoch)
    horizon = 16 * (steps_per_epoch or 1)
    for step in range(1, horizon + 1):
        pruner(step, model)
        t = step / (steps_per_epoch or 1)
        # masks are recomputed at start, start + every, ... and at start + duration
        due = 0.0 if t < 2 else 12.0 if t >= 12 else 2 + math.floor((t - 2) / every) * every
        want = formula(due, 0.9, 2, 10)
        assert pruner.ratio == pytest.approx(want, abs=1e-12), step
        for lang, (pruned, total) in pruned_fractions(model, "B", "language").items():
            assert abs(pruned - want * total) <= 1, (step, lang)
        if t >= 12:
            assert pruner.ratio == 0.9
    for lang, (pruned, total) in pruned_fractions(model, "B", "language").items():
        assert abs(pruned - 0.9 * total) <= 1, lang


@pytest.mark.parametrize("scope", ["language", "layer", "matrix"])
@pytest.mark.parametrize("matrices", ["B", "AB"])
def test_each_scope_group_ends_at_ratio_and_prunes_smallest(scope, matrices):
    model = make_model(scale={"sw": 5.0, "zh": 0.2})  # languages of very different magnitudes
    before = {k: [w.detach().abs().clone() for *_, w, _ in pieces(model, k)] for k in "AB"}
    prune(model, 0.75, scope, matrices)
    for kind in "AB":
        layer_masks = [getattr(m, f"lora_{kind}_mask") for m in model.lslo_layers().values()]
        if kind not in matrices:
            assert all(m is None for m in layer_masks)
            continue
        groups = pruned_fractions(model, kind, scope)
        for key, (pruned, total) in groups.items():
            assert abs(pruned - 0.75 * total) <= 1, (kind, key)
        # Within a group, every pruned entry was no larger than every kept one (magnitude pruning).
        grouped: dict = {}
        for (name, lang, _, mask), mag in zip(pieces(model, kind), before[kind], strict=True):
            key = {"language": lang, "layer": name, "matrix": (name, lang)}[scope]
            grouped.setdefault(key, []).append((mag.reshape(-1), mask.reshape(-1)))
        for key, parts in grouped.items():
            mag = torch.cat([m for m, _ in parts])
            keep = torch.cat([k for _, k in parts])
            assert mag[~keep].max() <= mag[keep].min(), (kind, key)
        # Pruned entries are zero in the weights.
        for *_, w, mask in pieces(model, kind):
            assert torch.count_nonzero(w[~mask]) == 0
    per_language = pruned_fractions(model, "B", "language")
    share = {lang: 1 - p / t for lang, (p, t) in per_language.items()}
    if scope == "layer":  # languages compete: the large-magnitude language keeps far more
        assert share["sw"] > 0.4 and share["zh"] < 0.05  # vs 0.25 each under the other scopes
    else:
        assert all(abs(s - 0.25) < 0.01 for s in share.values())


# 2. Pruned entries stay exactly zero through AdamW (momentum + weight decay); masks only grow.
@pytest.mark.parametrize("give_optimizer", [True, False])
def test_pruned_entries_stay_zero_through_adamw(give_optimizer):
    model = make_model()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    cfg = PruningConfig(ratio=0.8, start=2, duration=6, unit="step", matrices="AB", scope="language")
    pruner = GradualPruner(model, cfg, optimizer=optimizer if give_optimizer else None)
    previous: dict = {}

    def check(step, m):
        pruner(step, m)
        for kind in "AB":
            for name, lang, w, mask in pieces(m, kind):
                if mask is None:  # before the first mask update
                    assert step < cfg.start
                    continue
                assert torch.count_nonzero(w[~mask]) == 0, (step, name, lang)
                if (kind, name, lang) in previous:
                    assert not (mask & ~previous[kind, name, lang]).any(), "a pruned entry came back"
                previous[kind, name, lang] = mask.clone()

    train_steps(model, optimizer, 1, 8, after=check)
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    train_steps(model, optimizer, 9, 58, after=check)  # 50 more steps after the final mask update
    changed = sum(int((p.detach() != trained[n]).sum()) for n, p in model.named_parameters() if p.requires_grad)
    assert changed > 0.1 * sum(int(layer.lora_B_mask.sum()) for layer in model.lslo_layers().values())
    report = model.parameter_report()
    kept = sum(int(m.sum()) for layer in model.lslo_layers().values() for m in (layer.lora_A_mask, layer.lora_B_mask))
    assert report["total"] == kept
    if give_optimizer:  # Adam's moments of the pruned entries are zero too
        for layer in model.lslo_layers().values():
            state = optimizer.state[layer.lora_B]
            assert torch.count_nonzero(state["exp_avg"][~layer.lora_B_mask]) == 0


def test_pruner_state_round_trip_equals_uninterrupted_run():
    cfg = PruningConfig(ratio=0.8, start=2, duration=8, unit="step", every=2)

    def run(last, state=None, first=1):
        model = make_model()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
        pruner = GradualPruner(cfg=cfg)  # bound lazily, as inside the trainer
        if state is not None:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if p.requires_grad:
                        p.copy_(state["model"][n])
            optimizer.load_state_dict(state["optimizer"])
            pruner.load_state_dict(state["pruner"])
        train_steps(model, optimizer, first, last, after=pruner)
        weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return model, {"model": weights, "optimizer": optimizer.state_dict(), "pruner": pruner.state_dict()}

    full, _ = run(14)
    _, half = run(6)
    half = torch.utils._pytree.tree_map(lambda x: x.clone() if torch.is_tensor(x) else x, half)
    resumed, _ = run(14, state=half, first=7)
    for (name, a), b in zip(full.lslo_layers().items(), resumed.lslo_layers().values(), strict=True):
        assert torch.equal(a.lora_B_mask, b.lora_B_mask), name
        assert torch.equal(a.lora_B, b.lora_B) and torch.equal(a.lora_A, b.lora_A), name
    with pytest.raises(LsloError, match="other pruning settings"):
        GradualPruner(cfg=PruningConfig(ratio=0.5)).load_state_dict(half["pruner"])


# 2b. Resume through the real trainer: a run stopped at step 6 and resumed to 14 equals one run to 14.
WORDS = ["a", "bo", "ci", "du", "ek", "fa", "gi", "ho", "ja", "ku", "lo", "mi"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    from lslo.data.corpus import MultiwayCorpus, write_multiway
    from lslo.tokenizer import load_tokenizer, model_vocab_size, train_tokenizer

    root = tmp_path_factory.mktemp("prune_world")
    rng = random.Random(0)
    sents: dict[str, list[str]] = {lang: [] for lang in ("en", "fr", "sw")}
    for _ in range(60):
        words = [WORDS[rng.randrange(len(WORDS))] for _ in range(rng.randint(2, 7))]
        for lang in sents:
            sents[lang].append(" ".join(lang + w for w in words))
    ids = {lang: [f"s.{i}" for i in range(60)] for lang in sents}
    write_multiway(MultiwayCorpus(sents, ids), root / "data" / "train")
    train_tokenizer(sents, root / "tok", 300, per_language=60)
    tok = load_tokenizer(root / "tok")
    config = M2M100Config(
        vocab_size=model_vocab_size(tok), d_model=16, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_position_embeddings=64, dropout=0.1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    M2M100ForConditionalGeneration(config).save_pretrained(root / "model")
    tok.save_pretrained(str(root / "model"))
    return root


def test_resume_through_the_trainer_keeps_masks_and_weights(world, tmp_path):
    from lslo.checkpoint import read_checkpoint
    from lslo.run_folder import checkpoints
    from lslo.train import TrainConfig, train

    cfg = PruningConfig(ratio=0.8, start=2, duration=8, unit="step", every=2, matrices="AB")

    def run(out: Path, max_steps: int, resume: bool = False) -> tuple[dict, dict]:
        train_cfg = TrainConfig(
            data=str(world / "data"), base_model=str(world / "model"), out_dir=str(out), method="lslo",
            languages={"en": "high", "fr": "high", "sw": "low"}, valid_split=None, max_steps=max_steps,
            max_tokens=64, max_len=16, warmup_steps=2, lr=1e-2, weight_decay=0.1, save_every=100, progress=False,
            seed=5, resume=resume,
        )  # fmt: skip
        train(train_cfg, callbacks=[GradualPruner(cfg=cfg)])
        state = read_checkpoint(checkpoints(out)[-1])
        return state["model"], state["callback0"]

    want_weights, want_pruner = run(tmp_path / "straight", 14)
    run(tmp_path / "stopped", 6)
    got_weights, got_pruner = run(tmp_path / "stopped", 14, resume=True)
    assert got_pruner["ratio"] == want_pruner["ratio"] == 0.8
    for name, masks in want_pruner["masks"].items():
        for kind in "AB":
            assert torch.equal(got_pruner["masks"][name][kind], masks[kind]), (name, kind)
    for name, w in want_weights.items():
        assert torch.equal(got_weights[name], w), name
    # The saved adapter is pruned: its masks come back with load_lslo, and its pruned entries are zero.
    loaded = load_lslo(_load_base(world), tmp_path / "straight" / "model")
    for name, layer in loaded.lslo_layers().items():
        assert torch.equal(layer.lora_B_mask.cpu(), want_pruner["masks"][name]["B"])
        assert torch.count_nonzero(layer.lora_B[~layer.lora_B_mask]) == 0


def _load_base(world: Path):
    from transformers import M2M100ForConditionalGeneration

    return M2M100ForConditionalGeneration.from_pretrained(world / "model").eval()


# 3. A pruned adapter saved, reloaded and merged gives the same outputs; the compact export is small.
def test_pruned_adapter_save_load_merge_and_compact_export(tmp_path):
    model = make_model().eval()
    prune(model, 0.9, "language", "B")
    inputs, _ = random_batch(3)
    langs = dict(src_lang=["en", "sw", "zh", "fr"], tgt_lang=["sw", "fr", "en", "zh"])
    inputs.update(langs)
    want = model(**inputs).logits

    model.save_pretrained(tmp_path / "adapter")
    loaded = load_lslo(tiny_model(0), tmp_path / "adapter").eval()
    assert torch.equal(loaded(**inputs).logits, want)
    assert loaded.parameter_report() == model.parameter_report()
    for a, b in zip(model.lslo_layers().values(), loaded.lslo_layers().values(), strict=True):
        assert torch.equal(a.lora_B_mask, b.lora_B_mask) and b.lora_A_mask is None

    one = {k: v[:1] if torch.is_tensor(v) else v[0] for k, v in inputs.items()}
    merged = loaded.merge_direction(one["src_lang"], one["tgt_lang"])
    plain = {k: v for k, v in one.items() if torch.is_tensor(v)}
    torch.testing.assert_close(merged(**plain).logits, want[:1], rtol=1e-4, atol=1e-4 * want.abs().max().item())

    summary = save_compact(model, tmp_path / "compact")
    compact = load_compact(tiny_model(0), tmp_path / "compact").eval()
    assert torch.equal(compact(**inputs).logits, want)
    assert compact.parameter_report() == model.parameter_report()
    for a, b in zip(model.lslo_layers().values(), compact.lslo_layers().values(), strict=True):
        assert torch.equal(a.lora_B_mask, b.lora_B_mask)

    # Size: the payload is the kept B values + their index + dense A, nothing more (header aside).
    layers = list(model.lslo_layers().values())
    kept_b = sum(int(layer.lora_B_mask.sum()) for layer in layers)
    dense_a = sum(layer.lora_A.numel() for layer in layers)
    path = tmp_path / "compact" / COMPACT_WEIGHTS
    header = 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]
    bound = 1.3 * (kept_b * (4 + 4) + dense_a * 4) + header  # fp32 values, at most 4 index bytes per kept entry
    assert path.stat().st_size <= bound
    assert path.stat().st_size <= 1.3 * (kept_b + dense_a) * 4 + header  # within 1.3x of the surviving values
    assert summary["encoding"] == {"A": "dense", "B": "bitmap"}  # 10% kept: a bitmap beats int32 indices
    dense_b = sum(layer.lora_B.numel() for layer in layers)
    # exactly: the kept B values, a 1-bit-per-entry bitmap of B and the dense A values
    assert path.stat().st_size - header == kept_b * 4 + math.ceil(dense_b / 8) + dense_a * 4

    # fp16 values, A pruned too, and so sparse that int32 indices are the smaller index.
    prune(model, 0.99, "language", "AB")
    save_compact(model, tmp_path / "half", dtype="float16")
    meta = json.loads((tmp_path / "half" / "adapter_config.json").read_text())
    assert meta["encoding"] == {"A": "indices", "B": "indices"}
    half = load_compact(tiny_model(0), tmp_path / "half").eval()
    want = model(**inputs).logits
    torch.testing.assert_close(half(**inputs).logits, want, rtol=1e-2, atol=1e-2 * want.abs().max().item())
    kept = sum(int(m.sum()) for layer in layers for m in (layer.lora_A_mask, layer.lora_B_mask))
    path = tmp_path / "half" / COMPACT_WEIGHTS
    header = 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert path.stat().st_size - header == kept * (2 + 4)  # fp16 value + int32 index per kept entry
    with pytest.raises(LsloError, match="fingerprint"):
        load_compact(tiny_model(1), tmp_path / "half")


def test_subspace_report_counts_survivors_and_plots(tmp_path):
    model = make_model()
    prune(model, 0.9, "language", "B")
    report = subspace_report(model)
    params = model.parameter_report()
    for tier, row in params["tiers"].items():
        rows = [r for r in report["rows"] if r["tier"] == tier]
        assert sum(r["A_kept"] + r["B_kept"] for r in rows) == row["params"]
        kept_b = sum(r["B_kept"] for r in rows)
        assert abs(kept_b - 0.1 * sum(r["B_total"] for r in rows)) <= len(row["languages"])
        assert report["tiers"][tier] == pytest.approx(0.1, abs=0.01)
    assert {(r["side"], r["position"]) for r in report["positions"]} == {
        (s, p) for s, ps in (("encoder", ["q", "k", "v", "fc1", "fc2"]),
                             ("decoder", ["q", "k", "v", "cross_q", "cross_k", "cross_v", "fc1", "fc2"])) for p in ps
    }  # fmt: skip
    assert len(report["rows"]) == 3 * 4 * (5 + 8)  # tiers x layers x positions
    plot_subspace(report, tmp_path / "sub.png")
    assert (tmp_path / "sub.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "kwargs,field",
    [(dict(ratio=1.0), "ratio"), (dict(scope="global"), "scope"), (dict(unit="hour"), "unit"),
     (dict(every=0), "every"), (dict(matrices="A"), "matrices"), (dict(duration=-1), "duration")],
)  # fmt: skip
def test_bad_pruning_config_names_the_field(kwargs, field):
    with pytest.raises(LsloError, match=field) as err:
        PruningConfig(**kwargs)
    assert "\n" not in str(err.value)


def test_epoch_unit_needs_steps_per_epoch():
    model = make_model()
    with pytest.raises(LsloError, match="steps_per_epoch"):
        GradualPruner(model, PruningConfig(unit="epoch"))(1, model)
