"""Encoding, directions, temperature sampling and the M2M-100 batch layout."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
import torch

from lslo.data.batching import (
    IGNORE_INDEX,
    BatchSampler,
    collate,
    directions,
    encode_corpus,
    fixed_batches,
    shard,
    temperature_probs,
)
from lslo.data.corpus import MultiwayCorpus
from lslo.errors import LsloError

PAD, EOS = 1, 2
LANG_IDS = {"en": 900, "fr": 901, "sw": 902}


class CharTokenizer:
    """One token per character (id = 10 + code point mod 500): enough to test the batching."""

    pad_token_id, eos_token_id, unk_token = PAD, EOS, "<unk>"

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[10 + ord(c) % 500 for c in t] for t in texts]}

    def get_vocab(self):
        return {"<pad>": PAD, "</s>": EOS}


def make_corpus(seed: int = 0, n: int = 60) -> MultiwayCorpus:
    """en holds every id, fr 3/4 of them, sw 1/6: directions of very different sizes."""
    rng = random.Random(seed)
    sents, ids = {"en": [], "fr": [], "sw": []}, {"en": [], "fr": [], "sw": []}
    for i in range(n):
        length = rng.randint(1, 30)
        for lang, keep in (("en", True), ("fr", i % 4 != 0), ("sw", i % 6 == 0)):
            if keep:
                sents[lang].append(f"{lang[0]}{i}:" + "x" * (length + (lang == "fr")))
                ids[lang].append(f"v.{i}")
    return MultiwayCorpus(sents, ids)


@pytest.fixture(scope="module")
def enc():
    return encode_corpus(make_corpus(), CharTokenizer())


def sampler(enc, **kw) -> BatchSampler:
    args = dict(max_tokens=120, max_len=24, temperature=5.0, seed=7)
    args.update(kw)
    return BatchSampler(enc, directions(enc), LANG_IDS, PAD, EOS, **args)


def decode(row: torch.Tensor) -> str:
    return "".join(chr(int(t) - 10) for t in row)  # ASCII test text: code point < 500


def test_directions_pair_sentences_on_shared_ids(enc):
    dirs = {(d.src, d.tgt): d for d in directions(enc)}
    assert set(dirs) == {(a, b) for a in LANG_IDS for b in LANG_IDS if a != b}
    assert len(dirs["en", "fr"]) == 45 and len(dirs["en", "sw"]) == 10 and len(dirs["fr", "sw"]) == 5
    for d in dirs.values():
        assert [enc.ids[d.src][i] for i in d.src_idx] == [enc.ids[d.tgt][i] for i in d.tgt_idx]
    only = directions(enc, pairs=[("sw", "en")])
    assert [(d.src, d.tgt) for d in only] == [("sw", "en")]
    with pytest.raises(LsloError, match="'de' is not in the data"):
        directions(enc, ["en", "de"])


def test_temperature_probabilities():
    assert np.allclose(temperature_probs([300, 100], 1.0), [0.75, 0.25])
    assert np.allclose(temperature_probs([400, 100], 2.0), [20 / 30, 10 / 30])
    assert np.allclose(temperature_probs([10**6, 1], 1e9), [0.5, 0.5])
    with pytest.raises(LsloError, match="temperature"):
        temperature_probs([1, 2], 0)


def test_epoch_draws_each_direction_by_its_probability(enc):
    s = sampler(enc)
    sizes = np.array([len(d) for d in s.dirs])
    expected = np.maximum(1, np.rint(sizes.sum() * temperature_probs(sizes, 5.0))).astype(int)
    drawn = Counter(int(d) for batch in s.plan(0) for d, _ in batch)
    assert [drawn[i] for i in range(len(s.dirs))] == expected.tolist()
    # The smallest direction is up-sampled: every one of its examples appears, some more than once.
    small = int(np.argmin(sizes))
    picks = Counter(int(i) for batch in s.plan(0) for d, i in batch if d == small)
    assert set(picks) == set(range(sizes[small])) and drawn[small] > sizes[small]


def test_batches_respect_max_tokens_and_the_m2m100_layout(enc):
    s = sampler(enc)
    mixed = 0
    for _ in range(s.batches_per_epoch(0)):
        b = s.next_batch()
        n, width_src = b.input_ids.shape
        assert n * max(width_src, b.labels.shape[1]) <= s.max_tokens
        mixed += len(set(zip(b.src_lang, b.tgt_lang, strict=True))) > 1
        for i in range(n):
            src_len = int(b.attention_mask[i].sum())
            src = b.input_ids[i, :src_len]
            assert src[0] == LANG_IDS[b.src_lang[i]] and src[-1] == EOS
            assert (b.input_ids[i, src_len:] == PAD).all() and (b.attention_mask[i, :src_len] == 1).all()
            tgt_len = int((b.labels[i] != IGNORE_INDEX).sum())
            labels = b.labels[i, :tgt_len]
            assert labels[0] == LANG_IDS[b.tgt_lang[i]] and labels[-1] == EOS
            assert (b.labels[i, tgt_len:] == IGNORE_INDEX).all()
            assert b.decoder_input_ids[i, 0] == EOS
            assert torch.equal(b.decoder_input_ids[i, 1:tgt_len], labels[:-1])
            assert (b.decoder_input_ids[i, tgt_len:] == PAD).all()
            src_text, tgt_text = decode(src[1:-1]), decode(labels[1:-1])
            assert src_text[0] == b.src_lang[i][0] and tgt_text[0] == b.tgt_lang[i][0]
            assert src_text.split(":")[0][1:] == tgt_text.split(":")[0][1:]  # the same verse on both sides
    assert mixed > 0  # directions share batches
    assert s.state_dict() == {"epoch": 1, "index": 0, "seed": 7}


def test_truncation_keeps_language_token_and_eos():
    b = collate([("en", "fr", list(range(10, 60)), [11, 12])], LANG_IDS, PAD, EOS, max_len=8)
    assert b.input_ids.tolist() == [[900, 10, 11, 12, 13, 14, 15, EOS]]
    assert b.labels.tolist() == [[901, 11, 12, EOS]] and b.decoder_input_ids.tolist() == [[EOS, 901, 11, 12]]
    assert b.num_tokens == 4


def test_sampler_is_deterministic_and_resumes_exactly(enc):
    def stream(s, k):
        return [
            (b.input_ids.tolist(), b.labels.tolist(), b.src_lang, b.tgt_lang)
            for b in (s.next_batch() for _ in range(k))
        ]

    a, b = sampler(enc), sampler(enc)
    n = a.batches_per_epoch(0)
    assert stream(a, 2 * n + 3) == stream(b, 2 * n + 3)
    assert stream(sampler(enc), n) != stream(sampler(enc, seed=8), n)
    fresh = sampler(enc)
    assert stream(fresh, n) != stream(fresh, fresh.batches_per_epoch(1))  # each epoch is drawn anew

    first = sampler(enc)
    stream(first, n + 2)  # stop in the middle of the second epoch
    state = first.state_dict()
    rest = stream(first, n)
    resumed = sampler(enc)
    resumed.load_state_dict(state)
    assert stream(resumed, n) == rest
    with pytest.raises(LsloError, match="seed"):
        sampler(enc, seed=1).load_state_dict(state)


def test_shards_partition_a_batch(enc):
    s = sampler(enc)
    batch = max((s.next_batch() for _ in range(s.batches_per_epoch(0))), key=len)
    parts = [shard(batch, r, 3) for r in range(3)]
    assert sum(len(p) for p in parts) == len(batch) and sum(p.num_tokens for p in parts) == batch.num_tokens
    for r, p in enumerate(parts):
        rows = list(range(r, len(batch), 3))
        assert p.src_lang == [batch.src_lang[i] for i in rows]
        w = p.input_ids.shape[1]
        assert torch.equal(p.input_ids, batch.input_ids[rows, :w])
        assert (batch.attention_mask[rows, w:] == 0).all()  # only padding was dropped
        assert int(p.attention_mask.sum(1).max()) == w


def test_fixed_batches_cover_each_example_once(enc):
    dirs = directions(enc)
    batches = fixed_batches(enc, dirs, LANG_IDS, PAD, EOS, max_tokens=100, max_len=24)
    assert sum(len(b) for b in batches) == sum(len(d) for d in dirs)
    assert all(len(b) * max(b.input_ids.shape[1], b.labels.shape[1]) <= 100 for b in batches)
    capped = fixed_batches(enc, dirs, LANG_IDS, PAD, EOS, max_tokens=100, max_len=24, max_per_direction=2)
    assert sum(len(b) for b in capped) == 2 * len(dirs)


def test_encoding_cache_is_reused_and_keyed_by_content(tmp_path):
    corpus = make_corpus()
    first = encode_corpus(corpus, CharTokenizer(), cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    again = encode_corpus(corpus, CharTokenizer(), cache_dir=tmp_path)
    for lang in corpus.languages:
        assert np.array_equal(first.flat[lang], again.flat[lang]) and first.ids[lang] == again.ids[lang]
        assert first.tokens(lang, 3).tolist() == CharTokenizer()([corpus.sentences(lang)[3]])["input_ids"][0]
    encode_corpus(make_corpus(seed=1), CharTokenizer(), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2 and not list(tmp_path.glob(".*"))


def test_bad_sampler_settings(enc):
    with pytest.raises(LsloError, match="max_tokens"):
        sampler(enc, max_tokens=10, max_len=24)
    with pytest.raises(LsloError, match="language token for 'sw'"):
        BatchSampler(enc, directions(enc), {"en": 1, "fr": 2}, PAD, EOS)
