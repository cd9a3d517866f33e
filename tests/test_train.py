"""The trainer: loss, schedule, config and output-dir errors, exact resume after SIGKILL, 2 processes == 1."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lslo.checkpoint import read_checkpoint
from lslo.errors import LsloError
from lslo.loss import label_smoothed_nll
from lslo.run_folder import checkpoints
from lslo.run_setup import inverse_sqrt
from lslo.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
def config(world: Path, out: Path, **kw) -> TrainConfig:
    args = dict(
        data=str(world / "data"), base_model=str(world / "model"), out_dir=str(out), method="full",
        max_steps=12, max_tokens=96, max_len=24, warmup_steps=3, lr=3e-3, log_every=2, save_every=5,
        eval_every=6, progress=False, seed=3,
    )  # fmt: skip
    args.update(kw)
    return TrainConfig(**args)


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(checkpoints(out)[-1])["model"]


def losses(out: Path) -> list[tuple[int, float]]:
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r.get("loss", r.get("valid_loss"))) for r in log]


# -- loss and schedule ---------------------------------------------------------------------------


def test_label_smoothed_loss_matches_a_hand_computation():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[4, 0, -100], [1, -100, -100]])
    eps = 0.2
    want_loss = want_nll = 0.0
    for b in range(2):
        for t in range(3):
            y = int(labels[b, t])
            if y == -100:
                continue
            z = [float(v) for v in logits[b, t]]
            log_norm = math.log(sum(math.exp(v) for v in z))
            logp = [v - log_norm for v in z]
            want_nll += -logp[y]
            want_loss += (1 - eps) * -logp[y] + eps / 5 * sum(-p for p in logp)
    loss, nll, n = label_smoothed_nll(logits, labels, eps)
    assert n == 3
    assert loss.item() == pytest.approx(want_loss, rel=1e-6) and nll.item() == pytest.approx(
        want_nll, rel=1e-6
    )
    torch_ce = F.cross_entropy(logits.view(-1, 5), labels.view(-1), label_smoothing=eps, reduction="sum")
    assert loss.item() == pytest.approx(torch_ce.item(), rel=1e-6)


def test_inverse_sqrt_schedule():
    f = inverse_sqrt(4)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(15) == pytest.approx(math.sqrt(4 / 16))
    assert inverse_sqrt(0)(0) == 1.0 and inverse_sqrt(0)(3) == pytest.approx(0.5)


# -- configuration and output directory errors ---------------------------------------------------


def test_yaml_config_errors_name_the_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: d\nbase_model: m\nout_dir: o\nmax_steps: 5\nlearning_rate: 0.1\n")
    with pytest.raises(LsloError, match=r"run.yaml: unknown key 'learning_rate'"):
        TrainConfig.from_yaml(path)
    path.write_text("data: d\nbase_model: m\nout_dir: o\nmax_steps: 5\nmethod: adapters\n")
    with pytest.raises(LsloError, match=r"method='adapters'; use one of lslo, lora, full"):
        TrainConfig.from_yaml(path)
    path.write_text("data: d\nbase_model: m\nout_dir: o\n")
    with pytest.raises(LsloError, match="no budget"):
        TrainConfig.from_yaml(path)
    cfg = TrainConfig.from_yaml(path, max_epochs=2)
    assert cfg.max_epochs == 2 and cfg.method == "lslo"


def test_output_dir_holding_something_else_is_refused(world, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(LsloError, match="not empty and holds no lslo run"):
        train(config(world, foreign, max_steps=1))
    out = tmp_path / "run"
    train(config(world, out, max_steps=2, valid_split=None))
    with pytest.raises(LsloError, match=r"holds a different run \(lr=0.003 there, 0.01 now\)"):
        train(config(world, out, max_steps=2, valid_split=None, lr=0.01, resume=True))
    with pytest.raises(LsloError, match="already holds this run; resume it"):
        train(config(world, out, max_steps=2, valid_split=None))
    # A larger budget on the same run resumes it, also when its run.json predates a newer key.
    saved = json.loads((out / "run.json").read_text())
    del saved["keep_checkpoints"]
    (out / "run.json").write_text(json.dumps(saved))
    assert train(config(world, out, max_steps=3, valid_split=None, resume=True))["steps"] == 3
    # The same run reached through a symlink (a moved work tree) is still the same run.
    link = tmp_path / "link"
    link.symlink_to(out)
    assert train(config(world, link, max_steps=4, valid_split=None, resume=True))["steps"] == 4


def test_source_dependence_is_zero_for_a_model_that_cannot_see_its_source(world):
    from transformers import M2M100ForConditionalGeneration

    from lslo.pretrain_export import source_dependence
    from lslo.tokenizer import load_tokenizer

    model = M2M100ForConditionalGeneration.from_pretrained(world / "model")
    tokenizer = load_tokenizer(world / "model")
    cross = [layer.encoder_attn.out_proj for layer in model.model.decoder.layers]
    with torch.no_grad():  # sharp predictions from a loud cross-attention: the source moves every one
        model.model.decoder.layer_norm.weight.mul_(30.0)
        for proj in cross:
            proj.weight.mul_(50.0)
    loud = source_dependence(model, tokenizer, world / "data", None, 4)
    assert loud["directions"] == 6 and loud["sentences_per_direction"] == 4  # en fr sw, 4 verses each
    with torch.no_grad():
        for proj in cross:  # no cross-attention output: the source cannot matter
            proj.weight.zero_()
            proj.bias.zero_()
    blind = source_dependence(model, tokenizer, world / "data", None, 4)
    assert abs(blind["gap"]) < 1e-4 and blind["nll"] > 0  # float summation order only
    assert abs(loud["gap"]) > 1e-3, loud  # ten times the bound on the blind one
    assert loud["groups"] == {}  # no data manifest, no tiers


def test_source_dependence_by_tier_group_adds_up_to_the_whole(world, tmp_path):
    import shutil

    from transformers import M2M100ForConditionalGeneration

    from lslo.pretrain_export import source_dependence
    from lslo.tokenizer import load_tokenizer

    data = tmp_path / "data"
    shutil.copytree(world / "data", data)
    (data / "manifest.json").write_text(json.dumps({"tiers": {"en": "high", "fr": "high", "sw": "low"}}))
    model = M2M100ForConditionalGeneration.from_pretrained(world / "model")
    got = source_dependence(model, load_tokenizer(world / "model"), data, None, 4)
    groups = got["groups"]
    assert sorted(groups) == ["H->H", "H->L", "L->H"]  # en-fr fr-en | en-sw fr-sw | sw-en sw-fr
    assert sum(g["tokens"] for g in groups.values()) == got["tokens"]
    for key in ("nll", "nll_shifted_sources"):
        pooled = sum(g[key] * g["tokens"] for g in groups.values()) / got["tokens"]
        assert abs(pooled - got[key]) < 1e-3, key  # groups are rounded to 4 decimals


def test_bf16_autocast_on_cpu_is_used_and_a_resume_may_change_precision(world, tmp_path):
    out = tmp_path / "mixed"
    fp32 = train(config(world, tmp_path / "fp32", max_steps=4, valid_split=None))
    train(config(world, out, max_steps=2, valid_split=None))
    mixed = train(config(world, out, max_steps=4, valid_split=None, precision="bf16", resume=True))
    assert mixed["steps"] == 4
    state = read_checkpoint(checkpoints(out)[-1])
    assert state["precision_history"] == [[0, "fp32"], [2, "bf16"]]
    ref, got = losses(tmp_path / "fp32"), losses(out)
    assert ref[:1] == got[:1]  # the fp32 steps are the same run
    assert fp32["steps"] == 4 and ref[-1] != got[-1]  # bf16 autocast really ran (it changes the numbers)
    with pytest.raises(LsloError, match="precision=fp16: needs a GPU; use bf16 or fp32 on CPU"):
        train(config(world, tmp_path / "fp16", max_steps=1, valid_split=None, precision="fp16"))


def test_sigterm_stops_after_the_step_with_a_checkpoint_and_the_hours_budget_stops(world, tmp_path):
    def terminate_at_3(step, model):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    out = tmp_path / "term"
    handler = signal.getsignal(signal.SIGTERM)
    summary = train(config(world, out, valid_split=None), callbacks=[terminate_at_3])
    assert summary["interrupted"] and summary["steps"] == 3
    assert [p.name for p in checkpoints(out)] == ["step-00000003"] and not (out / "model").exists()
    assert signal.getsignal(signal.SIGTERM) == handler  # the handler is given back

    summary = train(config(world, tmp_path / "hours", max_steps=None, max_hours=1e-9, valid_split=None))
    assert summary["steps"] == 0 and not summary["interrupted"] and (tmp_path / "hours" / "model").is_dir()


def test_callbacks_are_set_up_and_their_state_resumes(world, tmp_path):
    """The pruning hook: a GradualPruner gets the model and optimizer; its masks survive a resume."""
    from lslo.pruning import GradualPruner, PruningConfig

    def pruner():
        return GradualPruner(cfg=PruningConfig(ratio=0.5, start=2, duration=4, unit="step", every=2))

    common = dict(
        method="lslo", valid_split=None, save_every=3, lslo={"ranks": {"high": 2, "medium": 2, "low": 4}}
    )
    straight, split = tmp_path / "straight", tmp_path / "split"
    first = pruner()
    train(config(world, straight, max_steps=10, **common), callbacks=[first])
    assert first.optimizer is not None and first.ratio == 0.5
    train(config(world, split, max_steps=5, **common), callbacks=[pruner()])
    train(config(world, split, max_steps=10, resume=True, **common), callbacks=[pruner()])
    want, got = final_weights(straight), final_weights(split)
    assert all(torch.equal(want[k], got[k]) for k in want)
    b = torch.cat([v.flatten() for k, v in got.items() if k.endswith("lora_B")])
    assert (b == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)


def test_interrupted_atomic_writes_are_undone(tmp_path):
    from lslo.run_folder import _clean_partial

    (tmp_path / ".step-00000004.old").mkdir()  # killed between moving the old copy away and renaming
    (tmp_path / ".step-00000004.old" / "state.pt").write_text("complete")
    (tmp_path / ".step-00000006.x1.tmp").mkdir()  # killed while writing
    (tmp_path / "step-00000002").mkdir()
    (tmp_path / ".step-00000002.old").mkdir()  # killed after the rename, before removing the old copy
    _clean_partial(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000002", "step-00000004"]
    assert (tmp_path / "step-00000004" / "state.pt").read_text() == "complete"


# -- exact resume after SIGKILL ------------------------------------------------------------------

CHILD = """
import sys, time
from pathlib import Path
import lslo.checkpoint
from lslo.train import TrainConfig, train

cfg = TrainConfig(**__import__("json").loads(Path(sys.argv[1]).read_text()))
marker = Path(sys.argv[2])
real_save, calls = lslo.checkpoint.save_file, []

def stalling_save(tensors, path, *a, **k):
    # Second checkpoint (step 10): write half a file, tell the parent, and hang until killed.
    calls.append(path)
    if len(calls) < 2:
        return real_save(tensors, path, *a, **k)
    Path(path).write_bytes(b"partial")
    marker.write_text(str(path))
    time.sleep(300)

lslo.checkpoint.save_file = stalling_save
train(cfg)
"""


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(world, tmp_path):
    ref = tmp_path / "ref"
    train(config(world, ref))

    out = tmp_path / "killed"
    cfg = config(world, out, resume=True)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    (tmp_path / "child.py").write_text(CHILD)
    marker = tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "child.py"), str(tmp_path / "cfg.json"), str(marker)], env=env
    )
    try:
        deadline = time.time() + 120
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert marker.exists(), "the child never reached its second checkpoint"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = Path(marker.read_text())
    assert partial.read_bytes() == b"partial" and partial.parent.name.endswith(".tmp")  # the kill left debris
    assert [p.name for p in checkpoints(out)] == ["step-00000005"]  # only the complete checkpoint counts
    state = read_checkpoint(checkpoints(out)[0])
    assert state["sampler"]["index"] > 0  # the killed run stopped in the middle of an epoch

    summary = train(cfg)
    assert summary["steps"] == 12
    debris = [p for p in out.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".old")]
    assert debris == []
    want, got = final_weights(ref), final_weights(out)
    assert want.keys() == got.keys()
    for name in want:
        assert torch.allclose(want[name], got[name], rtol=0, atol=1e-6), name
    ref_log, log = losses(ref), losses(out)
    assert [s for s, _ in ref_log] == [s for s, _ in log]
    assert all(abs(a - b) <= 1e-6 for (_, a), (_, b) in zip(ref_log, log, strict=True))
    assert (out / "model" / "model.safetensors").is_file() and (
        out / "model" / "tokenizer_config.json"
    ).is_file()


# -- two processes equal one ---------------------------------------------------------------------

LAUNCHED = """
import json, sys
from pathlib import Path
from lslo.train import TrainConfig, train

train(TrainConfig(**json.loads(Path(sys.argv[1]).read_text())))
"""


def test_two_processes_train_like_one_with_the_same_global_batch(world, tmp_path):
    # The interpreter's own `accelerate` (make runs .venv/bin/python without putting .venv/bin on PATH).
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.fail("the `accelerate` command is not installed")
    common = dict(method="lslo", dropout=0.0, update_freq=2, max_steps=6, max_tokens=160, save_every=100,
                  valid_split=None, lslo={"ranks": {"high": 2, "medium": 2, "low": 4}})  # fmt: skip
    one = tmp_path / "one"
    train(config(world, one, **{**common, "save_every": 2, "keep_checkpoints": 5}))

    two = tmp_path / "two"
    (tmp_path / "cfg.json").write_text(json.dumps(config(world, two, **common).to_dict()))
    (tmp_path / "launched.py").write_text(LAUNCHED)
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(tmp_path / "launched.py"), str(tmp_path / "cfg.json")]  # fmt: skip
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((two / "run.json").read_text())["out_dir"] == str(two)

    # Each process sees half of every global batch and the loss is divided by the global token count,
    # so the summed gradient is the single-process one up to float32 rounding (other padding widths,
    # the all-reduce's summation order), ~1e-7 relative; weights of magnitude ~0.1-1 then agree to
    # ~1e-8 after 6 steps (seen: 1.5e-8). 1e-5 leaves room for other BLAS builds, while any real bug
    # (a share counted twice, per-process normalisation, desynchronised batches) changes the step
    # itself, which Adam makes ~lr = 3e-3 per coordinate: hundreds of times the tolerance.
    assert len(read_checkpoint(checkpoints(two)[-1])["rng"]) == 2  # 2 ranks ran
    want, got = final_weights(one), final_weights(two)
    assert want.keys() == got.keys()
    worst = max((want[k] - got[k]).abs().max().item() for k in want)
    assert worst < 1e-5, worst
    step4 = read_checkpoint(checkpoints(one)[-2])["model"]
    assert max((want[k] - step4[k]).abs().max().item() for k in want) > 100 * 1e-5  # two steps move far more
    for (sa, a), (sb, b) in zip(losses(one), losses(two), strict=True):
        assert sa == sb and a == pytest.approx(b, rel=1e-5)

    # The saved adapter is the trained one: it loads onto the base model with the checkpoint's weights.
    from lslo.model import load_lslo
    from lslo.run_setup import load_base_model

    loaded = load_lslo(load_base_model(str(world / "model")), one / "model")
    params = dict(loaded.named_parameters())
    assert all(torch.equal(params[k], want[k]) for k in want)


# -- pretraining ---------------------------------------------------------------------------------


def test_pretrain_resumes_and_exports_a_loadable_fp16_model(world, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    from lslo.pretrain import MANIFEST, pretrain
    from lslo.tokenizer import load_tokenizer

    out = tmp_path / "base"
    small = dict(vocab_size=300, model_size="tiny", progress=False, max_tokens=96, max_len=24, save_every=2)
    first = pretrain(world / "data", out, max_steps=2, **small)
    second = pretrain(world / "data", out, max_steps=4, **small)  # a later session: continues to step 4
    assert (first["steps"], second["steps"]) == (2, 4) and second["tokens"] > first["tokens"]
    export = Path(second["export_dir"])
    model = AutoModelForSeq2SeqLM.from_pretrained(str(export), local_files_only=True)
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # a plain load gives fp32 (CPU speed)
    from safetensors import safe_open

    with safe_open(str(export / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    final = final_weights(out / "train")
    got = dict(model.named_parameters())
    for name, weight in final.items():
        assert torch.equal(got[name.removeprefix("base_model.")].half(), weight.half()), name
    tok = load_tokenizer(export)
    assert type(tok).__name__ == "M2M100Tokenizer" and len(tok) <= model.config.vocab_size
    manifest = json.loads((export / MANIFEST).read_text())
    assert manifest["steps"] == 4 and manifest["data_sha256"] and manifest["valid"]["valid_loss"] > 0
    assert (
        manifest["train_config"]["train_split"] == "pretrain" and manifest["train_config"]["method"] == "full"
    )
    # Paths as the user gave them (no machine-specific absolute paths), and the validation curve.
    assert manifest["train_config"]["out_dir"] == str(out / "train")
    assert manifest["rebuild"] == f"lslo pretrain --data {world / 'data'} --out {out} --steps 4 --max-tokens 96 --model-size tiny --precision fp32"
    logged = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in manifest["valid_curve"]] == [r["step"] for r in logged if "valid_loss" in r]
    assert manifest["valid_curve"]


def test_a_later_stage_starts_from_an_export_and_chains_the_manifest(world, tmp_path):
    from lslo.io import sha256_file
    from lslo.pretrain import MANIFEST, pretrain

    small = dict(vocab_size=300, model_size="tiny", progress=False, max_tokens=96, max_len=24, save_every=2)
    first = pretrain(world / "data", tmp_path / "s1", max_steps=2, export_dir=tmp_path / "e1", **small)
    out2 = tmp_path / "s2"
    second = pretrain(world / "data", out2, max_steps=3, init_from=tmp_path / "e1", temperature=1.0, lr=0.002,
                      export_dir=tmp_path / "e2", **small)  # fmt: skip
    # Stage 2 trained the stage-1 export (fp16 weights as exported), with its own settings.
    assert sha256_file(out2 / "init" / "model.safetensors") == sha256_file(tmp_path / "e1" / "model.safetensors")
    run = json.loads((out2 / "train" / "run.json").read_text())
    assert (run["temperature"], run["lr"]) == (1.0, 0.002)
    manifest = json.loads((tmp_path / "e2" / MANIFEST).read_text())
    assert [st["steps"] for st in manifest["stages"]] == [2, 3]
    assert [st["settings"]["temperature"] for st in manifest["stages"]] == [5.0, 1.0]
    assert manifest["stages"][0]["valid_curve"] == first["valid_curve"] and manifest["stages"][1]["valid_curve"]
    assert manifest["total"]["steps"] == 5 and manifest["total"]["tokens"] == first["tokens"] + second["tokens"]
    assert manifest["rebuild"] == (
        f"{first['rebuild']} --export-dir {tmp_path / 'e1'} && lslo pretrain --data {world / 'data'} --out {out2}"
        f" --steps 3 --max-tokens 96 --model-size tiny --temperature 1.0 --lr 0.002 --precision fp32"
        f" --init-from {tmp_path / 'e1'}"
    )
    # A third stage chains all three.
    third = pretrain(world / "data", tmp_path / "s3", max_steps=1, init_from=tmp_path / "e2", **small)
    assert [st["steps"] for st in third["stages"]] == [2, 3, 1]
    assert third["rebuild"].startswith(manifest["rebuild"] + f" --export-dir {tmp_path / 'e2'} && ")
    # Misuse: not an export; a stage folder started from other weights; a folder holding a run from scratch.
    with pytest.raises(LsloError, match="not a `lslo pretrain` export"):
        pretrain(world / "data", tmp_path / "x", max_steps=1, init_from=world / "model", **small)
    with pytest.raises(LsloError, match="other weights"):
        pretrain(world / "data", out2, max_steps=4, init_from=tmp_path / "e2", **small)
    with pytest.raises(LsloError, match="from scratch"):
        pretrain(world / "data", tmp_path / "s1", max_steps=3, init_from=tmp_path / "e1", **small)


def test_prune_key_in_the_config_prunes_the_final_adapter(world, tmp_path):
    from lslo.loading import load_model

    out = tmp_path / "pruned"
    summary = train(config(world, out, method="lslo", max_steps=6, prune={"ratio": 0.75, "start": 1, "duration": 3,
                                                                         "unit": "step", "every": 1}))
    assert not summary["interrupted"]
    model, _, _ = load_model(str(out))
    report = model.parameter_report()
    for lang, row in report["languages"].items():
        layers = model.lslo_layers().values()
        i = model.languages.index(lang)
        b_total = sum(layer.lora_B[:, layer.span(i)].numel() for layer in layers)
        b_kept = sum(int(layer.lora_B_mask[:, layer.span(i)].sum()) for layer in layers)
        assert abs(b_kept - round(0.25 * b_total)) <= 1, lang
        assert all(torch.count_nonzero(layer.lora_B[:, layer.span(i)][~layer.lora_B_mask[:, layer.span(i)]]) == 0
                   for layer in layers)
        assert row["params"] < sum(layer.ranks[i] * (layer.base_layer.in_features + layer.base_layer.out_features)
                                   for layer in layers)


def test_prune_needs_lslo_and_known_keys(world, tmp_path):
    with pytest.raises(LsloError, match="prune"):
        config(world, tmp_path / "a", method="full", prune={"ratio": 0.5}).check()
    with pytest.raises(LsloError, match="prune"):
        config(world, tmp_path / "b", method="lslo", prune={"ratoi": 0.5}).check()


def test_validation_every_epoch_keeps_the_model_of_the_lowest_validation_loss(world, tmp_path):
    """eval_every: epoch validates at each epoch's end; keep_best writes best/ = the weights at the lowest loss."""
    from safetensors.torch import load_file

    out = tmp_path / "best"
    summary = train(config(world, out, max_steps=None, max_epochs=4, eval_every="epoch", keep_best=True,
                           keep_checkpoints=100, lr=3e-2, warmup_steps=1))  # fmt: skip
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in log if "valid_loss" in r]
    assert [r["epoch"] for r in valid][:3] == [1.0, 2.0, 3.0] and len(valid) >= 4
    best = min(valid, key=lambda r: r["valid_loss"])
    kept = json.loads((out / "best" / "lslo_best.json").read_text())
    assert kept == {"step": best["step"], "epoch": best["epoch"], "valid_loss": best["valid_loss"]} == summary["best"]
    state = read_checkpoint(out / "checkpoints" / f"step-{best['step']:08d}")["model"]
    saved = load_file(out / "best" / "model.safetensors")
    names = {k: k.removeprefix("base_model.") for k in state if k.removeprefix("base_model.") in saved}
    assert len(names) > len(state) // 2 and all(torch.equal(state[k], saved[n]) for k, n in names.items())
    with pytest.raises(LsloError, match="keep_best"):
        config(world, tmp_path / "x", keep_best=True, valid_split=None).check()


def test_the_best_model_of_a_pruned_run_is_one_with_the_final_ratio(world, tmp_path):
    """Validations before pruning reaches its ratio are logged but cannot become best/: it must be the pruned model."""
    out = tmp_path / "pruned"
    prune = {"ratio": 0.5, "unit": "epoch", "start": 1, "duration": 2, "every": 1}
    train(config(world, out, method="lslo", max_steps=None, max_epochs=4, eval_every="epoch", keep_best=True,
                 prune=prune, lr=3e-2, warmup_steps=1, lslo={"ranks": {"high": 2, "medium": 2, "low": 4}}))  # fmt: skip
    valid = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "valid_loss" in line]
    early = [r for r in valid if r.get("best_eligible") is False]
    assert [r["epoch"] for r in early] == [1.0, 2.0]
    kept = json.loads((out / "best" / "lslo_best.json").read_text())
    assert kept["epoch"] >= 3.0 and kept["valid_loss"] == min(r["valid_loss"] for r in valid if r not in early)
    with pytest.raises(LsloError, match='eval_every.*"epoch"'):
        config(world, tmp_path / "x", eval_every="month").check()


def test_a_resumed_run_may_checkpoint_and_log_at_another_rate(world, tmp_path):
    """save_every / log_every / keep_checkpoints are bookkeeping: changing them on resume trains the same weights."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(config(world, straight, max_steps=6, valid_split=None))
    train(config(world, split, max_steps=3, valid_split=None, save_every=3))
    train(config(world, split, max_steps=6, valid_split=None, save_every=2, log_every=3, keep_checkpoints=2, resume=True))
    want, got = final_weights(straight), final_weights(split)
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert [p.name for p in checkpoints(split)] == ["step-00000004", "step-00000006"]
    with pytest.raises(LsloError, match="holds a different run"):
        train(config(world, split, max_steps=8, valid_split=None, lr=1e-2, resume=True))


def test_the_cpu_clock_is_carried_across_a_resume_and_unknown_after_a_checkpoint_without_it(world, tmp_path):
    """`cpu_s` (the run's CPU seconds) rides in checkpoints like `elapsed`: a resume adds to the saved figure; a
    checkpoint saved before lslo kept the clock leaves it unknown (None), never a silent undercount."""
    from lslo.checkpoint import write_checkpoint

    out, old = tmp_path / "carried", tmp_path / "old"
    first = train(config(world, out, max_steps=3, valid_split=None, save_every=3))
    saved = read_checkpoint(checkpoints(out)[-1])["cpu_s"]
    assert saved > 0 and first["cpu_s"] >= round(saved, 2)  # the summary (rounded) is read after the last save
    ckpt = checkpoints(out)[-1]
    state = read_checkpoint(ckpt)
    state["cpu_s"] = 1e6  # as if the first session had run for 11 days
    write_checkpoint(ckpt, state)
    start = time.time()
    resumed = train(config(world, out, max_steps=6, valid_split=None, save_every=3, resume=True))
    spent = (time.time() - start) * (os.cpu_count() or 1)
    assert 1e6 < resumed["cpu_s"] < 1e6 + spent + 1  # the saved figure plus this session's CPU, no more
    assert read_checkpoint(checkpoints(out)[-1])["cpu_s"] == pytest.approx(resumed["cpu_s"], abs=0.2)

    train(config(world, old, max_steps=3, valid_split=None, save_every=3))
    state = read_checkpoint(checkpoints(old)[-1])
    del state["cpu_s"]
    write_checkpoint(checkpoints(old)[-1], state)
    unknown = train(config(world, old, max_steps=6, valid_split=None, save_every=3, resume=True))
    assert unknown["steps"] == 6 and unknown["cpu_s"] is None and read_checkpoint(checkpoints(old)[-1])["cpu_s"] is None


def test_lslo_trains_with_language_adamw_and_a_run_from_before_resumes_with_adamw(world, tmp_path):
    """LSLo's default optimizer leaves the languages a step did not use alone (plain AdamW moves them on weight
    decay and momentum); a run.json written before the `optimizer` key resumes with the AdamW it ran with."""
    kw = dict(method="lslo", languages={"en": "high", "fr": "high", "sw": "low"}, valid_split=None, weight_decay=0.1)
    adamw, legacy, auto = tmp_path / "adamw", tmp_path / "legacy", tmp_path / "auto"
    train(config(world, adamw, max_steps=6, optimizer="adamw", **kw))
    train(config(world, legacy, max_steps=3, optimizer="adamw", save_every=3, **kw))
    saved = json.loads((legacy / "run.json").read_text())
    del saved["optimizer"]
    (legacy / "run.json").write_text(json.dumps(saved))
    train(config(world, legacy, max_steps=6, resume=True, **kw))
    want, got = final_weights(adamw), final_weights(legacy)
    assert all(torch.equal(want[k], got[k]) for k in want)
    train(config(world, auto, max_steps=6, **kw))
    assert not all(torch.equal(want[k], v) for k, v in final_weights(auto).items())
    with pytest.raises(LsloError, match="optimizer='language-adamw'; language-adamw updates LSLo"):
        config(world, tmp_path / "x", method="full", optimizer="language-adamw").check()


# -- start-up validation and divergence --------------------------------------------------------------


def test_a_run_that_fails_at_start_up_leaves_nothing_and_the_fixed_config_runs(world, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(LsloError, match="no_such_split"):
        train(config(world, out, max_steps=2, valid_split="no_such_split"))
    assert not out.exists()
    out.mkdir()
    with pytest.raises(LsloError, match="base model"):
        train(config(world, out, max_steps=2, base_model=str(tmp_path / "missing-model"), tokenizer=str(world / "model")))
    assert list(out.iterdir()) == []
    assert train(config(world, out, max_steps=2, valid_split=None))["steps"] == 2
    assert (out / "run.json").is_file() and (out / "model").is_dir()


def test_a_diverging_run_stops_naming_the_step_and_keeps_the_last_good_checkpoint(world, tmp_path):
    out = tmp_path / "run"
    cfg = config(world, out, method="lslo", languages={"en": "high", "fr": "high", "sw": "low"}, lr=1e8,
                 warmup_steps=0, max_steps=40, save_every=1, keep_checkpoints=2, valid_split=None)  # fmt: skip
    with pytest.raises(LsloError, match=r"training diverged at step (\d+): the (loss|trainable weights) became") as err:
        train(cfg)
    message = str(err.value)
    assert "\n" not in message and "lower lr" in message
    step = int(message.split("step ")[1].split(":")[0])
    kept = checkpoints(out)
    assert not (out / "model").exists()
    assert all(int(p.name.split("-")[1]) < step for p in kept)
    if kept:
        assert str(kept[-1]) in message
        assert int(kept[-1].name.split("-")[1]) == step - 1  # save_every=1: the step before the named one
        state = read_checkpoint(kept[-1])["model"]
        assert all(torch.isfinite(t).all() for t in state.values())


def test_the_lslo_block_is_checked_before_anything_is_written(world, tmp_path):
    out = tmp_path / "run"
    bad_rank = {"ranks": {"high": 2, "medium": 2, "low": 0}}
    with pytest.raises(LsloError, match=r"lslo: ranks: rank of 'low' is 0"):
        train(config(world, out, method="lslo", lslo=bad_rank))
    assert not out.exists()  # not even the encoded-corpus cache
    with pytest.raises(LsloError, match=r"lslo: .*'rnaks'.*fix the lslo: block"):
        config(world, out, method="lslo", lslo={"rnaks": {"low": 4}}).check()
    with pytest.raises(LsloError, match="encoder_modules: unknown module 'fc3'"):
        config(world, out, method="lora", lslo={"encoder_modules": ["fc3"]}).check()
    config(world, out, method="lslo", languages=["en", "fr", "sw"], lslo={"ranks": {"high": 2, "low": 4, "sw": 8}}).check()
