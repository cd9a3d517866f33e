"""Train LSLo, a shared LoRA or the full model on a multi-way corpus: `train(TrainConfig(...))`.

The loop, top to bottom: draw `update_freq` global batches from the `BatchSampler`, give each process
its share of every batch, run the model, back-propagate the label-smoothed cross-entropy divided by the
global number of target tokens (so N processes compute exactly the gradient of one process with the
same global batch), clip, step Adam and the inverse-square-root schedule, call the callbacks, log,
validate, checkpoint. Everything goes through `accelerate.Accelerator`, so
`accelerate launch --multi_gpu --num_processes 2 ...` also works on CPU (gloo).

Here: the step, the validation, `TrainState` (what a checkpoint restores) and the loop. The settings are
`lslo.run_config`, building the run (`setup(cfg) -> Run`) is `lslo.run_setup`, the output folder `lslo.run_folder`.

Output directory:
    run.json                 the configuration (a different run here is refused)
    metrics.jsonl            one JSON record per log / validation
    checkpoints/step-N/      latest checkpoint (trainable weights, optimizer, schedule, sampler, RNG, log)
    model/                   the trained adapter or model (`save_pretrained`), written at the end
    best/                    with `keep_best`: the model of the lowest validation loss (+ lslo_best.json)
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lslo.checkpoint import read_checkpoint, write_checkpoint
from lslo.config import lslo_config
from lslo.data.batching import Batch, batch_slice, shard
from lslo.errors import LsloError
from lslo.io import write_json, write_text
from lslo.loss import batch_loss
from lslo.precision import effective_precision
from lslo.run_config import TrainConfig
from lslo.run_folder import (
    BEST_FILE,
    _clean_partial,
    check_out_dir,
    checkpoints,
    prune_checkpoints,
    rng_state,
    save_model,
    set_rng_state,
    trainable_state,
)
from lslo.run_setup import (
    Callback,
    Run,
    _make_accelerator,
    inverse_sqrt,
    load_base_model,
    resolve_languages,
    setup,
    setup_data,
    setup_model,
    training_data,
)

# The loop's own names, and those it re-exports from lslo.run_config, lslo.run_folder and lslo.run_setup (defined
# here before they were split off, so `from lslo.train import TrainConfig, setup, checkpoints, ...` still works).
__all__ = ["BEST_FILE", "Run", "TrainConfig", "TrainState", "checkpoints", "inverse_sqrt", "load_base_model",
           "lslo_config", "resolve_languages", "setup", "setup_data", "setup_model", "train", "train_step",
           "training_data", "validate", "validation_loss"]  # fmt: skip


# -- validation and stopping ---------------------------------------------------------------------


@torch.no_grad()
def validation_loss(
    model: nn.Module, batches: Sequence[Batch], epsilon: float, accelerator: Any,
    autocast_: Callable[[], Any] | None = None,
) -> dict[str, float]:
    """Token-averaged smoothed loss and NLL over `batches` (each process takes every n-th batch)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64)
    rank, world = accelerator.process_index, accelerator.num_processes
    for batch in batches[rank::world]:
        b = batch.to(accelerator.device)
        loss, nll, n = batch_loss(model, b.model_inputs(), b.labels, epsilon, autocast_ or accelerator.autocast)
        sums += torch.tensor([loss.item(), nll.item(), n], dtype=torch.float64)
    sums = accelerator.reduce(sums.to(accelerator.device), "sum").cpu()
    model.train(was_training)
    n = max(float(sums[2]), 1.0)
    return {
        "valid_loss": float(sums[0]) / n,
        "valid_nll": float(sums[1]) / n,
        "valid_ppl": math.exp(float(sums[1]) / n),
    }


class _Stop:
    """Set by SIGTERM / SIGINT: the loop ends after the current step and checkpoints."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)



def _check_finite(value: float, step: int, run: Run, what: str = "loss") -> None:
    """Stop a diverged run: a one-line error naming the step; the checkpoints already saved stay as they are."""
    bad = torch.tensor([0.0 if math.isfinite(value) else 1.0], device=run.accelerator.device)
    if run.world > 1:
        bad = run.accelerator.reduce(bad, "max")
    if not bad.item():
        return
    kept = checkpoints(run.out)
    last = f"the last good checkpoint, {kept[-1]}, is kept" if kept else "no checkpoint was saved before it"
    raise LsloError(
        f"training diverged at step {step}: the {what} became {value if what == 'loss' else 'nan/inf'} "
        f"(lr={run.cfg.lr}); {last}; lower lr (or set clip_norm) and start a new out_dir"
    )


# -- one step, one validation ----------------------------------------------------------------------


def train_step(run: Run, micro: Sequence[Batch], step: int) -> dict[str, float]:
    """One optimizer step over the micro-batches of one global batch: the summed smoothed loss and NLL of this
    process, the global target tokens, the lr used. The loss is divided by the global number of target tokens,
    so N processes compute exactly the gradient of one process with the same global batch."""
    acc, rank, world = run.accelerator, run.accelerator.process_index, run.world
    global_tokens = sum(b.num_tokens for b in micro)
    sums = {"loss": 0.0, "nll": 0.0}
    for k, batch in enumerate(micro):
        local, weight = shard(batch, rank, world), 1.0
        if len(local) == 0:  # fewer samples than processes: run one, count nothing
            local, weight = batch_slice(batch, [0]), 0.0
        local = local.to(acc.device)
        with contextlib.nullcontext() if k == len(micro) - 1 else acc.no_sync(run.model):
            loss, nll, _ = batch_loss(run.model, local.model_inputs(), local.labels, run.cfg.label_smoothing, run.autocast)
            acc.backward(loss * (weight * world / global_tokens))
        sums["loss"] += weight * loss.item()
        sums["nll"] += weight * nll.item()
    _check_finite(sums["loss"], step, run)
    if run.cfg.clip_norm > 0:
        acc.clip_grad_norm_([p for p in run.model.parameters() if p.requires_grad], run.cfg.clip_norm)
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {**sums, "tokens": global_tokens, "lr": lr}


def validate(run: Run) -> dict[str, float]:
    """The validation loss, NLL and perplexity of the run's model now."""
    return validation_loss(run.unwrapped, run.valid_batches, run.cfg.label_smoothing, run.accelerator, run.autocast)


# -- what a checkpoint restores --------------------------------------------------------------------


@dataclass
class TrainState:
    """The loop's own state (position, log, timing); `save` and `restore` carry it with the run's model,
    optimizer, schedule, sampler, callbacks and RNG streams, in the format of `lslo.checkpoint`."""

    step: int = 0
    tokens: int = 0
    elapsed_before: float = 0.0
    precision_history: list[list[Any]] = field(default_factory=list)  # [first step, precision] per change
    log: list[dict[str, Any]] = field(default_factory=list)
    window: dict[str, float] = field(default_factory=lambda: {"loss": 0.0, "nll": 0.0, "tokens": 0, "steps": 0})
    cpu_before: float | None = 0.0  # None: resumed from a checkpoint saved before lslo kept a CPU clock
    started: float = field(default_factory=time.time)
    cpu_started: float = field(default_factory=time.process_time)

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def cpu(self) -> float | None:
        """CPU seconds (user + system, all threads) this (main) process spent on the run, carried across resumes
        like `elapsed`: a killed session's work after its last checkpoint is redone, so it does not count."""
        return None if self.cpu_before is None else self.cpu_before + time.process_time() - self.cpu_started

    def save(self, run: Run) -> None:
        from accelerate.utils import gather_object

        weights = [p for p in run.unwrapped.parameters() if p.requires_grad]
        finite = all(bool(torch.isfinite(p).all()) for p in weights)
        _check_finite(0.0 if finite else math.nan, self.step, run, what="trainable weights")
        rngs = gather_object([rng_state()]) if run.world > 1 else [rng_state()]
        if run.is_main:
            scaler = run.accelerator.scaler
            state = {"model": trainable_state(run.unwrapped), "optimizer": run.optimizer.state_dict(),
                     "scheduler": run.scheduler.state_dict(), "sampler": run.sampler.state_dict(),
                     "scaler": scaler.state_dict() if scaler is not None else None, "rng": rngs, "step": self.step,
                     "tokens": self.tokens, "elapsed": self.elapsed(), "cpu_s": self.cpu(),
                     "precision_history": self.precision_history,
                     "log": self.log, "window": self.window}  # fmt: skip
            for i, cb in enumerate(run.callbacks):
                if hasattr(cb, "state_dict"):
                    state[f"callback{i}"] = cb.state_dict()
            write_checkpoint(run.out / "checkpoints" / f"step-{self.step:08d}", state)
            prune_checkpoints(run.out, run.cfg.keep_checkpoints)
        run.accelerator.wait_for_everyone()

    @classmethod
    def restore(cls, run: Run, ckpt: Path) -> TrainState:
        """Load `ckpt` into the run (weights, optimizer, schedule, sampler, callbacks, RNG) and return its state."""
        state = read_checkpoint(ckpt)
        unwrapped = run.unwrapped
        missing = set(trainable_state(unwrapped)) ^ set(state["model"])
        if missing:
            raise LsloError(f"{ckpt}: trainable weights do not match this model ({sorted(missing)[0]}); start a new run")
        if len(state["rng"]) != run.world:
            raise LsloError(f"{ckpt}: saved by {len(state['rng'])} processes, resumed with {run.world}; use the same number")
        with torch.no_grad():
            for name, p in unwrapped.named_parameters():
                if p.requires_grad:
                    p.copy_(state["model"][name])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        run.sampler.load_state_dict(state["sampler"])
        if run.accelerator.scaler is not None and state.get("scaler"):
            run.accelerator.scaler.load_state_dict(state["scaler"])
        for i, cb in enumerate(run.callbacks):
            if hasattr(cb, "load_state_dict") and f"callback{i}" in state:
                cb.load_state_dict(state[f"callback{i}"])
        set_rng_state(state["rng"][run.accelerator.process_index])
        history = state.get("precision_history", [[0, None]])  # None: saved before lslo recorded it
        return cls(state["step"], state["tokens"], state["elapsed"], [list(h) for h in history], state["log"], state["window"],
                   cpu_before=state.get("cpu_s"))  # absent: saved before lslo kept a CPU clock

    def record(self, run: Run, entry: dict[str, Any]) -> None:
        """Append `entry` to the log and to metrics.jsonl."""
        self.log.append(entry)
        if run.is_main:
            with open(run.out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    def log_window(self, run: Run, lr: float, since: float) -> dict[str, Any]:
        """The mean losses and speed of the steps since the last log entry; the window starts again."""
        sums = torch.tensor([self.window["loss"], self.window["nll"]], dtype=torch.float64, device=run.accelerator.device)
        sums = run.accelerator.reduce(sums, "sum").cpu() if run.world > 1 else sums.cpu()
        n = max(self.window["tokens"], 1)
        entry = {"step": self.step, "epoch": run.epoch(), "loss": float(sums[0]) / n, "nll_loss": float(sums[1]) / n,
                 "lr": lr, "tokens": self.tokens, "tokens_per_s": round(self.window["tokens"] / max(time.time() - since, 1e-9), 1),
                 "elapsed": round(self.elapsed(), 2)}  # fmt: skip
        self.record(run, entry)
        self.window = {"loss": 0.0, "nll": 0.0, "tokens": 0, "steps": 0}
        return entry

    def validate(self, run: Run) -> dict[str, Any]:
        """Validate and log; with `keep_best`, a new lowest loss also replaces best/ (only once every callback with a
        `final` flag, e.g. a pruner short of its ratio, has reached its final state)."""
        best = min((r["valid_loss"] for r in self.log if "valid_loss" in r and r.get("best_eligible", True)), default=math.inf)
        entry = {"step": self.step, "epoch": run.epoch(), **validate(run)}
        if run.cfg.keep_best and not all(getattr(cb, "final", True) for cb in run.callbacks):
            entry["best_eligible"] = False
        if run.cfg.keep_best and run.is_main and entry.get("best_eligible", True) and entry["valid_loss"] < best:
            save_model(run.unwrapped, run.tokenizer, run.cfg.method, run.out / "best",
                       {k: entry[k] for k in ("step", "epoch", "valid_loss")})  # fmt: skip
        self.record(run, entry)
        return entry


# -- the loop ----------------------------------------------------------------------------------------


def start(cfg: TrainConfig, callbacks: Sequence[Callback] = ()) -> tuple[Run, TrainState]:
    """Check the output folder, build the run (a failed start leaves nothing behind), write run.json, and
    restore the last checkpoint when resuming."""
    cfg.check()
    accelerator = _make_accelerator(cfg)
    out = Path(cfg.out_dir)
    resuming = check_out_dir(cfg)
    existed = out.exists()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _clean_partial(out)
        _clean_partial(out / "checkpoints")
    try:  # everything that can fail on bad input, before run.json is written
        run = setup(cfg, callbacks, accelerator=accelerator)
    except BaseException:
        if accelerator.is_main_process and not resuming:  # leave nothing behind: the fixed config then starts here
            shutil.rmtree(out / "cache", ignore_errors=True)
            if not existed:
                shutil.rmtree(out, ignore_errors=True)
        raise
    if run.is_main:
        write_json(out / "run.json", cfg.to_dict())
    run.accelerator.wait_for_everyone()
    state = TrainState.restore(run, checkpoints(out)[-1]) if resuming and checkpoints(out) else TrainState()
    if run.is_main:
        write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in state.log))
    precision = effective_precision(cfg.precision)
    if not state.precision_history or state.precision_history[-1][1] != precision:
        state.precision_history.append([state.step, precision])
    return run, state


def train(cfg: TrainConfig, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Run (or resume) the training that `cfg` describes; returns a summary.

    `callbacks` are called after every optimizer step as `callback(step, model)` with the unwrapped
    model (e.g. gradual pruning). One with `setup` gets `setup(model, optimizer, steps_per_epoch)`
    before training starts. A callback with `state_dict()` / `load_state_dict(state)` has its
    state saved in every checkpoint and handed back on resume, before the first step; state the model
    holds outside its trainable weights (e.g. pruning masks) must travel that way.
    """
    from tqdm.auto import tqdm

    run, state = start(cfg, callbacks)
    bar = tqdm(total=run.max_steps, initial=state.step, disable=not (cfg.progress and run.is_main), unit="step", dynamic_ncols=True)
    run.model.train()
    interrupted, last_saved, since = False, state.step, time.time()
    with _Stop() as stop:
        while run.max_steps is None or state.step < run.max_steps:
            interrupted, out_of_time = _should_stop(run, state, stop)
            if interrupted or out_of_time:
                break
            epoch_before = run.sampler.epoch
            result = train_step(run, [run.sampler.next_batch() for _ in range(cfg.update_freq)], state.step + 1)
            state.step += 1
            state.tokens += result["tokens"]
            for key in ("loss", "nll", "tokens"):
                state.window[key] += result[key]
            state.window["steps"] += 1
            for cb in run.callbacks:
                cb(state.step, run.unwrapped)
            bar.update(1)
            if state.step % cfg.log_every == 0:
                entry = state.log_window(run, result["lr"], since)
                bar.set_postfix(loss=f"{entry['loss']:.3f}", tok_s=f"{entry['tokens_per_s']:.0f}")
                since = time.time()
            epoch_ended = run.sampler.epoch != epoch_before
            if run.valid_batches and (epoch_ended if cfg.eval_every == "epoch" else state.step % cfg.eval_every == 0):
                state.validate(run)
            if state.step % cfg.save_every == 0 or epoch_ended:
                state.save(run)
                last_saved = state.step
    bar.close()
    return finish(run, state, interrupted, last_saved)


def _should_stop(run: Run, state: TrainState, stop: _Stop) -> tuple[bool, bool]:
    """(asked to stop, out of time): every process must agree, or one would wait forever."""
    out_of_time = run.cfg.max_hours is not None and state.elapsed() >= run.cfg.max_hours * 3600
    flags = torch.tensor([float(stop.requested), float(out_of_time)], device=run.accelerator.device)
    if run.world > 1:
        flags = run.accelerator.reduce(flags, "max")
    return bool(flags[0].item()), bool(flags[1].item())


def finish(run: Run, state: TrainState, interrupted: bool, last_saved: int) -> dict[str, Any]:
    """The final validation and checkpoint, model/ (unless interrupted) and the summary."""
    last_valid = next((r for r in reversed(state.log) if "valid_loss" in r), None)
    if run.valid_batches and not interrupted and (last_valid is None or last_valid["step"] != state.step):
        last_valid = state.validate(run)
        last_saved = -1  # the log changed: the final checkpoint must hold it
    if last_saved != state.step:
        state.save(run)
    summary: dict[str, Any] = {
        "out_dir": str(run.out), "steps": state.step, "epochs": run.epoch(), "tokens": state.tokens,
        "elapsed": round(state.elapsed(), 2), "cpu_s": None if (cpu := state.cpu()) is None else round(cpu, 2),
        "interrupted": interrupted,
        "train_loss": next((r["loss"] for r in reversed(state.log) if "loss" in r), None),
    }  # fmt: skip
    if last_valid is not None:
        summary.update({k: v for k, v in last_valid.items() if k not in ("step", "epoch")})
    if not interrupted:
        if run.is_main:
            save_model(run.unwrapped, run.tokenizer, run.cfg.method, run.out / "model")
        summary["model_dir"] = str(run.out / "model")
        if run.cfg.keep_best and (run.out / "best").is_dir():
            summary["best"] = json.loads((run.out / "best" / BEST_FILE).read_text(encoding="utf-8"))
    run.accelerator.wait_for_everyone()
    if run.world > 1:
        run.accelerator.end_training()  # a process group left open aborts the process at exit
    return summary
