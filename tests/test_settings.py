"""Config values: scientific notation, type checks naming key and type, null, repeated and dotted --set."""

from __future__ import annotations

import pytest

from lslo.cli import build_parser
from lslo.errors import LsloError
from lslo.io import load_yaml
from lslo.run_config import TrainConfig
from lslo.settings import apply_overrides, parse_set_items

BASE = "data: d\nbase_model: m\nout_dir: o\nmax_steps: 5\n"


def test_scientific_notation_is_a_number_in_yaml_and_set():
    assert load_yaml("lr: 5e-4\nn: 1E3\nx: .5e1\ns: e5\nv: 1.0e-2") == {"lr": 5e-4, "n": 1000.0, "x": 5.0, "s": "e5", "v": 0.01}
    assert parse_set_items(["lr=5e-4", "valid_split=null", "name=abc", "betas=[0.9, 9e-1]"]) == {
        "lr": 5e-4, "valid_split": None, "name": "abc", "betas": [0.9, 0.9]}


def test_config_from_yaml_reads_scientific_lr_and_coerces_types(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(BASE + "lr: 5e-4\nmax_tokens: 1e3\nwarmup_steps: 0\n")
    cfg = TrainConfig.from_yaml(path)
    assert cfg.lr == 5e-4 and isinstance(cfg.lr, float)
    assert cfg.max_tokens == 1000 and isinstance(cfg.max_tokens, int)
    cfg = TrainConfig.from_yaml(path, lr=1)  # an int where a float is needed is that float
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)


@pytest.mark.parametrize(
    ("key", "value", "needs"),
    [
        ("lr", "fast", "lr needs a number"),
        ("max_tokens", 10.5, "max_tokens needs a whole number"),
        ("max_tokens", True, "max_tokens needs a whole number"),
        ("resume", "yes", "resume needs true or false"),
        ("valid_split", 3, "valid_split needs a text or null"),
        ("adam_betas", 0.9, "adam_betas needs a list of numbers"),
        ("lslo", [1, 2], "lslo needs a mapping"),
        ("languages", "en", "languages needs a list of texts or a mapping"),
    ],
)
def test_every_value_is_type_checked_with_key_and_type(tmp_path, key, value, needs):
    path = tmp_path / "run.yaml"
    path.write_text(BASE)
    with pytest.raises(LsloError, match=needs) as err:
        TrainConfig.from_yaml(path, **{key: value})
    assert "run.yaml" in str(err.value) and "\n" not in str(err.value)


def test_null_sets_none_instead_of_being_ignored(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(BASE + "valid_split: valid\nmax_epochs: 4\n")
    assert TrainConfig.from_yaml(path).valid_split == "valid"
    cfg = TrainConfig.from_yaml(path, **parse_set_items(["valid_split=null", "max_epochs=~"]))
    assert cfg.valid_split is None and cfg.max_epochs is None
    with pytest.raises(LsloError, match="no budget"):
        TrainConfig.from_yaml(path, **parse_set_items(["max_steps=null", "max_epochs=null"]))


def test_repeated_set_flags_accumulate():
    args = build_parser().parse_args(["train", "c.yaml", "--set", "lr=1e-3", "max_steps=3", "--set", "lr=2e-3", "--resume"])
    assert args.set == ["lr=1e-3", "max_steps=3", "lr=2e-3"]
    assert parse_set_items(args.set) == {"lr": 2e-3, "max_steps": 3}


def test_dotted_set_merges_into_the_nested_block(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(BASE + "lslo:\n  ranks: {high: 2, medium: 2, low: 8}\n  decoder_routing: tgt\n")
    cfg = TrainConfig.from_yaml(path, **parse_set_items(["lslo.ranks.low=4", "lslo.alpha=16", "prune.ratio=0.5"]))
    assert cfg.lslo == {"ranks": {"high": 2, "medium": 2, "low": 4}, "decoder_routing": "tgt", "alpha": 16}
    assert cfg.prune == {"ratio": 0.5}
    data = {"lslo": {"ranks": {"low": 8}}}
    assert apply_overrides(data, {"lslo.ranks.low": 1}) == {"lslo": {"ranks": {"low": 1}}}
    assert data == {"lslo": {"ranks": {"low": 8}}}  # the input is not changed
    with pytest.raises(LsloError, match=r"lr is 0.001, not a mapping"):
        apply_overrides({"lr": 0.001}, {"lr.x": 1})
    with pytest.raises(LsloError, match="write key=value"):
        parse_set_items(["lslo..low=3"])
