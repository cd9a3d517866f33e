"""AdamW that leaves alone the languages a step did not use: `LanguageAdamW`.

An `LSLoLinear` keeps every language's LoRA in two concatenated matrices, so `torch.optim.AdamW` sees one
parameter and updates all of its rows at every step. That costs the sum over every language the model holds
(at 200 languages most of a training step), and a language absent from the batch still moves, on momentum
and weight decay.

`LanguageAdamW` is AdamW with one state per language: a step updates only the rows (of A) and columns (of B)
of the languages that the step's forward calls routed to, by each layer's own route, and each language
keeps its own step count for the bias correction. That is exactly AdamW over separate per-language LoRA
modules, whose gradient is None when a batch does not use them, at a cost that grows with the languages in
the batch, not with the languages held. Which languages a step used is read from the model's `Routing`
(`Routing.take_used`); under several processes the sets are merged, so every process updates the same rows.
Any other trainable parameter gets plain AdamW.

How: each used language's slice of a matrix, of its gradient and of its two moments is a contiguous view (A's
rows; B is stored language-major, so its columns are one block too; the views of the weights and moments are
kept between steps, the gradient's made at each), and one call of torch's functional AdamW
(`torch.optim.adamw.adamw`, the fused kernel on CPU and CUDA) updates all the views of a step in place, each
with its own step tensor. With every language in every step this is `torch.optim.AdamW(fused=True)` bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.adamw import adamw

from lslo.layer import LSLoLinear
from lslo.routing import Routing

Rows = tuple[LSLoLinear, str, int]  # (layer, route, axis holding the language slices)
Lists = tuple[list[torch.Tensor], ...]


class LanguageAdamW(torch.optim.Optimizer):
    """AdamW over `params` (tensors or param groups, as torch's) that updates only the languages each step
    used in the LSLo layers of `model`; see the module docstring."""

    def __init__(
        self,
        params: Iterable[Any],
        model: nn.Module,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.rows: dict[nn.Parameter, Rows] = {}
        self._views: dict[nn.Parameter, tuple[Any, dict[int, Sequence[torch.Tensor]]]] = {}
        routings: set[int] = set()
        self.routing: Routing | None = None
        for layer in (m for m in model.modules() if isinstance(m, LSLoLinear)):
            for param, route, axis in layer.language_params():
                self.rows[param] = (layer, route, axis)
            self.routing = layer.routing
            routings.add(id(layer.routing))
        # Languages never updated: the old languages of a model with added ones (`lslo.extend.model`).
        self.frozen = set(getattr(model, "frozen_languages", ()))
        if len(routings) > 1:
            raise ValueError("LanguageAdamW: the model's LSLo layers do not share one Routing")

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        used = self._used()
        for group in self.param_groups:
            lists: Lists = ([], [], [], [], [])  # params, grads, exp_avgs, exp_avg_sqs, step counts
            copies: list[tuple[torch.Tensor, torch.Tensor]] = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p in self.rows:
                    layer, route, axis = self.rows[p]
                    langs = [i for i in used.get(route, []) if i not in self.frozen]
                    self._add_languages(lists, copies, p, layer, axis, langs)
                else:
                    state = self._state(p, 1)
                    for out, t in zip(lists, (p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"][0]), strict=True):
                        out.append(t)
            _adamw(lists, group)
            for view, copy in copies:  # slices that were not contiguous: write the update back
                view.copy_(copy)
        return loss

    def _used(self) -> dict[str, list[int]]:
        """Languages routed to since the last step, per route, the same on every process."""
        used = self.routing.take_used() if self.routing is not None else {}
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return {route: sorted(langs) for route, langs in used.items()}
        size = max((len(layer.ranks) for layer, _, _ in self.rows.values()), default=0)
        device = next(iter(self.rows)).device if self.rows else torch.device("cpu")
        merged = {}
        for route in ("src", "tgt"):
            flags = torch.zeros(size, dtype=torch.int32, device=device)
            flags[list(used.get(route, ()))] = 1
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            merged[route] = flags.nonzero().flatten().tolist()
        return merged

    def _state(self, p: torch.Tensor, owners: int) -> dict[str, Any]:
        """p's state: one step count per owner (language) on p's device, as the fused kernel wants them, and the
        moments laid out as p is (a state read back from a checkpoint is row-major; B is not)."""
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros(owners, dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if state["step"].device != p.device:
            state["step"] = state["step"].to(p.device)
        for key in ("exp_avg", "exp_avg_sq"):
            if state[key].stride() != p.stride():
                state[key] = torch.empty_like(p, memory_format=torch.preserve_format).copy_(state[key])
        return state

    def _add_languages(self, lists: Lists, copies: list[tuple[torch.Tensor, torch.Tensor]], p: nn.Parameter,
                       layer: LSLoLinear, axis: int, langs: list[int]) -> None:  # fmt: skip
        """Add the slices of `langs` along `axis` of p, its gradient and its moments to `lists`, each slice with its
        own step count. A slice is a view when it is contiguous in memory (A's rows are; B is stored language-major
        so its columns are), else a contiguous copy, written back after the update (`copies`)."""
        if not langs:
            return
        state = self._state(p, len(layer.ranks))
        full = [t if axis == 0 else t.t() for t in (p, p.grad, state["exp_avg"], state["exp_avg_sq"])]
        spans = [(layer.offsets[lang], layer.ranks[lang]) for lang in langs]
        if all(t.is_contiguous() for t in full):  # the usual case: views, updated in place
            views = self._language_views(p, state, full, layer.ranks)
            lists[1].extend(full[1].narrow(0, start, rank) for start, rank in spans)
            for k in (0, 2, 3, 4):
                lists[k].extend(views[k][lang] for lang in langs)
            return
        steps = state["step"].unbind()
        lists[4].extend(steps[lang] for lang in langs)
        for k, (out, t) in enumerate(zip(lists, full, strict=False)):
            views = [t.narrow(0, start, rank) for start, rank in spans]
            out.extend(v.contiguous() for v in views)
            if k != 1:  # not the gradient
                copies.extend(zip(views, out[-len(views) :], strict=True))

    def _language_views(self, p: nn.Parameter, state: dict[str, Any], full: list[torch.Tensor],
                        ranks: list[int]) -> dict[int, Sequence[torch.Tensor]]:  # fmt: skip
        """Every language's view of p (0), its moments (2, 3) and its step count (4), built once per storage
        (a new storage, e.g. a loaded state, builds them again); only the gradient's are made at each step."""
        tensors = (p, state["exp_avg"], state["exp_avg_sq"], state["step"])
        key = tuple((t.data_ptr(), t.stride()) for t in tensors)
        cached = self._views.get(p)
        if cached is None or cached[0] != key:
            views = {k: full[k].split(ranks) for k in (0, 2, 3)}
            cached = self._views[p] = (key, {**views, 4: state["step"].unbind()})
        return cached[1]


def _adamw(lists: Lists, group: dict[str, Any]) -> None:
    """One AdamW step (`torch.optim.adamw.adamw`, fused where torch has the kernel) on the tensors of `lists`,
    each with its own step count, incremented here."""
    if not lists[0]:
        return
    fused = all(t.device.type in ("cpu", "cuda") for t in lists[0])
    beta1, beta2 = group["betas"]
    adamw(*lists[:4], [], lists[4], fused=fused, foreach=False if not fused else None, amsgrad=False, beta1=beta1,
          beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)  # fmt: skip
