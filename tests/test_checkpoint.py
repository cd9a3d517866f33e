"""lslo.checkpoint: the no-pickle checkpoint format round-trips what training saves, and old state.pt still resumes."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lslo.checkpoint import LEGACY, STATE_JSON, TENSORS, read_checkpoint, write_checkpoint
from lslo.errors import LsloError


def test_round_trip_is_exact_for_what_a_training_saves(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state(), "mask": torch.rand(5) > 0.5, "log": [{"step": 1, "loss": 0.1 + 0.2}],
             "nothing": None, "inf": float("inf"), "__odd": 1}  # fmt: skip
    write_checkpoint(tmp_path / "ck", state)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == sorted([STATE_JSON, TENSORS])
    back = read_checkpoint(tmp_path / "ck")
    assert back["python"] == state["python"]  # tuples stay tuples: random.setstate takes it
    random.setstate(back["python"])
    np.random.set_state(back["numpy"])
    assert back["numpy"][1].dtype == np.uint32 and np.array_equal(back["numpy"][1], state["numpy"][1])
    assert torch.equal(back["torch"], state["torch"]) and back["mask"].dtype == torch.bool
    assert back["log"] == state["log"] and back["nothing"] is None and back["inf"] == float("inf") and back["__odd"] == 1
    assert list(back["optimizer"]["state"]) == [0, 1]  # integer keys stay integers
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(back["optimizer"])
    for a, b in zip(fresh.state_dict()["state"].values(), opt.state_dict()["state"].values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(TypeError, match="cannot store object"):
        write_checkpoint(tmp_path / "bad", {"x": object()})
    assert not (tmp_path / "bad").exists()  # nothing half-written


def test_an_older_pickle_checkpoint_is_read_and_a_missing_one_is_a_clear_error(tmp_path):
    (tmp_path / "old").mkdir()
    torch.save({"step": 3, "model": {"w": torch.ones(2)}}, tmp_path / "old" / LEGACY)
    assert read_checkpoint(tmp_path / "old")["step"] == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(LsloError, match="no checkpoint there"):
        read_checkpoint(tmp_path / "empty")


def test_a_run_checkpointed_by_an_older_lslo_resumes_exactly(world, tmp_path):
    """A checkpoint in the pickle format of lslo before this one (state.pt) resumes like the new format."""
    from test_train import config, final_weights

    from lslo.run_folder import checkpoints
    from lslo.train import train

    straight, old = tmp_path / "straight", tmp_path / "old"
    train(config(world, straight, max_steps=6, valid_split=None))
    train(config(world, old, max_steps=3, valid_split=None, save_every=3))
    ckpt = checkpoints(old)[-1]
    torch.save(read_checkpoint(ckpt), ckpt / LEGACY)
    (ckpt / STATE_JSON).unlink()
    (ckpt / TENSORS).unlink()
    train(config(world, old, max_steps=6, valid_split=None, save_every=3, resume=True))
    want, got = final_weights(straight), final_weights(old)
    assert all(torch.equal(want[k], got[k]) for k in want)
