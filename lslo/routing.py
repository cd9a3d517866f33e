"""Routing: which of its languages' LoRAs an LSLo layer uses for each sample, in one place.

- The spec: each layer routes by the sentence's source or target language. `parse_routing("src*9,tgt*3", 12)`
  gives one route per layer; `format_routing` writes it back. (`LSLoConfig.routes` reads it.)
- The codes: `alias_table(languages)` maps every spelling of each configured language (as given, M2M-100,
  FLORES-101, FLORES-200/NLLB) to its index; `language_index` resolves a call's `src_lang` / `tgt_lang`.
- The state: one `Routing` per model, shared by its LSLo layers. `LSLoModel` sets it for each call with
  `Routing.use(...)`, which clears it when the call ends; a layer reads its rows' languages from it.

Data flows one way: codes -> indices (here) -> per-row gates and slices (`lslo.layer.LSLoLinear`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch._dynamo

from lslo.errors import LsloError

ROUTES = ("src", "tgt")
Langs = str | Sequence[str]


# -- the spec --------------------------------------------------------------------------------------


def parse_routing(spec: str | list[str], num_layers: int, field_name: str) -> list[str]:
    """Expand a routing spec into one route per layer.

    `"src*9,tgt*3"` -> 9 x "src" then 3 x "tgt"; a bare `"tgt"` means every layer; a list is taken as is.
    """
    if isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        if len(parts) == 1 and "*" not in parts[0]:
            parts = [f"{parts[0]}*{num_layers}"]
        routes: list[str] = []
        for part in parts:
            name, _, count = part.partition("*")
            try:
                n = int(count) if count else 1
            except ValueError:
                raise ValueError(f"{field_name}: bad item {part!r}; write e.g. 'src*9,tgt*3'") from None
            routes += [name.strip()] * n
    else:
        routes = list(spec)
    bad = sorted({r for r in routes if r not in ROUTES})
    if bad:
        raise ValueError(f"{field_name}: unknown route {bad[0]!r}; each layer routes by 'src' or 'tgt'")
    if len(routes) != num_layers:
        raise ValueError(
            f"{field_name}: {len(routes)} routes for a model with {num_layers} layers; "
            f"give exactly one per layer, e.g. 'src*{num_layers - num_layers // 4},tgt*{num_layers // 4}'"
        )
    return routes


def format_routing(routes: list[str]) -> str:
    """Inverse of `parse_routing`: `["src", "src", "tgt"]` -> `"src*2,tgt*1"`."""
    out: list[str] = []
    for route in routes:
        if out and out[-1].startswith(route + "*"):
            out[-1] = f"{route}*{int(out[-1].split('*')[1]) + 1}"
        else:
            out.append(f"{route}*1")
    return ",".join(out)


# -- the codes --------------------------------------------------------------------------------------


def alias_table(languages: Sequence[str]) -> dict[str, int]:
    """Every spelling of each configured language (as given, M2M-100, FLORES-101, FLORES-200) -> its index."""
    from lslo.languages import lookup

    table: dict[str, int] = {}
    for i, code in enumerate(languages):
        known = lookup(code)
        spellings = {code, code.lower()}
        if known is not None:
            spellings |= {c for c in (known.m2m, known.flores101, known.flores200) if c}
        for s in spellings:
            for key in (s, s.lower()):
                if table.get(key, i) != i:
                    raise LsloError(f"languages: {code!r} and {languages[table[key]]!r} are the same language; list it once")
                table[key] = i
    return table


def language_index(codes: Langs, aliases: dict[str, int], languages: Sequence[str], arg: str = "language") -> list[int]:
    """Indices of `codes` (a code or a list of codes) by `aliases` (`alias_table(languages)`); unknown codes raise."""
    out = []
    for code in [codes] if isinstance(codes, str) else list(codes):
        i = aliases.get(code, aliases.get(str(code).lower()))
        if i is None:
            raise LsloError(f"{arg}: unknown language {code!r}; this model knows {', '.join(languages)}")
        out.append(i)
    return out


# -- the per-call state -----------------------------------------------------------------------------


class Routing:
    """Per-call routing state shared by every LSLo layer of one model.

    Holds each sample's language index per route ("src", "tgt"). A layer asking for `n` rows when the
    batch has `b` samples gets each index repeated `n // b` times, which is how `generate` expands a
    batch for beam search and `num_return_sequences` (sample i occupies rows i*k .. i*k+k-1).
    """

    def __init__(self) -> None:
        self._index: dict[str, torch.Tensor] = {}
        self._single: dict[str, int | None] = {}
        self._expanded: dict[tuple[str, int], torch.Tensor] = {}
        self._memo: dict[Any, Any] = {}
        self._used: dict[str, set[int]] = {"src": set(), "tgt": set()}
        self._both: torch.Tensor | None = None  # (2, samples): rows 0 and 1 are `src` and `tgt`'s indices

    def set(self, route: str, index: list[int], device: torch.device | str) -> None:
        """Route sample i to language `index[i]` on layers of route `route`."""
        self._single[route] = index[0] if index and all(i == index[0] for i in index) else None
        self._index[route] = torch.tensor(index, dtype=torch.long, device=device)
        self._expanded = {k: v for k, v in self._expanded.items() if k[0] != route}
        self._memo.clear()
        self._both = None
        if "src" in self._index and "tgt" in self._index and len(self._index["src"]) == len(self._index["tgt"]):
            self._both = torch.stack([self._index["src"], self._index["tgt"]])
            torch._dynamo.mark_static(self._both, 0)  # 2 routes, always: only the batch dimension varies

    def clear(self) -> None:
        self._both = None
        self._index.clear()
        self._single.clear()
        self._expanded.clear()
        self._memo.clear()

    @contextlib.contextmanager
    def use(self, src: list[int], tgt: list[int], device: torch.device | str) -> Iterator[None]:
        """Route sample i by `src[i]` / `tgt[i]` for one call (a forward or a `generate`); cleared when it ends,
        so a later call that forgets its languages fails loudly instead of reusing these. (Backward needs no
        routing: the layers' autograd keeps the indices it used.)"""
        self.set("src", src, device)
        self.set("tgt", tgt, device)
        if torch.is_grad_enabled():
            self._used["src"].update(src)
            self._used["tgt"].update(tgt)
        try:
            yield
        finally:
            self.clear()

    def memo(self, key: Any, make: Callable[[], Any]) -> Any:
        """`make()`, computed once per call for `key` (cleared with the routing): e.g. a layer's gathered
        per-sample weights, reused by every decoding step of a beam search. Only for calls without autograd."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def take_used(self) -> dict[str, set[int]]:
        """The languages of each route that calls with autograd on used since the last `take_used` (what one
        optimizer step trained: read by `lslo.optim.LanguageAdamW`), and start a new record."""
        used, self._used = self._used, {"src": set(), "tgt": set()}
        return used

    def both(self) -> torch.Tensor:
        """Each sample's language index by route, (2, samples): row `ROUTES.index(route)`. What a compiled layer
        reads: tensor data, so neither the languages nor the layer's route are Python values a graph depends on."""
        if self._both is None:
            raise RuntimeError(
                "LSLo layer called without routing: call the LSLoModel (not its base model) with src_lang= and tgt_lang="
            )
        return self._both

    def samples(self, route: str, rows: int) -> tuple[torch.Tensor | None, int | None, int]:
        """(per-sample language index, or None when all share language `single`; single; rows per sample)."""
        if route not in self._index:
            raise RuntimeError(
                "LSLo layer called without routing: call the LSLoModel (not its base model) with src_lang= and tgt_lang="
            )
        index = self._index[route]
        if rows % index.shape[0]:
            raise RuntimeError(f"LSLo routing: {rows} rows for a batch of {index.shape[0]} samples")
        single = self._single[route]
        return (None if single is not None else index), single, rows // index.shape[0]

    def lookup(self, route: str, rows: int) -> tuple[torch.Tensor | None, int | None]:
        """(per-row language index, or None when all rows share language `single`; single)."""
        if route not in self._index:
            raise RuntimeError(
                "LSLo layer called without routing: call the LSLoModel (not its base model) with src_lang= and tgt_lang="
            )
        single = self._single[route]
        if single is not None:
            return None, single
        index = self._index[route]
        if rows == index.shape[0]:
            return index, None
        key = (route, rows)
        if key not in self._expanded:
            if rows % index.shape[0]:
                raise RuntimeError(f"LSLo routing: {rows} rows for a batch of {index.shape[0]} samples")
            self._expanded[key] = index.repeat_interleave(rows // index.shape[0])
        return self._expanded[key], None
