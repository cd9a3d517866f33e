"""benchmarks/paper_params.py: its shape-only counter agrees with the library (parameter_report, real prune)."""

from __future__ import annotations

import math

import pytest
from transformers import M2M100Config

from benchmarks import paper_params
from lslo import LSLoConfig, add_lslo
from lslo.languages import LANG12_TIERS


@pytest.fixture(scope="module")
def pp():
    return paper_params


def m2m418(ffn: int = 4096) -> M2M100Config:
    return M2M100Config(vocab_size=128112, d_model=1024, encoder_layers=12, decoder_layers=12, encoder_ffn_dim=ffn,
                        decoder_ffn_dim=ffn, encoder_attention_heads=16, decoder_attention_heads=16)  # fmt: skip


def test_unpruned_count_equals_parameter_report_on_meta_418m(pp):
    cfg = m2m418()
    config = LSLoConfig(languages=dict(LANG12_TIERS))
    base = pp.base_parameters(pp.meta_model(cfg))["all"]
    ours = pp.count_lslo(pp.lslo_linears(pp.meta_model(cfg), config), config, base)
    report = add_lslo(pp.meta_model(cfg), LSLoConfig(languages=dict(LANG12_TIERS))).parameter_report()
    assert ours["base_params"] == report["base_params"]
    assert ours["total"] == report["total"]
    assert ours["lslo_layers"] == report["lslo_layers"]
    for lang, row in report["languages"].items():
        assert ours["languages"][lang]["params"] == row["params"]
        assert ours["languages"][lang]["percent_of_base"] == pytest.approx(row["percent_of_base"])
    for tier, row in report["tiers"].items():
        assert ours["tiers"][tier]["params"] == row["params"]


def test_block_convention_equals_a_model_whose_ffn_is_the_block(pp):
    """fc1/fc2 LoRA on a 1024 x 1024 block costs what the library adapts on a model with FFN 1024."""
    config = LSLoConfig(languages=dict(LANG12_TIERS))
    ours = pp.count_lslo(pp.lslo_linears(pp.meta_model(m2m418()), config), config, 1, fc_block=1024)
    report = add_lslo(pp.meta_model(m2m418(ffn=1024)), LSLoConfig(languages=dict(LANG12_TIERS))).parameter_report()
    assert {k: v["params"] for k, v in ours["languages"].items()} == {k: v["params"] for k, v in report["languages"].items()}


def test_pruned_count_equals_real_prune_on_a_tiny_model(pp):
    cases = pp.check_against_prune()
    assert cases and all(c["ok"] for c in cases), [c for c in cases if not c["ok"]]
    assert {c["matrices"] for c in cases} == {"B", "AB"}


def test_rounding_is_half_up_and_the_tiny_model_hits_the_half_case(pp):
    # rank 5 x 201 entries per rank unit = 1005; 0.9 x 1005 = 904.5 -> 905 pruned (banker's rounding would give 904)
    assert pp.pruned_entries(1005, 0.9) == 905 == math.floor(0.9 * 1005 + 0.5)
    assert round(904.5) == 904
    assert pp.pruned_entries(201, 0.5) == 101
    linears = pp.lslo_linears(pp.M2M100ForConditionalGeneration(pp.tiny_config()),
                              LSLoConfig(languages=dict(pp.TINY_LANGS)))  # fmt: skip
    assert sum(lin["in"] for lin in linears) == sum(lin["out"] for lin in linears) == 201
