"""From a multi-way corpus to M2M-100 training batches.

1. `encode_corpus` turns every sentence into token ids once (cached on disk by content hash).
2. `directions` pairs the languages on the sentence ids they share (all ordered pairs).
3. `BatchSampler` draws each epoch's examples with temperature sampling over directions
   (p_d proportional to n_d^(1/T)), sorts them by length, cuts batches of at most `max_tokens` padded
   tokens and shuffles the batches; directions mix freely inside a batch. It is deterministic given
   the seed, and `state_dict` / `load_state_dict` restore the exact position in the stream.

An epoch is one pass over N = sum_d n_d examples drawn by temperature sampling (N is the number of
training pairs), i.e. about (padded training tokens) / max_tokens batches.

Batch layout (M2M-100): input = [src_lang_tok] + src + [eos]; labels = [tgt_lang_tok] + tgt + [eos];
decoder_input_ids = [eos] + labels[:-1]; inputs padded with pad_id, labels with -100.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lslo.encoding import decoder_inputs, language_row, pad
from lslo.errors import LsloError
from lslo.io import atomic_path
from lslo.loss import IGNORE_INDEX

# -- encoding ------------------------------------------------------------------------------------


@dataclass
class EncodedCorpus:
    """Token ids (no special tokens) of each language's sentences, stored flat with offsets."""

    flat: dict[str, np.ndarray]  # lang -> int32 ids of all sentences, concatenated
    offsets: dict[str, np.ndarray]  # lang -> int64, len n + 1
    ids: dict[str, list[str]]  # lang -> sentence ids, aligned with the sentences

    @property
    def languages(self) -> list[str]:
        return list(self.flat)

    def tokens(self, lang: str, i: int) -> np.ndarray:
        off = self.offsets[lang]
        return self.flat[lang][off[i] : off[i + 1]]

    def lengths(self, lang: str) -> np.ndarray:
        return np.diff(self.offsets[lang])


def _encode_texts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each text without special tokens."""
    sp, vocab = getattr(tokenizer, "sp_model", None), getattr(tokenizer, "encoder", None)
    if sp is not None and isinstance(vocab, dict) and type(tokenizer).__name__ == "M2M100Tokenizer":
        # Fast path for the slow M2M-100 tokenizer: the same pieces -> ids mapping, in C++.
        unk = vocab[tokenizer.unk_token]
        pieces = sp.encode(texts, out_type=str)
        return [[vocab.get(p, unk) for p in sent] for sent in pieces]
    out: list[list[int]] = []
    for start in range(0, len(texts), 1000):
        out += tokenizer(texts[start : start + 1000], add_special_tokens=False)["input_ids"]
    return out


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    h.update(repr(sorted(tokenizer.get_vocab().items())).encode())
    spm_file = getattr(tokenizer, "spm_file", None) or getattr(tokenizer, "vocab_file", None)
    if spm_file and Path(spm_file).is_file():
        h.update(Path(spm_file).read_bytes())
    ext = getattr(tokenizer, "lslo_extension", None)  # added languages' pieces (lslo.extend.tokenizer)
    if ext is not None:
        h.update(repr(ext.to_dict()).encode())
    return h.hexdigest()


def encode_corpus(corpus: Any, tokenizer: Any, cache_dir: str | os.PathLike | None = None) -> EncodedCorpus:
    """Encode every sentence of `corpus` (`.languages`, `.sentences(lang)`, `.ids(lang)`) once.

    With `cache_dir`, the result is stored as `<cache_dir>/<sha256>.npz`, keyed by the tokenizer and the
    text, and loaded from there next time.
    """
    langs = list(corpus.languages)
    key = hashlib.sha256(_tokenizer_fingerprint(tokenizer).encode())
    for lang in langs:
        key.update(f"\0{lang}\0".encode())
        key.update("\n".join(corpus.sentences(lang)).encode())
        key.update("\n".join(corpus.ids(lang)).encode())
    cache = Path(cache_dir) / f"{key.hexdigest()[:32]}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        data = np.load(cache, allow_pickle=False)
        return EncodedCorpus(
            flat={lang: data[f"flat_{lang}"] for lang in langs},
            offsets={lang: data[f"off_{lang}"] for lang in langs},
            ids={lang: list(corpus.ids(lang)) for lang in langs},
        )
    flat, offsets = {}, {}
    for lang in langs:
        seqs = _encode_texts(tokenizer, list(corpus.sentences(lang)))
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        offsets[lang] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat[lang] = np.fromiter((t for s in seqs for t in s), dtype=np.int32, count=int(lengths.sum()))
    enc = EncodedCorpus(flat=flat, offsets=offsets, ids={lang: list(corpus.ids(lang)) for lang in langs})
    if cache is not None:
        arrays = {f"flat_{lang}": flat[lang] for lang in langs} | {
            f"off_{lang}": offsets[lang] for lang in langs
        }
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return enc


# -- directions ----------------------------------------------------------------------------------


@dataclass
class Direction:
    """The parallel examples of one ordered language pair: sentence indices on each side."""

    src: str
    tgt: str
    src_idx: np.ndarray
    tgt_idx: np.ndarray

    def __len__(self) -> int:
        return len(self.src_idx)


def directions(
    enc: EncodedCorpus, languages: Sequence[str] | None = None, pairs: Sequence[tuple[str, str]] | None = None
) -> list[Direction]:
    """All ordered pairs of `languages` (default: all) that share at least one sentence id.

    `pairs` restricts the result to the given (src, tgt) pairs.
    """
    langs = list(languages) if languages is not None else enc.languages
    missing = [lang for lang in langs if lang not in enc.flat]
    if missing:
        raise LsloError(
            f"languages: {missing[0]!r} is not in the data; choose from {', '.join(enc.languages)}"
        )
    index = {lang: {sid: i for i, sid in enumerate(enc.ids[lang])} for lang in langs}
    wanted = set(pairs) if pairs is not None else None
    out = []
    for src in langs:
        for tgt in langs:
            if src == tgt or (wanted is not None and (src, tgt) not in wanted):
                continue
            shared = [sid for sid in enc.ids[src] if sid in index[tgt]]
            if shared:
                out.append(
                    Direction(
                        src,
                        tgt,
                        np.array([index[src][s] for s in shared], dtype=np.int64),
                        np.array([index[tgt][s] for s in shared], dtype=np.int64),
                    )
                )
    if not out:
        raise LsloError("data: no two of the chosen languages share a sentence id; nothing to train on")
    return out


def temperature_probs(sizes: Sequence[int], temperature: float) -> np.ndarray:
    """p_d proportional to n_d ** (1 / T): T=1 follows the data, large T tends to uniform."""
    if temperature <= 0:
        raise LsloError(f"temperature: {temperature} must be > 0 (1 = proportional, 5 = the usual)")
    w = np.asarray(sizes, dtype=np.float64) ** (1.0 / temperature)
    return w / w.sum()


# -- batches -------------------------------------------------------------------------------------


@dataclass
class Batch:
    """One batch of M2M-100 tensors plus each sample's language pair."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    decoder_input_ids: torch.Tensor
    labels: torch.Tensor
    src_lang: list[str]
    tgt_lang: list[str]

    def __len__(self) -> int:
        return len(self.src_lang)

    @property
    def num_tokens(self) -> int:
        """Target tokens that count in the loss."""
        return int((self.labels != IGNORE_INDEX).sum())

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.decoder_input_ids.to(device),
            self.labels.to(device),
            self.src_lang,
            self.tgt_lang,
        )

    def model_inputs(self) -> dict[str, Any]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "decoder_input_ids": self.decoder_input_ids,
            "src_lang": self.src_lang,
            "tgt_lang": self.tgt_lang,
        }


def collate(
    samples: Sequence[tuple[str, str, Sequence[int], Sequence[int]]],
    lang_token_ids: Mapping[str, int],
    pad_id: int,
    eos_id: int,
    max_len: int = 256,
) -> Batch:
    """Build a `Batch` from (src_lang, tgt_lang, src_ids, tgt_ids) samples (ids without specials).

    Each side is cut to `max_len` tokens including its language token and </s>.
    """
    srcs = [language_row(lang_token_ids[s], x, eos_id, max_len) for s, _, x, _ in samples]
    tgts = [language_row(lang_token_ids[t], y, eos_id, max_len) for _, t, _, y in samples]
    input_ids, attention_mask = pad(srcs, pad_id)
    labels, _ = pad(tgts, IGNORE_INDEX)
    decoder_input_ids, _ = pad(decoder_inputs(tgts, eos_id), pad_id)
    return Batch(
        input_ids, attention_mask, decoder_input_ids, labels, [s[0] for s in samples], [s[1] for s in samples]
    )


def shard(batch: Batch, rank: int, world: int) -> Batch:
    """This process's share of a global batch: samples rank, rank + world, ... (re-padded)."""
    keep = list(range(rank, len(batch), world))
    if not keep:
        return batch_slice(batch, [])
    return batch_slice(batch, keep)


def batch_slice(batch: Batch, rows: Sequence[int]) -> Batch:
    """Rows of a batch, with padding columns that no kept row uses dropped."""
    idx = torch.tensor(list(rows), dtype=torch.long)
    am = batch.attention_mask[idx]
    lab = batch.labels[idx]
    ls = int(am.sum(1).max()) if len(rows) else 0
    lt = int((lab != IGNORE_INDEX).sum(1).max()) if len(rows) else 0
    return Batch(
        batch.input_ids[idx, :ls],
        am[:, :ls],
        batch.decoder_input_ids[idx, :lt],
        lab[:, :lt],
        [batch.src_lang[i] for i in rows],
        [batch.tgt_lang[i] for i in rows],
    )


def _cut_batches(cost: np.ndarray, max_tokens: int) -> list[tuple[int, int]]:
    """Greedy [start, end) spans over length-sorted rows with len * longest <= max_tokens."""
    spans, start, longest = [], 0, 0
    for i, c in enumerate(cost.tolist()):
        longest_new = max(longest, c)
        if i > start and (i - start + 1) * longest_new > max_tokens:
            spans.append((start, i))
            start, longest_new = i, c
        longest = longest_new
    if len(cost):
        spans.append((start, len(cost)))
    return spans


class BatchSampler:
    """An endless, resumable stream of temperature-sampled, length-bucketed batches.

    `max_tokens` bounds the padded size of a batch: samples * longest side (both sides counted with
    their language token and </s>, after truncation to `max_len`).
    """

    def __init__(
        self,
        enc: EncodedCorpus,
        dirs: Sequence[Direction],
        lang_token_ids: Mapping[str, int],
        pad_id: int,
        eos_id: int,
        max_tokens: int = 4096,
        max_len: int = 256,
        temperature: float = 5.0,
        seed: int = 0,
    ) -> None:
        if max_len < 3:
            raise LsloError(f"max_len: {max_len} leaves no room for text; use at least 3 (e.g. 256)")
        if max_tokens < max_len:
            raise LsloError(f"max_tokens: {max_tokens} is smaller than max_len {max_len}; raise max_tokens")
        missing = sorted(({d.src for d in dirs} | {d.tgt for d in dirs}) - set(lang_token_ids))
        if missing:
            raise LsloError(f"tokenizer has no language token for {missing[0]!r}")
        self.enc, self.dirs = enc, list(dirs)
        self.lang_token_ids, self.pad_id, self.eos_id = dict(lang_token_ids), pad_id, eos_id
        self.max_tokens, self.max_len, self.seed = max_tokens, max_len, seed
        self.sizes = np.array([len(d) for d in self.dirs], dtype=np.int64)
        self.probs = temperature_probs(self.sizes, temperature)
        self.epoch_size = int(self.sizes.sum())
        # Per direction: the padded cost of each example (longest side incl. specials, truncated).
        self._cost = []
        for d in self.dirs:
            ls = np.minimum(enc.lengths(d.src)[d.src_idx], max_len - 2) + 2
            lt = np.minimum(enc.lengths(d.tgt)[d.tgt_idx], max_len - 2) + 2
            self._cost.append(np.maximum(ls, lt))
        self.epoch, self.index = 0, 0
        self._plan_epoch: int | None = None
        self._plan: list[np.ndarray] = []

    # -- the plan of one epoch: a list of batches, each an array of (direction, example) rows --
    def counts(self) -> np.ndarray:
        """Examples drawn from each direction per epoch (round(N * p_d), at least 1)."""
        return np.maximum(1, np.rint(self.epoch_size * self.probs)).astype(np.int64)

    def plan(self, epoch: int) -> list[np.ndarray]:
        if self._plan_epoch == epoch:
            return self._plan
        rng = np.random.default_rng([self.seed, epoch])
        rows, costs = [], []
        for d, count in enumerate(self.counts().tolist()):
            n = int(self.sizes[d])
            full, rest = divmod(count, n)
            pick = np.concatenate([np.tile(np.arange(n), full), rng.choice(n, rest, replace=False)])
            rows.append(np.stack([np.full(len(pick), d), pick], axis=1))
            costs.append(self._cost[d][pick])
        rows_arr, cost = np.concatenate(rows), np.concatenate(costs)
        order = np.lexsort((rng.random(len(rows_arr)), cost))
        rows_arr, cost = rows_arr[order], cost[order]
        spans = _cut_batches(cost, self.max_tokens)
        batches = [rows_arr[a:b] for a, b in spans]
        perm = rng.permutation(len(batches))
        self._plan_epoch, self._plan = epoch, [batches[i] for i in perm]
        return self._plan

    def batches_per_epoch(self, epoch: int = 0) -> int:
        return len(self.plan(epoch))

    # -- the stream --
    def make_batch(self, rows: np.ndarray) -> Batch:
        samples = []
        for d, i in rows.tolist():
            dr = self.dirs[d]
            samples.append(
                (
                    dr.src,
                    dr.tgt,
                    self.enc.tokens(dr.src, dr.src_idx[i]),
                    self.enc.tokens(dr.tgt, dr.tgt_idx[i]),
                )
            )
        return collate(samples, self.lang_token_ids, self.pad_id, self.eos_id, self.max_len)

    def next_batch(self) -> Batch:
        plan = self.plan(self.epoch)
        batch = self.make_batch(plan[self.index])
        self.index += 1
        if self.index == len(plan):
            self.epoch, self.index = self.epoch + 1, 0
        return batch

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        if state["seed"] != self.seed:
            raise LsloError(
                f"sampler state is for seed {state['seed']}, not {self.seed}; keep the run's seed"
            )
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


def fixed_batches(
    enc: EncodedCorpus,
    dirs: Sequence[Direction],
    lang_token_ids: Mapping[str, int],
    pad_id: int,
    eos_id: int,
    max_tokens: int = 4096,
    max_len: int = 256,
    max_per_direction: int | None = None,
) -> list[Batch]:
    """Every example of `dirs` once (the first `max_per_direction` of each), length-sorted: for validation."""
    samples = []
    for dr in dirs:
        n = len(dr) if max_per_direction is None else min(len(dr), max_per_direction)
        for i in range(n):
            samples.append(
                (dr.src, dr.tgt, enc.tokens(dr.src, dr.src_idx[i]), enc.tokens(dr.tgt, dr.tgt_idx[i]))
            )
    cost = np.array([max(min(len(x), max_len - 2), min(len(y), max_len - 2)) + 2 for _, _, x, y in samples])
    order = np.argsort(cost, kind="stable")
    spans = _cut_batches(cost[order], max_tokens)
    return [
        collate([samples[j] for j in order[a:b]], lang_token_ids, pad_id, eos_id, max_len) for a, b in spans
    ]
