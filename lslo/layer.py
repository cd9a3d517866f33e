"""The LSLo linear layer: a frozen base `nn.Linear` plus one LoRA per language. Math on tensors only.

All languages' LoRAs of one layer live in two concatenated matrices: `lora_A` (sum of ranks x in) and
`lora_B` (out x sum of ranks, stored language-major: `lora_B.t()` is contiguous, so each language's columns are
one block of memory); language l owns rows/columns `offsets[l]:offsets[l+1]`. A forward computes

    y = W x + B (g_l * (A x))

where g_l is a gate row that holds language l's scale on its own rank slice and 0 elsewhere. One gather of
gate rows per call routes every sample to its own language, so a batch that mixes languages and ranks is
two dense matmuls: no Python loop over languages, and a language absent from the batch gets exactly zero
gradient. When every sample of a batch routes to the same language, the layer slices that language's
matrices instead (cost of a plain rank-r LoRA).

Under `torch.compile` (`lslo.compiling`) the layer takes one branch-free path instead (`traced_delta`): the
languages are tensor data, so a new language mix or length reuses the compiled graph.

Which language each sample routes to is read from a `Routing` shared by all layers of a model and set
once per call by `LSLoModel`; the layer only knows whether it routes by "src" or "tgt".

Pruning (`lslo.pruning`) may attach boolean keep-masks `lora_A_mask` / `lora_B_mask` (same shapes as the
matrices). They are applied to the weights after each optimizer step (`apply_masks`), never in forward;
`num_lora_parameters` counts only the entries they keep.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lslo.routing import ROUTES, Routing

MIXED_PATHS = ("dense", "gathered", "compact")
GATHER_ABOVE = 3  # the cost rule (`LSLoLinear.mixed_path`): measured by benchmarks/lslo_speed.py --languages-sweep


def project(h: torch.Tensor, b_t: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """h @ b_t (b_t: (r, out), or (samples, r, out) for a batched h), added to `out` in the same product when
    `out` is given and of h's dtype."""
    if out is None or out.dtype != h.dtype:
        delta = torch.matmul(h, b_t)
        return delta if out is None else out + delta.to(out.dtype)
    if b_t.dim() == 3:
        return torch.baddbmm(out, h, b_t)
    return torch.addmm(out.reshape(-1, out.shape[-1]), h.reshape(-1, h.shape[-1]), b_t).view(out.shape)


class GatheredLoRA(torch.autograd.Function):
    """Per sample i: (g_i * (x_i A[rows_i]^T)) B[:, rows_i]^T, plus `out` when given (x: samples x tokens x in).

    Saves x, the gated low-rank activations h (tokens x rmax) and the row indices, not the gathered rows: they
    are gathered again in backward, so what a step keeps grows with the batch's tokens and the largest rank
    only. Backward adds each sample's gradient into the rows it read (`index_add_`): other rows get exactly 0.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, rows: torch.Tensor,
                gate: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        a, b = lora_A[rows].to(x.dtype), lora_B.t()[rows].to(x.dtype)  # (samples, rmax, in), (samples, rmax, out)
        h = torch.bmm(x, a.transpose(1, 2)) * gate.unsqueeze(1).to(x.dtype)
        ctx.save_for_backward(x, lora_A, lora_B, rows, gate, h)
        ctx.with_out = out is not None
        return torch.bmm(h, b) if out is None else torch.baddbmm(out, h, b)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, lora_A, lora_B, rows, gate, h = ctx.saved_tensors
        grad_x, grad_A, grad_B_t = gathered_grads(grad, x, lora_A, lora_B.t(), rows, gate, h, ctx.needs_input_grad[0])
        return grad_x, grad_A, grad_B_t.t(), None, None, grad if ctx.with_out else None


def gathered_grads(grad: torch.Tensor, x: torch.Tensor, lora_A: torch.Tensor, lora_B_t: torch.Tensor, rows: torch.Tensor,
                   gate: torch.Tensor, h: torch.Tensor, with_x: bool = True) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:  # fmt: skip
    """The gathered path's backward (`GatheredLoRA`, `lslo::gathered_lora`): gradients for x (if `with_x`), A and
    B^T, each sample's added into the rows it read (`index_add_`), so every other row gets exactly 0."""
    a, b = lora_A[rows].to(x.dtype), lora_B_t[rows].to(x.dtype)
    g = grad.to(x.dtype)
    grad_h = torch.bmm(g, b.transpose(1, 2)) * gate.unsqueeze(1).to(x.dtype)
    flat = rows.flatten()
    grad_a = torch.bmm(grad_h.transpose(1, 2), x).flatten(0, 1).to(lora_A.dtype)
    grad_b = torch.bmm(h.transpose(1, 2), g).flatten(0, 1).to(lora_B_t.dtype)
    grad_A = torch.zeros_like(lora_A).index_add_(0, flat, grad_a)
    grad_B_t = torch.zeros_like(lora_B_t).index_add_(0, flat, grad_b)
    return (torch.bmm(grad_h, a) if with_x else None), grad_A, grad_B_t


# The gathered path as one opaque operator for torch.compile (`LSLoLinear.traced_delta`): the graph calls the
# same batched products as eager's `GatheredLoRA` (forward and backward), instead of Inductor re-deriving the
# gather / scatter-add pair from plain ops, which ran slower than eager on CPU. Both directions are custom ops
# with shape-only fake kernels, so Dynamo traces them without a graph break and with dynamic sizes.
@torch.library.custom_op("lslo::gathered_lora", mutates_args=())
def gathered_lora(x: torch.Tensor, lora_A: torch.Tensor, lora_B_t: torch.Tensor, rows: torch.Tensor,
                  gate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(delta, h) with delta_i = (g_i * (x_i A[rows_i]^T)) B^T[rows_i] per sample i (x: samples x tokens x in;
    `lora_B_t`: B transposed, sum of ranks x out); h, the gated low-rank activations, is kept for backward."""
    with torch.autocast(x.device.type, enabled=False):  # in x's dtype, as the fake kernel says (the caller casts)
        a, b = lora_A[rows].to(x.dtype), lora_B_t[rows].to(x.dtype)
        h = torch.bmm(x, a.transpose(1, 2)) * gate.unsqueeze(1).to(x.dtype)
        return torch.bmm(h, b), h


@gathered_lora.register_fake
def _(x: torch.Tensor, lora_A: torch.Tensor, lora_B_t: torch.Tensor, rows: torch.Tensor,
      gate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    return x.new_empty(*x.shape[:2], lora_B_t.shape[1]), x.new_empty(*x.shape[:2], rows.shape[1])


@torch.library.custom_op("lslo::gathered_lora_backward", mutates_args=())
def gathered_lora_backward(grad: torch.Tensor, x: torch.Tensor, lora_A: torch.Tensor, lora_B_t: torch.Tensor,
                           rows: torch.Tensor, gate: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Gradients of `gathered_lora` for x, A and B^T (`gathered_grads`)."""
    with torch.autocast(x.device.type, enabled=False):
        grad_x, grad_A, grad_B_t = gathered_grads(grad, x, lora_A, lora_B_t, rows, gate, h)
        assert grad_x is not None
        return grad_x, grad_A, grad_B_t


@gathered_lora_backward.register_fake
def _(grad: torch.Tensor, x: torch.Tensor, lora_A: torch.Tensor, lora_B_t: torch.Tensor, rows: torch.Tensor,
      gate: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    return torch.empty_like(x), torch.empty_like(lora_A), torch.empty_like(lora_B_t)


def _gathered_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, lora_A, lora_B_t, rows, gate = inputs
    ctx.save_for_backward(x, lora_A, lora_B_t, rows, gate, output[1])


def _gathered_backward(ctx: Any, grad: torch.Tensor, _grad_h: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    grad_x, grad_A, grad_B_t = gathered_lora_backward(grad.contiguous(), *ctx.saved_tensors)
    return grad_x, grad_A, grad_B_t, None, None


gathered_lora.register_autograd(_gathered_backward, setup_context=_gathered_setup)


class LSLoLinear(nn.Module):
    """A frozen `nn.Linear` plus one LoRA per language, routed per sample by `route` ("src" or "tgt")."""

    def __init__(
        self,
        base_layer: nn.Linear,
        ranks: Sequence[int],
        scales: Sequence[float],
        route: str,
        routing: Routing,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.route = route
        self.routing = routing
        self.ranks = list(ranks)
        self.scales = list(scales)
        self.offsets = [0]
        for r in self.ranks:
            self.offsets.append(self.offsets[-1] + r)
        total = self.offsets[-1]
        weight = base_layer.weight
        self.lora_A = nn.Parameter(torch.empty(total, base_layer.in_features, device=weight.device, dtype=torch.float32))
        # B is (out x sum of ranks) but stored language-major (its transpose is contiguous): a language's columns
        # are one contiguous block, so its gradient and optimizer state are too (`lslo.optim` updates them in place).
        self.lora_B = nn.Parameter(torch.zeros(total, base_layer.out_features, device=weight.device, dtype=torch.float32).t())
        # gates[l] holds scale_l on language l's rank slice and 0 elsewhere; pad_index[l] lists language l's rows
        # of A padded to the largest rank (repeating its first row) and pad_gate[l] its scale, 0 on padding.
        # All derived, not saved.
        ranks, scales = torch.tensor(self.ranks), torch.tensor(self.scales, dtype=torch.float32)
        slot = torch.arange(max(self.ranks))
        pad_valid = slot < ranks[:, None]
        pad_index = torch.tensor(self.offsets[:-1])[:, None] + torch.where(pad_valid, slot, 0)
        owner = torch.repeat_interleave(torch.arange(len(self.ranks)), ranks)  # the language of each rank
        gates = torch.zeros(len(self.ranks), total)
        gates[owner, torch.arange(total)] = scales[owner]
        derived = dict(gates=gates, pad_index=pad_index, pad_gate=scales[:, None] * pad_valid, pad_valid=pad_valid)
        for name, value in derived.items():
            self.register_buffer(name, value.to(weight.device), persistent=False)
        # The route as tensor data (0 src, 1 tgt) for the compiled path: layers of either route share one graph.
        self.register_buffer("route_id", torch.tensor([ROUTES.index(route)], device=weight.device), persistent=False)
        self.path = "auto"  # mixed-batch path: "auto" (the cost rule `mixed_path`) or one of MIXED_PATHS
        # Keep-masks set by pruning (None = dense); saved through `LSLoModel.lora_state_dict`.
        self.register_buffer("lora_A_mask", None, persistent=False)
        self.register_buffer("lora_B_mask", None, persistent=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # Set by `LSLoModel.merged` for inference on one direction: W + delta of that direction's language.
        self.merged_weight: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """A as peft/Kaiming-uniform, B = 0: an untrained layer is exactly the base layer."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def span(self, lang: int) -> slice:
        return slice(self.offsets[lang], self.offsets[lang + 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged_weight is not None:
            return F.linear(x, self.merged_weight, self.base_layer.bias)
        if torch.compiler.is_compiling():  # the route as a tensor: layers of either route share one graph
            return self.traced_delta(x, self.route_id, self.lora_A, self.lora_B, out=self.base_layer(x))
        return self.lora_delta(x, self.route, self.lora_A, self.lora_B, out=self.base_layer(x))

    def lora_delta(
        self, x: torch.Tensor, route: str, lora_A: torch.Tensor, lora_B: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """B (g_l * (A x)) with each row's language l on `route`: the LoRA term of forward.

        With `out` (the base layer's output) the term is added to it inside the last product (one pass less
        over the output). The LoRA math runs in the activations' dtype on the rows it uses, except when
        training a base stored in another dtype without autocast: then the activations go to fp32.
        """
        if torch.compiler.is_compiling():  # traced by torch.compile: one branch-free path (see `traced_delta`)
            return self.traced_delta(x, self.route_id.new_tensor([ROUTES.index(route)]), lora_A, lora_B, out)
        index, single, per_sample = self.routing.samples(route, x.shape[0])
        x = self.dropout(x)
        if x.dtype != lora_A.dtype and torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type):
            x = x.to(lora_A.dtype)  # e.g. training a bf16 base without autocast: LoRA math stays in fp32
        if single is not None:
            s = self.span(single)
            h = F.linear(x, lora_A[s].to(x.dtype)) * self.scales[single]
            return project(h, lora_B.t()[s].to(h.dtype), out)
        path = self.mixed_path() if self.path == "auto" else self.path
        if path == "dense":
            h = F.linear(x, lora_A.to(x.dtype))
            gate = self.gates[self.routing.lookup(route, x.shape[0])[0]].to(h.dtype)
            h = h * gate.view(gate.shape[0], *([1] * (h.dim() - 2)), gate.shape[1])
            return project(h, lora_B.t().to(h.dtype), out)
        grouped = x.reshape(index.shape[0], -1, x.shape[-1])  # (samples, tokens of one sample, in)
        if path == "gathered":  # each sample's own rows, padded to the largest rank: cost ~ one rank
            dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
            fused = out is not None and out.dtype == dtype
            base = out.reshape(*grouped.shape[:2], -1) if fused else None
            with torch.autocast(x.device.type, enabled=False):
                if torch.is_grad_enabled():
                    delta = GatheredLoRA.apply(grouped.to(dtype), lora_A, lora_B, self.pad_index[index], self.pad_gate[index], base)
                else:  # inference: gather once per call (e.g. a whole beam search), not once per decoding step
                    a, b = self.routing.memo((self, route, dtype), lambda: self.gathered_weights(lora_A, lora_B, index, dtype))
                    h = torch.bmm(grouped.to(dtype), a.transpose(1, 2))  # a transposed view: faster than a copy
                    delta = torch.bmm(h, b) if base is None else base.baddbmm_(h, b)  # base: this call's own output
            if out is not None and not fused:
                delta = out + delta.reshape(out.shape).to(out.dtype)
        else:  # "compact": the dense product over the present languages' ranks only
            present, inverse = torch.unique(index, return_inverse=True)
            valid = self.pad_valid[present]  # (present, rmax): which padded slots are real ranks
            rows = self.pad_index[present][valid]
            gate = torch.zeros(index.shape[0], *valid.shape, dtype=self.pad_gate.dtype, device=x.device)
            gate[torch.arange(index.shape[0], device=x.device), inverse] = self.pad_gate[index]
            h = F.linear(grouped, lora_A.index_select(0, rows).to(x.dtype))
            h = h * gate[:, valid].unsqueeze(1).to(h.dtype)
            delta = project(h, lora_B.t().index_select(0, rows).to(h.dtype), None if out is None else out.reshape(*h.shape[:2], -1))
        return delta.reshape(*x.shape[:-1], delta.shape[-1])

    def traced_delta(
        self, x: torch.Tensor, route_id: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`lora_delta` as torch.compile traces it (`route_id`: [0] for src, [1] for tgt, a tensor): the languages are tensor data, not Python state.

        No branch on the batch's languages (no one-language slice, no `unique`, no `.item()`), no per-call cache:
        each row's language is a tensor (`Routing.index`) that gathers its gate (dense path: plain differentiable
        ops, whose backward AOTAutograd derives) or its own rows of A and B padded to the largest rank (gathered
        path, the padding's gate 0: the `lslo::gathered_lora` operator, eager's kernels in both directions). A
        language absent from the batch gets exactly zero gradient, and a new language mix or length reuses the
        compiled graph. Which of the two paths is static per layer (its ranks).
        """
        index = self.routing.both().index_select(0, route_id)[0]
        if x.shape[0] != index.shape[0]:  # beams: sample i occupies rows i*k .. i*k+k-1 (a shape guard, not data)
            index = index.repeat_interleave(x.shape[0] // index.shape[0])
        x = self.dropout(x)
        if x.dtype != lora_A.dtype and torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type):
            x = x.to(lora_A.dtype)
        grouped = x.reshape(index.shape[0], -1, x.shape[-1])  # (rows, tokens of one row, in)
        base = None if out is None else out.reshape(*grouped.shape[:2], -1)
        if (self.mixed_path() if self.path == "auto" else self.path) == "dense":
            h = torch.matmul(grouped, lora_A.t().to(grouped.dtype))
            h = h * self.gates[index].unsqueeze(1).to(h.dtype)
            delta = torch.matmul(h, lora_B.t().to(h.dtype))
        else:  # each row's own rows of A and B, padded to the largest rank (gate 0 on the padding): one operator
            dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else grouped.dtype
            delta = gathered_lora(grouped.to(dtype), lora_A, lora_B.t(), self.pad_index[index], self.pad_gate[index])[0]
        if base is not None:
            delta = base + delta.to(base.dtype)
        return delta.reshape(*x.shape[:-1], delta.shape[-1])

    def gathered_weights(self, lora_A: torch.Tensor, lora_B: torch.Tensor, index: torch.Tensor,
                         dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Each sample's own rows of A (times the gate: samples x rmax x in) and of B (samples x
        rmax x out), in `dtype`: what the gathered path multiplies by."""
        rows = self.pad_index[index]
        a = (lora_A[rows] * self.pad_gate[index].unsqueeze(-1)).to(dtype)
        return a, lora_B.t()[rows].to(dtype)

    def mixed_path(self) -> str:
        """The cost rule for a batch that mixes languages: "dense" (every token through all languages' ranks,
        one large product) while the ranks sum to at most GATHER_ABOVE x the largest, else "gathered" (every
        token through its own language's rank only, in batched products per sample)."""
        return "gathered" if self.offsets[-1] > GATHER_ABOVE * self.pad_index.shape[1] else "dense"

    def language_params(self) -> list[tuple[nn.Parameter, str, int]]:
        """(matrix, route, axis of its language slices) of each LoRA matrix: A's rows, B's columns."""
        return [(self.lora_A, self.route, 0), (self.lora_B, self.route, 1)]

    def delta_weight(self, lang: int) -> torch.Tensor:
        """Language `lang`'s update of the base weight: scale * B_l @ A_l (out x in, fp32)."""
        s = self.span(lang)
        return (self.lora_B[:, s].float() @ self.lora_A[s].float()) * self.scales[lang]

    @torch.no_grad()
    def folded_weight(self, lang: int) -> torch.Tensor:
        """The base weight with language `lang`'s update added, in the base weight's dtype (a new tensor)."""
        weight = self.base_layer.weight
        return (weight.float() + self.delta_weight(lang)).to(weight.dtype)

    def num_lora_parameters(self, lang: int) -> int:
        """Entries of language `lang`'s A and B that are kept (all of them when the layer is not pruned)."""
        s = self.span(lang)
        n_a = self.ranks[lang] * self.base_layer.in_features
        n_b = self.ranks[lang] * self.base_layer.out_features
        if self.lora_A_mask is not None:
            n_a = int(self.lora_A_mask[s].sum())
        if self.lora_B_mask is not None:
            n_b = int(self.lora_B_mask[:, s].sum())
        return n_a + n_b

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero the pruned entries of A and B (in place; called after each optimizer step)."""
        if self.lora_A_mask is not None:
            self.lora_A.masked_fill_(~self.lora_A_mask, 0.0)
        if self.lora_B_mask is not None:
            self.lora_B.masked_fill_(~self.lora_B_mask, 0.0)

    def extra_repr(self) -> str:
        return f"route={self.route}, ranks={self.ranks}"
