"""benchmarks/base_card.py: the base's manifest rendered as RESULTS.md section `base` (nothing trains)."""

from __future__ import annotations

import pytest

from benchmarks import base_card

TIERS = {"en": "high", "fr": "high", "sw": "low"}


@pytest.fixture(scope="module")
def card():
    return base_card


def manifest() -> dict:
    stage = {"steps": 10, "tokens": 1000, "hours": 0.5, "settings": {"temperature": 5.0, "lr": 0.001, "warmup_steps": 4},
             "valid": {"step": 10, "valid_loss": 4.25}, "valid_curve": [{"step": 5, "valid_loss": 4.5}, {"step": 10, "valid_loss": 4.25}]}  # fmt: skip
    gap = {"nll": 3.0, "nll_shifted_sources": 3.5, "gap": 0.5}
    return {
        "exported": "2026-01-01T00:00:00+0000", "rebuild": "lslo pretrain --steps 10", "parameters": 1234,
        "shape": {"d_model": 16, "encoder_layers": 1, "decoder_layers": 1},
        "stages": [stage, {**stage, "settings": {**stage["settings"], "temperature": 1.0}}],
        "chrf": {"sentences_per_direction": 2, "decoding": "greedy", "mean": 20.0,
                 "directions": {"en-fr": 30.0, "fr-en": 20.0, "en-sw": 10.0, "sw-en": 14.0, "fr-sw": 12.0, "sw-fr": 16.0}},
        "source_dependence": {**gap, "groups": {"H->H": {**gap, "gap": 0.75}, "H->L": gap, "L->H": gap}},
    }  # fmt: skip


def test_groups_are_means_over_their_directions(card):
    assert card.chrf_by_group(manifest()["chrf"]["directions"], TIERS) == {"H->H": 25.0, "H->L": 11.0, "L->H": 15.0}


def test_the_section_shows_stages_curves_and_the_tier_table(card):
    text = card.render(manifest(), TIERS, "base/x")
    assert "| 2 | 10 | 1,000 | 0.50 | 1.0 | 0.001 | 4 | 4.250 @ 10 |" in text
    assert "- stage 1: 5: 4.500, 10: 4.250" in text
    assert "| H->H | 25.00 | 3.000 | 3.500 | 0.750 |" in text and "| all | 20.00 | 3.000 | 3.500 | 0.500 |" in text
    assert "`lslo pretrain --steps 10`" in text


def test_a_missing_manifest_is_a_one_line_error(card, tmp_path, capsys):
    assert card.main(["--base", str(tmp_path / "nope"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lslo_base.json is missing" in err and "make base" in err


def test_the_shipped_base_loads_as_float32_with_a_plain_from_pretrained():
    """The READMEs' Python example: fp16 on disk, fp32 in memory (fp16 on a CPU trains ~30x slower)."""
    import json
    from pathlib import Path

    import torch
    from transformers import M2M100ForConditionalGeneration

    base = Path(__file__).resolve().parents[1] / "base" / "bible12-small"
    assert json.loads((base / "config.json").read_text())["dtype"] == "float32"
    model = M2M100ForConditionalGeneration.from_pretrained(str(base))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
