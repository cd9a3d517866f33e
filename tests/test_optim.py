"""LanguageAdamW: AdamW over separate per-language LoRAs, computed on the concatenated matrices."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from test_core import make_batch, random_samples
from test_scale import make, pick, use_path

from lslo.checkpoint import read_checkpoint, write_checkpoint
from lslo.layer import MIXED_PATHS
from lslo.optim import LanguageAdamW

pytestmark = pytest.mark.usefixtures("one_thread")
HYPER = dict(lr=3e-2, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.1)


def step(model, optimizer, src, tgt, seed):
    """One optimizer step on a batch routed src -> tgt; returns which languages each route used."""
    batch, labels = make_batch(random_samples(len(src), seed=seed))
    out = model(**batch, src_lang=src, tgt_lang=tgt)
    F.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100).backward()
    used = {"src": {model.languages.index(c) for c in src}, "tgt": {model.languages.index(c) for c in tgt}}
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return used


def trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def test_with_every_language_in_every_step_it_is_torch_adamw_bit_for_bit():
    model = make(3, randomize=True)
    ref = copy.deepcopy(model)
    codes = list(model.languages)
    ours, theirs = LanguageAdamW(trainable(model), model, **HYPER), torch.optim.AdamW(trainable(ref), fused=True, **HYPER)
    for k in range(4):
        src, tgt = codes[k % 3 :] + codes[: k % 3], codes[::-1]
        step(model, ours, src, tgt, seed=k)
        step(ref, theirs, src, tgt, seed=k)
    for a, b in zip(trainable(model), trainable(ref), strict=True):
        assert torch.equal(a, b)


class PerLanguageAdamW:
    """The reference: torch AdamW over one separate tensor per (matrix, language); a language the step did not
    route to has grad None, so torch skips it (what separate per-language LoRA modules get)."""

    def __init__(self, model):
        self.slices = []  # (full matrix, axis, language, its own tensor)
        for layer in model.lslo_layers().values():
            for matrix, route, axis in layer.language_params():
                for lang in range(len(layer.ranks)):
                    part = matrix.detach().narrow(axis, layer.offsets[lang], layer.ranks[lang]).clone()
                    self.slices.append((matrix, route, axis, lang, layer, torch.nn.Parameter(part)))
        self.adam = torch.optim.AdamW([s[-1] for s in self.slices], **HYPER)

    def step(self, used):
        for matrix, route, axis, lang, layer, part in self.slices:
            present = lang in used[route]
            part.grad = matrix.grad.narrow(axis, layer.offsets[lang], layer.ranks[lang]).clone() if present else None
        self.adam.step()
        with torch.no_grad():
            for matrix, _, axis, lang, layer, part in self.slices:
                matrix.narrow(axis, layer.offsets[lang], layer.ranks[lang]).copy_(part)
                matrix.grad = None


@pytest.mark.parametrize("n", [12, 200])
def test_it_is_adamw_over_separate_per_language_loras(n):
    """Batches that use a changing handful of languages, the same gradients for both optimizers: every weight
    matches the per-language reference, and a language a step did not use stays exactly where it was although
    its momentum is not zero."""
    model = make(n, randomize=True)
    ref = copy.deepcopy(model)
    ours, theirs = LanguageAdamW(trainable(model), model, **HYPER), PerLanguageAdamW(ref)
    for k in range(5):
        src, tgt = pick(min(n, 6), 4, 10 + k), pick(min(n, 6), 4, 20 + k)
        before = {name: (layer.lora_A.detach().clone(), layer.lora_B.detach().clone())
                  for name, layer in model.lslo_layers().items()}  # fmt: skip
        batch, labels = make_batch(random_samples(4, seed=k))
        out = model(**batch, src_lang=src, tgt_lang=tgt)
        F.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100).backward()
        for a, b in zip(trainable(model), trainable(ref), strict=True):
            b.grad = a.grad.clone()
        ours.step()
        ours.zero_grad(set_to_none=True)
        theirs.step({"src": {model.languages.index(c) for c in src}, "tgt": {model.languages.index(c) for c in tgt}})
        for name, layer in model.lslo_layers().items():
            used = {model.languages.index(c) for c in (src if layer.route == "src" else tgt)}
            for lang in set(range(n)) - used:
                s = layer.span(lang)
                assert torch.equal(layer.lora_A[s], before[name][0][s]), (name, lang)
                assert torch.equal(layer.lora_B[:, s], before[name][1][:, s]), (name, lang)
        for a, b in zip(trainable(model), trainable(ref), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)  # per-slice bias correction: tensor arithmetic


def test_state_dict_round_trip_continues_exactly():
    model = make(12, randomize=True)
    opt = LanguageAdamW(trainable(model), model, **HYPER)
    step(model, opt, pick(12, 4, 1), pick(12, 4, 2), seed=1)
    twin = copy.deepcopy(model)
    twin_opt = LanguageAdamW(trainable(twin), twin, **HYPER)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    for k in range(2, 4):
        step(model, opt, pick(12, 4, 3 * k), pick(12, 4, 3 * k + 1), seed=k)
        step(twin, twin_opt, pick(12, 4, 3 * k), pick(12, 4, 3 * k + 1), seed=k)
    for a, b in zip(trainable(model), trainable(twin), strict=True):
        assert torch.equal(a, b)


def test_validation_forwards_do_not_count_as_used():
    model = make(12, randomize=True)
    batch, _ = make_batch(random_samples(2, seed=0))
    with torch.no_grad():
        model(**batch, src_lang=pick(12, 2, 1), tgt_lang=pick(12, 2, 2))
    assert model.routing.take_used() == {"src": set(), "tgt": set()}


@pytest.mark.parametrize("path", ["single", *MIXED_PATHS])
def test_b_is_language_major_and_every_path_gives_gradients_in_its_layout(path):
    """Each language's columns of B are one block of memory, and every path computes B's gradient in B's own layout
    (so autograd stores it without a copy, and the optimizer updates views of it)."""
    model = make(12, randomize=True)
    use_path(model, "auto" if path == "single" else path)
    computed = []  # the gradients as the path computed them, before autograd stores them in .grad
    for layer in model.lslo_layers().values():
        layer.lora_B.register_hook(lambda g, b=layer.lora_B: computed.append(g.stride() == b.stride()))
    src, tgt = (pick(12, 1, 1) * 3, pick(12, 1, 2) * 3) if path == "single" else (pick(12, 3, 1), pick(12, 3, 2))
    batch, labels = make_batch(random_samples(3, seed=0))
    F.cross_entropy(model(**batch, src_lang=src, tgt_lang=tgt).logits.flatten(0, 1), labels.flatten()).backward()
    for layer in model.lslo_layers().values():
        assert layer.lora_B.t().is_contiguous() and layer.lora_A.is_contiguous()
        assert layer.lora_B.grad.stride() == layer.lora_B.stride(), path
        assert layer.lora_A.grad.stride() == layer.lora_A.stride(), path
    assert len(computed) == len(model.lslo_layers()) and all(computed), path


def test_a_row_major_b_takes_the_copying_path_to_the_same_weights():
    """A B laid out row-major (e.g. set by hand through `.data`) has no contiguous language slices: the optimizer
    updates copies and writes them back, to the same weights as the in-place views."""
    model = make(12, randomize=True)
    twin = copy.deepcopy(model)
    for layer in twin.lslo_layers().values():
        layer.lora_B.data = layer.lora_B.data.contiguous()
    assert not next(iter(twin.lslo_layers().values())).lora_B.t().is_contiguous()
    opt, twin_opt = LanguageAdamW(trainable(model), model, **HYPER), LanguageAdamW(trainable(twin), twin, **HYPER)
    for k in range(3):
        src, tgt = pick(12, 4, 5 * k), pick(12, 4, 5 * k + 1)
        step(model, opt, src, tgt, seed=k)
        step(twin, twin_opt, src, tgt, seed=k)
    for a, b in zip(trainable(model), trainable(twin), strict=True):
        assert torch.equal(a, b)


def test_resume_through_the_checkpoint_format_continues_exactly(tmp_path):
    """The checkpoint stores tensors row-major; a resumed optimizer re-lays B's moments as B and goes on exactly."""
    model = make(12, randomize=True)
    opt = LanguageAdamW(trainable(model), model, **HYPER)
    step(model, opt, pick(12, 4, 1), pick(12, 4, 2), seed=1)
    write_checkpoint(tmp_path / "ckpt", {"model": model.state_dict(), "optimizer": opt.state_dict()})
    state = read_checkpoint(tmp_path / "ckpt")
    twin = make(12, randomize=False, seed=7)
    twin.load_state_dict(state["model"])
    twin_opt = LanguageAdamW(trainable(twin), twin, **HYPER)
    twin_opt.load_state_dict(state["optimizer"])
    for k in range(2, 4):
        step(model, opt, pick(12, 4, 3 * k), pick(12, 4, 3 * k + 1), seed=k)
        step(twin, twin_opt, pick(12, 4, 3 * k), pick(12, 4, 3 * k + 1), seed=k)
    for a, b in zip(trainable(model), trainable(twin), strict=True):
        assert torch.equal(a, b)
    layer = next(iter(twin.lslo_layers().values()))
    assert twin_opt.state[layer.lora_B]["exp_avg"].stride() == layer.lora_B.stride()


def test_new_storage_is_updated_not_the_old_one():
    """The optimizer keeps each language's views of a matrix and of its moments between steps; a matrix given new
    storage (`.data = ...`) or a state loaded into the same optimizer gets new views, and training goes on exactly."""
    model = make(12, randomize=True)
    opt = LanguageAdamW(trainable(model), model, **HYPER)
    twin = copy.deepcopy(model)
    twin_opt = LanguageAdamW(trainable(twin), twin, **HYPER)
    step(model, opt, pick(12, 4, 1), pick(12, 4, 2), seed=1)
    step(twin, twin_opt, pick(12, 4, 1), pick(12, 4, 2), seed=1)
    for layer in model.lslo_layers().values():
        layer.lora_A.data, layer.lora_B.data = layer.lora_A.data.clone(), layer.lora_B.data.t().clone().t()
    opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # new moment tensors, same optimizer
    for k in range(2, 4):
        step(model, opt, pick(12, 4, 3 * k), pick(12, 4, 3 * k + 1), seed=k)
        step(twin, twin_opt, pick(12, 4, 3 * k), pick(12, 4, 3 * k + 1), seed=k)
    for a, b in zip(trainable(model), trainable(twin), strict=True):
        assert torch.equal(a, b)
