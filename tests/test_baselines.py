"""Baselines behind the same interface: full fine-tuning and a shared peft LoRA."""

from __future__ import annotations

import copy

import torch
from conftest import LANG_IDS, tiny_model
from test_core import LANGS, make_batch, random_samples

from lslo import LSLoConfig, add_lslo
from lslo.baselines import FullFineTune, SharedLoRA


def test_shared_lora_adapts_the_same_linears_as_lslo(tmp_path):
    base = tiny_model(0)
    reference = copy.deepcopy(base)
    placement = LSLoConfig(languages=dict(LANGS), encoder_layers=[2, 3], decoder_modules=["fc1", "fc2"])
    model = SharedLoRA(base, LANG_IDS, r=4, placement=placement).eval()
    batch, _ = make_batch(random_samples(3))
    out = model(**batch, src_lang="en", tgt_lang=["fr", "sw", "zh"]).logits
    assert torch.equal(out, reference(**batch).logits)  # untrained LoRA: B = 0
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    adapted = {n.split(".lora_")[0].removeprefix("base_model.base_model.model.") for n in trainable}
    lslo = add_lslo(tiny_model(0), placement)
    assert adapted == set(lslo.lslo_layers())
    assert all(".lora_A." in n or ".lora_B." in n for n in trainable)
    report = model.parameter_report()
    assert report["total"] == sum(4 * (16 + (32 if "fc" in n else 16)) for n in adapted)

    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    want = model(**batch, src_lang="en", tgt_lang="fr").logits
    model.save_pretrained(tmp_path / "lora")
    again = SharedLoRA.from_pretrained(tiny_model(0), tmp_path / "lora").eval()
    assert torch.equal(again(**batch, src_lang="en", tgt_lang="fr").logits, want)


def test_full_finetune_trains_everything_and_generates_mixed_targets():
    model = FullFineTune(tiny_model(0), LANG_IDS).eval()
    assert all(p.requires_grad for p in model.parameters())
    batch, _ = make_batch(random_samples(3))
    out = model.generate(batch["input_ids"], batch["attention_mask"], src_lang="en", tgt_lang=["fr", "sw", "wo"],
                         num_beams=2, max_new_tokens=4)
    assert out[:, 1].tolist() == [LANG_IDS["fr"], LANG_IDS["sw"], LANG_IDS["wo"]]
    assert model.parameter_report()["percent_of_base"] == 100.0
