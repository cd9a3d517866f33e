"""Deployment: one direction of a model as a CTranslate2 model (`lslo export RUN --merge SRC-TGT --format ctranslate2`).

The folder holds CTranslate2's converted weights (`model.bin`, `config.json`, `shared_vocabulary.json`), the
tokenizer, and `lslo_ct2.json` naming the direction. `load_ctranslate2` gives a `CT2Model` that `lslo translate`
and `lslo eval` use like any other model (its own direction only); the weights are stored in float32 and the
compute type (int8, float32, ...) is chosen when loading. CTranslate2 is the optional extra `deploy`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lslo.errors import LsloError

CT2_META = "lslo_ct2.json"
INSTALL = "install it with: pip install 'lslo[deploy]' (CTranslate2)"


def _ctranslate2() -> Any:
    try:
        import ctranslate2
    except ImportError:
        raise LsloError(f"CTranslate2 is not installed; {INSTALL}") from None
    return ctranslate2


def export_ctranslate2(
    merged: Any, tokenizer: Any, out: str | os.PathLike, src: str, tgt: str, meta: dict[str, Any] | None = None
) -> Path:
    """Convert a plain transformers model (`merged`, one direction) into a CTranslate2 folder `out`, atomically."""
    from lslo.io import atomic_dir, write_json
    from lslo.tokenizer import save_tokenizer

    ext = getattr(tokenizer, "lslo_extension", None)  # languages added to the base (lslo.extend)
    added = ext is not None and merged.config.vocab_size > ext.base_rows
    suppress = list(getattr(merged.generation_config, "suppress_tokens", None) or [])  # an old target: no added row
    ct2 = _ctranslate2()
    with tempfile.TemporaryDirectory() as scratch, atomic_dir(out) as tmp:
        hf_dir = Path(scratch) / "hf"
        merged.save_pretrained(hf_dir)
        save_tokenizer(tokenizer, hf_dir)
        _fit_madeup_words(tokenizer, ext.base_rows if added else merged.config.vocab_size, hf_dir)
        with _added_rows_vocabulary(ct2, tokenizer, ext) if added else contextlib.nullcontext():
            ct2.converters.TransformersConverter(str(hf_dir)).convert(str(tmp), quantization=None, force=True)
        save_tokenizer(tokenizer, tmp)
        write_json(tmp / CT2_META, {"format": "lslo-ctranslate2", "src": src, "tgt": tgt, "ctranslate2": ct2.__version__,
                                    "suppress": tokenizer.convert_ids_to_tokens(suppress), **(meta or {})})  # fmt: skip
    return Path(out)


@contextlib.contextmanager
def _added_rows_vocabulary(ct2: Any, tokenizer: Any, ext: Any) -> Iterator[None]:
    """While converting: CTranslate2's M2M-100 vocabulary (built from the base tokenizer on disk) takes the rows of
    the languages added to the base (`lslo.extend`), in id order, after the base's own `ext.base_rows` rows."""
    loader = ct2.converters.transformers.M2M100Loader
    original = loader.get_vocabulary
    added = tokenizer.convert_ids_to_tokens(list(range(ext.base_rows, ext.rows)))

    def get_vocabulary(self: Any, model: Any, tok: Any) -> list[str]:
        tokens = list(original(self, model, tok))[: ext.base_rows]
        tokens += [f"madeupword{i}" for i in range(len(tokens), ext.base_rows)]  # spare rows of the base
        tokens += added
        if len(set(tokens)) != len(tokens):
            raise LsloError("--format ctranslate2: an added token repeats a base token; export with --merge alone")
        return tokens

    loader.get_vocabulary = get_vocabulary
    try:
        yield
    finally:
        loader.get_vocabulary = original


def _fit_madeup_words(tokenizer: Any, vocab_size: int, folder: Path) -> None:
    """M2M-100 tokenizers pad their vocabulary with `num_madeup_words` (8) placeholder tokens, which CTranslate2's
    converter appends; a model whose embedding has fewer spare rows (lslo's own bases) needs that many only."""
    if getattr(tokenizer, "num_madeup_words", None) is None:
        return
    tokens = set(tokenizer.get_vocab()) | set(tokenizer.special_tokens_map.get("additional_special_tokens", []))
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["num_madeup_words"] = max(0, vocab_size - len(tokens))
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


def is_ctranslate2(folder: str | os.PathLike) -> bool:
    return (Path(folder) / CT2_META).is_file()


class CT2Model:
    """A CTranslate2 translator of one direction behind the interface `lslo.evaluate` uses."""

    training = False
    mergeable = False

    def __init__(self, folder: str | os.PathLike, compute_type: str = "default", threads: int = 0) -> None:
        ct2 = _ctranslate2()
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / CT2_META).read_text(encoding="utf-8"))
        self.src, self.tgt = self.meta["src"], self.meta["tgt"]
        self.languages = [self.src, self.tgt]
        vocabulary = self.folder / "shared_vocabulary.json"  # token -> row, as the converter wrote it
        self.rows = ({t: i for i, t in enumerate(json.loads(vocabulary.read_text(encoding="utf-8")))}
                     if vocabulary.is_file() else None)  # fmt: skip
        try:
            self.translator = ct2.Translator(str(self.folder), device="cpu", compute_type=compute_type,
                                             inter_threads=1, intra_threads=threads)  # fmt: skip
        except (RuntimeError, ValueError) as err:
            raise LsloError(f"{self.folder}: cannot load the CTranslate2 model ({str(err).splitlines()[0]})") from None

    def eval(self) -> CT2Model:
        return self

    def train(self, mode: bool = True) -> CT2Model:
        return self

    def translate_items(
        self, tokenizer: Any, items: Sequence[tuple[str, str, str]], num_beams: int = 5, max_tokens: int = 4096,
        max_new_tokens: int = 256, max_source_tokens: int = 256,
    ) -> list[str]:
        """`(src, tgt, text)` items of this model's direction, translated in input order (see `translate_items`)."""
        from lslo.encoding import decode_hypotheses, source_ids
        from lslo.languages import lang_token_ids, same_language
        from lslo.scoring import _clean

        for src, tgt, _ in items:
            if not (same_language(src, self.src) and same_language(tgt, self.tgt)):
                raise LsloError(
                    f"{self.folder}: a CTranslate2 export translates {self.src}->{self.tgt} only, not {src}->{tgt}; "
                    f"give --directions {self.src}-{self.tgt} (or --src {self.src} --tgt {self.tgt})"
                )
        if not items:
            return []
        ids = source_ids(tokenizer, [text for _, _, text in items], self.src, max_source_tokens)
        sources = [tokenizer.convert_ids_to_tokens(row) for row in ids]
        prefix = tokenizer.convert_ids_to_tokens([lang_token_ids(tokenizer, [self.tgt])[self.tgt]])  # also an added code
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        out = [""] * len(items)
        start = 0
        while start < len(order):  # batches of <= max_tokens source tokens, as `translate_items` makes them
            width, end = len(sources[order[start]]), start
            while end < len(order) and (end - start + 1) * max(width, len(sources[order[end]])) <= max_tokens:
                width = max(width, len(sources[order[end]]))
                end += 1
            end = max(end, start + 1)
            batch = order[start:end]
            results = self.translator.translate_batch(
                [sources[i] for i in batch], target_prefix=[prefix] * len(batch), beam_size=num_beams,
                suppress_sequences=[[t] for t in self.meta.get("suppress", [])] or None,
                max_decoding_length=min(max_new_tokens, 2 * width + 10) + len(prefix), return_scores=False,
            )  # fmt: skip
            for i, result in zip(batch, results, strict=True):
                tokens = result.hypotheses[0][len(prefix):]
                ids = [self.rows[t] for t in tokens] if self.rows else tokenizer.convert_tokens_to_ids(tokens)
                out[i] = _clean(decode_hypotheses(tokenizer, [ids])[0])  # the rows transformers would decode
            start = end
        return out
