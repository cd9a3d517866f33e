"""Architecture learning for LSLo: which layers route by source or target language, and where LSLo goes.

Routing search (`search_routing`): every LSLo position holds a source-indexed and a target-indexed LoRA
(`MixedRouteLinear`), mixed by softmax weights that train with them (one pair of logits per layer and
side, or per position). Each layer then routes by the bank with the larger weight; the result is a ready
`LSLoConfig` (e.g. `encoder_routing="src*9,tgt*3"`).

Placement search (`search_placement`): LSLo on every position of every layer, trained under gradual
magnitude pruning in `language` scope (per language, all layers and positions compete for the surviving
budget); positions and layers are ranked by the share of their parameters that survive, and those above
the mean share make up the recommended placement.

Both take a base model and an iterator of training batches (a `lslo.data.batching.Batch` or a dict with
`input_ids`, `attention_mask`, `decoder_input_ids`, `labels`, `src_lang`, `tgt_lang`) and train with a short
loop (`fit`: AdamW at a constant rate) on `lslo train`'s loss, `lslo.loss.batch_loss`, averaged over the
target tokens (`token_loss`; by default without smoothing, in fp32; `lslo search` passes the run config's
label smoothing, precision and clip_norm). `loss_fn(model, batch)` replaces it (e.g. for distillation).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lslo.config import DECODER_POSITIONS, ENCODER_POSITIONS, POSITIONS, LSLoConfig
from lslo.errors import LsloError
from lslo.io import atomic_dir, atomic_path, write_json
from lslo.layer import LSLoLinear
from lslo.loss import batch_loss
from lslo.model import LSLoModel, base_identity, rank_scales
from lslo.precision import autocast
from lslo.pruning import GradualPruner, PruningConfig
from lslo.routing import Routing, format_routing
from lslo.subspace import locate, plot_subspace, subspace_report
from lslo.translation import require_m2m100

LossFn = Callable[[nn.Module, Any], torch.Tensor]


# -- training --------------------------------------------------------------------------------------


def _to_device(batch: Any, device: torch.device) -> tuple[dict[str, Any], torch.Tensor | None]:
    """(model inputs, labels) of a `Batch` or a dict, on `device`."""
    if hasattr(batch, "model_inputs"):
        inputs, labels = dict(batch.model_inputs()), batch.labels
    else:
        inputs = dict(batch)
        labels = inputs.pop("labels", None)
    inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
    return inputs, None if labels is None else labels.to(device)


def token_loss(label_smoothing: float = 0.0, precision: str = "fp32") -> LossFn:
    """`lslo train`'s loss (`lslo.loss.batch_loss`, the forward under `precision`'s autocast) divided by the
    batch's number of target tokens."""

    def loss_fn(model: nn.Module, batch: Any) -> torch.Tensor:
        inputs, labels = _to_device(batch, model.device)
        if labels is None:
            raise LsloError("search: a batch has no labels; give labels or a loss_fn")
        loss, _, n = batch_loss(model, inputs, labels, label_smoothing, lambda: autocast(precision, model.device))
        return loss / max(n, 1)

    return loss_fn


def cross_entropy_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """The default loss: token-averaged cross-entropy of the batch's labels (-100 ignored), in fp32."""
    return token_loss()(model, batch)


def fit(
    model: nn.Module,
    batches: Iterable[Any],
    steps: int,
    param_groups: list[dict[str, Any]],
    loss_fn: LossFn = cross_entropy_loss,
    callback: Callable[[int, nn.Module], None] | None = None,
    clip_norm: float = 0.0,
) -> list[float]:
    """`steps` AdamW steps over `batches` (cycled if it runs out), the gradient norm clipped to `clip_norm` as
    `lslo train` clips it (0: no clipping); returns the loss of every step."""
    if steps < 1:
        raise LsloError(f"search: steps={steps}; use at least 1")
    optimizer = torch.optim.AdamW(param_groups, weight_decay=0.0)
    if isinstance(callback, GradualPruner):
        callback.setup(model, optimizer)
    model.train()
    losses: list[float] = []
    iterator = iter(batches)
    for step in range(1, steps + 1):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(batches)
            batch = next(iterator, None)
            if batch is None:
                raise LsloError("search: the batch iterator is empty; give training batches") from None
        loss = loss_fn(model, batch)
        loss.backward()
        if clip_norm > 0:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if callback is not None:
            callback(step, model)
    model.eval()
    return losses


# -- routing search --------------------------------------------------------------------------------


class MixedRouteLinear(LSLoLinear):
    """Search-only LSLo layer: a source-indexed bank (`lora_A`/`lora_B`) and a target-indexed bank
    (`tgt_A`/`tgt_B`), mixed as `softmax(mix)[0] * src + softmax(mix)[1] * tgt`.

    `mix` may be shared by several layers (one pair of logits per layer and side). Not for merging or
    saving: the search result is an `LSLoConfig` to train a plain LSLo model with.
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        ranks: Sequence[int],
        scales: Sequence[float],
        routing: Routing,
        mix: nn.Parameter,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(base_layer, ranks, scales, "src", routing, dropout)
        self.tgt_A = nn.Parameter(torch.empty_like(self.lora_A))
        self.tgt_B = nn.Parameter(torch.zeros_like(self.lora_B))
        nn.init.kaiming_uniform_(self.tgt_A, a=math.sqrt(5))
        self.mix = mix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        w = torch.softmax(self.mix, dim=0)
        src = self.lora_delta(x, "src", self.lora_A, self.lora_B)
        tgt = self.lora_delta(x, "tgt", self.tgt_A, self.tgt_B)
        return out + (w[0] * src + w[1] * tgt).to(out.dtype)

    def language_params(self) -> list[tuple[nn.Parameter, str, int]]:
        return [(self.lora_A, "src", 0), (self.lora_B, "src", 1), (self.tgt_A, "tgt", 0), (self.tgt_B, "tgt", 1)]

    def delta_weight(self, lang: int) -> torch.Tensor:
        raise LsloError("MixedRouteLinear is a search layer; train an LSLo model with the searched config and merge that")

    def num_lora_parameters(self, lang: int) -> int:
        return 2 * super().num_lora_parameters(lang)

    def extra_repr(self) -> str:
        return f"route=src+tgt, ranks={self.ranks}"


def add_routing_search(model: nn.Module, config: LSLoConfig, per_position: bool = False) -> tuple[LSLoModel, dict[str, nn.Parameter]]:
    """Inject `MixedRouteLinear`s where `config` places LSLo (in place, base frozen).

    Returns the model and its mixing logits: key `"encoder.3"` (per layer and side) or `"encoder.3.fc1"`
    (per position) -> a 2-vector of logits (source, target), initialised to equal weights.
    """
    require_m2m100(model, "search_routing")
    identity = base_identity(model)
    model.requires_grad_(False)
    ranks, scales = rank_scales(config)
    routing = Routing()
    mixes: dict[str, nn.Parameter] = {}
    device = model.get_input_embeddings().weight.device
    for name, _ in config.targets(len(model.model.encoder.layers), len(model.model.decoder.layers)):
        base = model.get_submodule(name)
        if not isinstance(base, nn.Linear):
            raise LsloError(f"search_routing: {name} is a {type(base).__name__}, not nn.Linear; give a plain base model")
        side, index, position = locate(name)
        key = f"{side}.{index}" + (f".{position}" if per_position else "")
        mix = mixes.setdefault(key, nn.Parameter(torch.zeros(2, device=device)))
        model.set_submodule(name, MixedRouteLinear(base, ranks, scales, routing, mix, config.dropout))
    return LSLoModel(model, config, routing, identity), mixes


@dataclass
class RoutingSearch:
    """The outcome of a routing search: a ready config, the learned weights and the training losses."""

    config: LSLoConfig
    weights: dict[str, list[float]]  # "encoder.3" or "encoder.3.fc1" -> [weight of src, weight of tgt]
    losses: list[float] = field(default_factory=list)

    def save(self, directory: str | Path) -> None:
        """Write `lslo_config.json`, `routing_weights.json` and `routing.png` (atomically, all or nothing)."""
        with atomic_dir(directory) as tmp:
            self.config.save(tmp / "lslo_config.json")
            write_json(tmp / "routing_weights.json", {"weights": self.weights, "losses": self.losses})
            plot_routing(self.weights, tmp / "routing.png")


def decide_routes(weights: Mapping[str, Sequence[float]], config: LSLoConfig, num_layers: dict[str, int]) -> LSLoConfig:
    """A copy of `config` whose routing follows `weights`: a layer routes by target when the target bank's
    weight, averaged over the layer's entries, exceeds one half; layers without LSLo keep their route."""
    out = dataclasses.replace(config)
    for side, count in num_layers.items():
        routes = config.routes(side, count)
        for i in range(count):
            mine = [w[1] for key, w in weights.items() if key.split(".")[:2] == [side, str(i)]]
            if mine:
                routes[i] = "tgt" if sum(mine) / len(mine) > 0.5 else "src"
        setattr(out, f"{side}_routing", format_routing(routes))
    return out


def search_routing(
    model: nn.Module,
    config: LSLoConfig,
    batches: Iterable[Any],
    steps: int,
    *,
    lr: float = 1e-3,
    arch_lr: float = 1e-2,
    per_position: bool = False,
    loss_fn: LossFn = cross_entropy_loss,
    clip_norm: float = 0.0,
) -> RoutingSearch:
    """Learn, for every layer that `config` places LSLo in, whether it should route by source or target.

    `model` (a plain M2M-100/NLLB model) is modified in place; pass a copy to keep it. The LoRA banks
    train with `lr`, the mixing logits with `arch_lr`, jointly, for `steps` steps (`fit`, with `clip_norm`).
    """
    search_model, mixes = add_routing_search(model, config, per_position)
    lora = [p for n, p in search_model.named_parameters() if p.requires_grad and not n.endswith(".mix")]
    groups = [{"params": lora, "lr": lr}, {"params": list(mixes.values()), "lr": arch_lr}]
    losses = fit(search_model, batches, steps, groups, loss_fn, clip_norm=clip_norm)
    weights = {key: torch.softmax(mix.detach().float().cpu(), 0).tolist() for key, mix in mixes.items()}
    counts = {"encoder": len(model.model.encoder.layers), "decoder": len(model.model.decoder.layers)}
    return RoutingSearch(decide_routes(weights, config, counts), weights, losses)


def plot_routing(weights: Mapping[str, Sequence[float]], path: str | Path) -> None:
    """PNG: the target bank's weight per layer (x) and position (y; one row when shared), one panel per side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sides = [s for s in ("encoder", "decoder") if any(k.startswith(s + ".") for k in weights)]
    fig = Figure(figsize=(5.0 * max(len(sides), 1), 3.2), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(len(sides), 1), squeeze=False)[0]
    image = None
    for ax, side in zip(axes, sides, strict=False):
        keys = [k.split(".") for k in weights if k.startswith(side + ".")]
        layers = sorted({int(k[1]) for k in keys})
        rows = [p for p in POSITIONS if any(len(k) == 3 and k[2] == p for k in keys)] or ["all"]
        grid = np.full((len(rows), len(layers)), np.nan)
        for key, w in weights.items():
            parts = key.split(".")
            if parts[0] == side:
                grid[rows.index(parts[2] if len(parts) == 3 else "all"), layers.index(int(parts[1]))] = w[1]
        image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="coolwarm", aspect="auto")
        ax.set_xticks(range(len(layers)), [str(i) for i in layers])
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel("layer")
        ax.set_title(f"{side}: weight of the target-indexed LoRA", fontsize=10)
        for (r, c), v in np.ndenumerate(grid):
            if not np.isnan(v):
                ax.text(c, r, "tgt" if v > 0.5 else "src", ha="center", va="center", fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8, label="0 = source, 1 = target")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


# -- placement search ------------------------------------------------------------------------------


@dataclass
class PlacementSearch:
    """The outcome of a placement search: the recommended config, the ranked tables and the full report."""

    config: LSLoConfig
    positions: list[dict[str, Any]]  # side, position, share, rank (1 = most surviving), kept (bool)
    layers: list[dict[str, Any]]  # side, layer, share, rank, kept
    report: dict[str, Any]  # `lslo.subspace.subspace_report` of the pruned search model
    losses: list[float] = field(default_factory=list)

    def save(self, directory: str | Path) -> None:
        """Write `lslo_config.json`, `placement.json` (tables + report) and `placement.png`."""
        with atomic_dir(directory) as tmp:
            self.config.save(tmp / "lslo_config.json")
            write_json(tmp / "placement.json", {"positions": self.positions, "layers": self.layers,
                                                "report": self.report, "losses": self.losses})  # fmt: skip
            plot_subspace(self.report, tmp / "placement.png")


def _rank(rows: list[dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """Rank rows by share within each side; keep those with share >= threshold x the side's mean share
    (the best row of a side is always kept)."""
    out = []
    for side in ("encoder", "decoder"):
        mine = sorted((dict(r) for r in rows if r["side"] == side), key=lambda r: -r["share"])
        if not mine:
            continue
        mean = sum(r["share"] for r in mine) / len(mine)
        for rank, row in enumerate(mine, 1):
            row["rank"] = rank
            row["kept"] = rank == 1 or row["share"] >= threshold * mean
            out.append(row)
    return out


def default_placement_pruning(steps: int) -> PruningConfig:
    """Pruning over optimizer steps for a search of `steps` steps: 0.9 pruned, reached at 80% of the run."""
    return PruningConfig(ratio=0.9, start=max(1, steps // 5), duration=max(1, (3 * steps) // 5), unit="step",
                         every=max(1, steps // 50), scope="language")  # fmt: skip


def search_placement(
    model: nn.Module,
    config: LSLoConfig,
    batches: Iterable[Any],
    steps: int,
    *,
    pruning: PruningConfig | None = None,
    lr: float = 1e-3,
    loss_fn: LossFn = cross_entropy_loss,
    position_threshold: float = 1.0,
    layer_threshold: float = 0.0,
    clip_norm: float = 0.0,
) -> PlacementSearch:
    """Train LSLo on every position and layer under gradual pruning, rank what survives, recommend a placement.

    `config` gives the languages, ranks and routing; its placement is ignored. The recommended config keeps
    each side's positions whose surviving share is at least `position_threshold` x the side's mean, and its
    layers likewise with `layer_threshold` (default 0: every layer). `model` is modified in place; `fit` trains
    it (with `clip_norm`).
    """
    pruning = pruning or default_placement_pruning(steps)
    if pruning.scope != "language":
        raise LsloError(
            f"search_placement: pruning scope {pruning.scope!r} gives every LSLo layer the same share; "
            "use scope='language' so that layers and positions compete"
        )
    from lslo.model import add_lslo

    full = dataclasses.replace(config, encoder_modules=list(ENCODER_POSITIONS), decoder_modules=list(DECODER_POSITIONS),
                               encoder_layers=None, decoder_layers=None)  # fmt: skip
    search_model = add_lslo(model, full)
    pruner = GradualPruner(cfg=pruning)
    params = [p for p in search_model.parameters() if p.requires_grad]
    losses = fit(search_model, batches, steps, [{"params": params, "lr": lr}], loss_fn, callback=pruner,
                 clip_norm=clip_norm)
    pruner.close()
    report = subspace_report(search_model)
    positions = _rank(report["positions"], position_threshold)
    layers = _rank(report["layers"], layer_threshold)
    recommended = dataclasses.replace(config)
    for side in ("encoder", "decoder"):
        kept = {r["position"] for r in positions if r["side"] == side and r["kept"]}
        setattr(recommended, f"{side}_modules", [p for p in POSITIONS if p in kept])
        kept_layers = sorted(r["layer"] for r in layers if r["side"] == side and r["kept"])
        total = len(getattr(model.model, side).layers)
        setattr(recommended, f"{side}_layers", None if len(kept_layers) == total else kept_layers)
    return PlacementSearch(LSLoConfig.from_dict(recommended.to_dict()), positions, layers, report, losses)
