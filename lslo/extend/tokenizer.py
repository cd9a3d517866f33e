"""Extend an M2M-100 or NLLB tokenizer (transformers 5) with new languages; existing ids never move.

`extend_tokenizer(tok, new_texts, old_texts, base_rows)`:

1. trains a SentencePiece model on each new language's training text (the base's model type and normalizer);
2. appends the pieces the base lacks, each with a new id after the base model's embedding rows (`base_rows`,
   the first id no base row owns: existing ids are never moved or reused), and checks every old-language line
   of the run's data: a piece that changes how any of them is segmented is dropped (with, for BPE, the merges
   built on it), until no old line changes (the report counts the changed lines before and after: after is 0);
3. gives each new language its token: the existing one where the tokenizer has it (M2M-100's `__es__`, NLLB's
   `spa_Latn`: an existing but untrained token), else a new one (`__xx__` for M2M-100, the code itself for
   NLLB, e.g. `tyv_Cyrl`) with a new id.

The extension is a record (`TokenizerExtension`) applied to an untouched base tokenizer: the folder of a model
with added languages holds the base tokenizer's own files plus `lslo_tokenizer_extension.json`, and
`lslo.tokenizer.load_tokenizer` applies it, so a plain `AutoTokenizer` still loads the base unchanged.
Kinds: `M2M100Tokenizer` (SentencePiece, pieces appended to its model proto) and a tokenizers-backed BPE
tokenizer (`NllbTokenizer`: pieces and merges appended to `tokenizer.json`'s model). Anything else is an error.
"""

from __future__ import annotations

import copy
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lslo.errors import LsloError

EXTENSION_FILE = "lslo_tokenizer_extension.json"
KINDS = ("sentencepiece", "bpe")
MAX_UNK_SHARE = 0.5


@dataclass
class TokenizerExtension:
    """What was added to a base tokenizer, in order. New id k (from `base_rows`) is row k of the new rows.

    pieces: {"piece", "score", "id", "stage", "pair" (BPE: the merge that makes it, or None)}.
    languages: {"code", "token", "id", "new" (a new token, else the base's), "stage", "related"}.
    Stage s = the s-th `extend_tokenizer` call; a language sees the pieces of its own and earlier stages.
    """

    kind: str
    base_rows: int
    pieces: list[dict[str, Any]] = field(default_factory=list)
    languages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stages(self) -> int:
        return max((x["stage"] for x in self.pieces + self.languages), default=0)

    def new_ids(self) -> list[tuple[int, int]]:
        """(id, stage) of every id the extension adds, in id order (pieces and new language tokens)."""
        items = [(p["id"], p["stage"]) for p in self.pieces] + [(x["id"], x["stage"]) for x in self.languages if x["new"]]
        return sorted(items)

    @property
    def rows(self) -> int:
        """Embedding rows a model needs: the base's and one per new id."""
        return self.base_rows + len(self.new_ids())

    def language(self, code: str) -> dict[str, Any] | None:
        """The added language named `code` (as written or as another spelling of the same language)."""
        from lslo.languages import same_language

        for entry in self.languages:
            if entry["code"] == code or entry["code"].lower() == str(code).lower() or same_language(entry["code"], code):
                return entry
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"format": "lslo-tokenizer-extension", "version": 1, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenizerExtension:
        return cls(kind=data["kind"], base_rows=int(data["base_rows"]), pieces=list(data["pieces"]),
                   languages=list(data["languages"]))  # fmt: skip


# -- kinds ------------------------------------------------------------------------------------------


def tokenizer_kind(tokenizer: Any) -> str:
    """"sentencepiece" (M2M100Tokenizer) or "bpe" (a tokenizers-backed BPE tokenizer such as NllbTokenizer)."""
    if hasattr(tokenizer, "sp_model") and hasattr(tokenizer, "encoder") and hasattr(tokenizer, "lang_token_to_id"):
        return "sentencepiece"
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        model = json.loads(backend.to_str()).get("model", {})
        if model.get("type") == "BPE" and isinstance(model.get("vocab"), dict):
            return "bpe"
    raise LsloError(
        f"tokenizer {type(tokenizer).__name__} cannot be extended with new languages; use an M2M-100 tokenizer "
        "(M2M100Tokenizer) or an NLLB tokenizer (NllbTokenizer)"
    )


def base_of(tokenizer: Any) -> Any:
    """The untouched base tokenizer under an extended one (the tokenizer itself when it is not extended)."""
    return getattr(tokenizer, "lslo_base", None) or tokenizer


def extension_of(tokenizer: Any) -> TokenizerExtension | None:
    return getattr(tokenizer, "lslo_extension", None)


def _proto(base: Any) -> Any:
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(base.sp_model.serialized_model_proto())
    return proto


def apply_extension(base: Any, ext: TokenizerExtension) -> Any:
    """A copy of `base` that segments with the extension's pieces and knows its language tokens."""
    if tokenizer_kind(base) != ext.kind:
        raise LsloError(f"tokenizer extension of kind {ext.kind!r} does not fit a {type(base).__name__}; load the base it was made for")
    tok = copy.deepcopy(base)
    if ext.kind == "sentencepiece":
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2 as pb

        proto = _proto(base)
        for p in ext.pieces:
            item = proto.pieces.add()
            item.piece, item.score, item.type = p["piece"], float(p["score"]), pb.ModelProto.SentencePiece.NORMAL
        tok.sp_model = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        tok.encoder = dict(base.encoder)
        tok.decoder = dict(base.decoder)
        tok.lang_token_to_id = dict(base.lang_token_to_id)
        tok.id_to_lang_token = dict(base.id_to_lang_token)
        for p in ext.pieces:
            tok.encoder[p["piece"]] = p["id"]
            tok.decoder[p["id"]] = p["piece"]
        for lang in ext.languages:
            if lang["new"]:
                tok.lang_token_to_id[lang["token"]] = lang["id"]
                tok.id_to_lang_token[lang["id"]] = lang["token"]
    else:
        from tokenizers import Tokenizer

        data = json.loads(base._tokenizer.to_str())
        vocab, merges = data["model"]["vocab"], data["model"]["merges"]
        # tokenizers numbers an added token that the model's vocabulary lacks after that vocabulary: appending
        # pieces would move every language token. In the vocabulary (unreachable by merges) they keep their ids.
        for added in data["added_tokens"]:
            vocab.setdefault(added["content"], added["id"])
        for p in ext.pieces:
            vocab[p["piece"]] = p["id"]
            if p["pair"]:
                merges.append(list(p["pair"]) if merges and isinstance(merges[0], list) else " ".join(p["pair"]))
        for lang in ext.languages:
            if lang["new"]:
                data["added_tokens"].append({"id": lang["id"], "content": lang["token"], "single_word": False, "lstrip": False,
                                             "rstrip": False, "normalized": False, "special": True})  # fmt: skip
                vocab[lang["token"]] = lang["id"]
        tok._tokenizer = Tokenizer.from_str(json.dumps(data, ensure_ascii=False))
        moved = [a["content"] for a in data["added_tokens"] if tok._tokenizer.token_to_id(a["content"]) != a["id"]]
        if moved:
            raise LsloError(f"tokenizer {type(base).__name__}: token {moved[0]!r} would change its id; this tokenizer cannot be extended")
    tok.lslo_base = base
    tok.lslo_extension = ext
    return tok


def upto_stage(tokenizer: Any, stage: int) -> Any:
    """The tokenizer as it was after `stage` extensions (0: the base)."""
    ext = extension_of(tokenizer)
    if ext is None or stage >= ext.stages:
        return tokenizer
    if stage <= 0:
        return base_of(tokenizer)
    sub = TokenizerExtension(ext.kind, ext.base_rows, [p for p in ext.pieces if p["stage"] <= stage],
                             [x for x in ext.languages if x["stage"] <= stage])  # fmt: skip
    return apply_extension(base_of(tokenizer), sub)


# -- helpers ----------------------------------------------------------------------------------------


def segment(tokenizer: Any, lines: Sequence[str]) -> list[list[int]]:
    """Piece ids of each line (no special tokens)."""
    return tokenizer(list(lines), add_special_tokens=False)["input_ids"] if lines else []


def tokens_per_word(tokenizer: Any, lines: Sequence[str]) -> float:
    words = sum(len(line.split()) for line in lines)
    return sum(len(ids) for ids in segment(tokenizer, lines)) / max(words, 1)


def unk_share(tokenizer: Any, lines: Sequence[str]) -> float:
    """Share of `<unk>` among the pieces of `lines`, not counting a bare word boundary `▁` (which an unknown word
    written in an unknown script is split off as)."""
    space = tokenizer.convert_tokens_to_ids("\u2581")
    ids = [i for row in segment(tokenizer, lines) for i in row if i != space or space == tokenizer.unk_token_id]
    return sum(i == tokenizer.unk_token_id for i in ids) / max(len(ids), 1)


def _known_pieces(tok: Any, kind: str) -> set[str]:
    if kind == "sentencepiece":
        proto = tok.sp_model
        return set(tok.encoder) | {proto.id_to_piece(i) for i in range(proto.get_piece_size())}
    return set(json.loads(tok._tokenizer.to_str())["model"]["vocab"])


def _train_pieces(lines: Sequence[str], kind: str, base: Any, vocab_size: int, seed: int) -> list[tuple[str, float]]:
    """(piece, score) of a SentencePiece model trained on `lines`, best first, without control/unknown/byte pieces."""
    import sentencepiece as spm

    if kind == "sentencepiece":
        spec = _proto(base)
        model_type = {1: "unigram", 2: "bpe"}.get(spec.trainer_spec.model_type, "unigram")
        rule = spec.normalizer_spec.name or "identity"
    else:
        model_type, rule = "bpe", "nmt_nfkc"
    text = [line.strip() for line in lines if line.strip()]
    proto = io.BytesIO()
    spm.set_random_generator_seed(seed)
    for size in (vocab_size, max(8, vocab_size // 4), max(8, len(set("".join(text))) + 4)):
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(text), model_writer=proto, vocab_size=size, model_type=model_type,
                character_coverage=1.0, normalization_rule_name=rule, byte_fallback=False, unk_id=0, bos_id=-1,
                eos_id=-1, pad_id=-1, hard_vocab_limit=False, input_sentence_size=0, shuffle_input_sentence=False,
                num_threads=1, minloglevel=2,
            )  # fmt: skip
            break
        except RuntimeError as err:
            last = str(err).strip().splitlines()[-1]
            proto = io.BytesIO()
    else:
        raise LsloError(f"new language: SentencePiece training failed ({last}); give more training text")
    sp = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    out = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())
           if not (sp.is_unknown(i) or sp.is_control(i) or sp.is_byte(i))]  # fmt: skip
    return out


def _bpe_candidates(pieces: Sequence[tuple[str, float]], known: set[str]) -> list[tuple[str, float, tuple[str, str] | None]]:
    """New BPE pieces with the merge that makes each from pieces known by then (single characters need none)."""
    have = set(known)
    out: list[tuple[str, float, tuple[str, str] | None]] = []
    for piece, score in pieces:  # SentencePiece's BPE pieces come in merge order
        for ch in piece:
            if ch not in have:
                have.add(ch)
                out.append((ch, 0.0, None))
        if piece in have:
            continue
        pair = next(((piece[:i], piece[i:]) for i in range(1, len(piece)) if piece[:i] in have and piece[i:] in have), None)
        if pair is not None:
            have.add(piece)
            out.append((piece, score, pair))
    return out


# -- the extension ----------------------------------------------------------------------------------


def _style(tokenizer: Any) -> str:
    from lslo.languages import detect_style

    return detect_style(base_of(tokenizer))


def language_token(tokenizer: Any, code: str) -> tuple[str, int | None]:
    """(token, its id or None when it must be added) of new language `code` in `tokenizer`."""
    from lslo.languages import _token_id, lang_token, lookup

    style = _style(tokenizer)
    if lookup(code) is not None:
        try:
            token = lang_token(code, style)
        except LsloError:
            token = None
        if token is not None and (tid := _token_id(tokenizer, token)) is not None:
            return token, tid
    return (f"__{code}__" if style == "m2m100" else code), None


def check_new_codes(new_codes: Sequence[str], existing: Sequence[str], tokenizer: Any) -> None:
    """One-line errors for new codes that collide with a model language, each other or a token of the vocabulary."""
    from lslo.languages import same_language

    ext = extension_of(tokenizer)
    taken = list(existing) + [x["code"] for x in (ext.languages if ext else [])]
    seen: list[str] = []
    for code in new_codes:
        if not isinstance(code, str) or not code.strip() or any(c.isspace() for c in code):
            raise LsloError(f"new_languages: code {code!r} is not a language code; use e.g. tyv_Cyrl")
        for other in taken + seen:
            if code.lower() == other.lower() or same_language(code, other):
                where = "is already added" if other in seen else f"collides with the model's language {other!r}"
                raise LsloError(f"new_languages: {code!r} {where}; pick a code no language of the model uses")
        token, tid = language_token(tokenizer, code)
        vocab = tokenizer.get_vocab()
        if tid is None and token in vocab:
            raise LsloError(f"new_languages: {code!r} would get token {token!r}, which the vocabulary already has as a "
                            "piece; pick another code")  # fmt: skip
        seen.append(code)


def extend_tokenizer(
    tokenizer: Any,
    new_texts: Mapping[str, Sequence[str]],
    old_texts: Mapping[str, Sequence[str]],
    base_rows: int,
    existing: Sequence[str] = (),
    related: Mapping[str, str] | None = None,
    vocab_size: int = 8000,
    seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """The tokenizer extended with `new_texts`' languages, and a report (see the module docstring).

    `old_texts`: every old language's text in the run's data (its segmentation is checked); `base_rows`: the
    base model's embedding rows; `existing`: the model's languages (codes that collide with them are errors);
    `related`: new code -> an existing language whose token row starts the new token's row.
    """
    kind = tokenizer_kind(base_of(tokenizer))
    check_new_codes(list(new_texts), existing, tokenizer)
    for code, lines in new_texts.items():
        if not any(line.strip() for line in lines):
            raise LsloError(f"new_languages: {code!r} has no training text; give its data (train split) or drop it")
    base = base_of(tokenizer)
    old = extension_of(tokenizer)
    ext = copy.deepcopy(old) if old is not None else TokenizerExtension(kind=kind, base_rows=int(base_rows))
    if old is None and int(base_rows) < max(base.get_vocab().values()) + 1:
        raise LsloError(f"extend_tokenizer: base_rows={base_rows} is below the tokenizer's largest id; give the model's vocab_size")
    stage = ext.stages + 1
    old_lines = sorted({line for lines in old_texts.values() for line in lines if line.strip()})
    candidates, trained = _candidates(tokenizer, kind, base, new_texts, vocab_size, seed)
    keep, changed_first = _drop_until_unchanged(tokenizer, base, ext, stage, candidates, old_lines)
    next_id = ext.rows
    for p, s, pair in keep:
        ext.pieces.append({"piece": p, "score": s, "id": next_id, "stage": stage, "pair": list(pair) if pair else None})
        next_id += 1
    _add_language_tokens(tokenizer, ext, list(new_texts), stage, related or {}, next_id)
    extended = apply_extension(base, ext)
    report: dict[str, Any] = {"stage": stage, "languages": {c: {"pieces_trained": n} for c, n in trained.items()}}
    for code, lines in new_texts.items():
        share = unk_share(extended, lines)
        if share > MAX_UNK_SHARE:
            raise LsloError(
                f"new_languages: {share:.0%} of {code!r}'s pieces are <unk> even after extension (its characters clash "
                "with old-language text the extension may not change); check its data's script and encoding"
            )
        entry = extension_of(extended).language(code)
        report["languages"][code].update(
            token=entry["token"], token_id=entry["id"], new_token=entry["new"], unk_share=share,
            tokens_per_word_before=tokens_per_word(tokenizer, lines), tokens_per_word_after=tokens_per_word(extended, lines),
        )  # fmt: skip
    report.update(
        kind=kind, pieces_candidate=len(candidates), pieces_added=len(keep), pieces_dropped=len(candidates) - len(keep),
        old_lines_checked=len(old_lines), old_lines_changed_before_dropping=changed_first,
        old_lines_changed=sum(a != b for a, b in zip(segment(tokenizer, old_lines), segment(extended, old_lines), strict=True)),
        rows=ext.rows, base_rows=ext.base_rows,
    )  # fmt: skip
    return extended, report


Candidate = tuple[str, float, "tuple[str, str] | None"]


def _add_language_tokens(tokenizer: Any, ext: TokenizerExtension, codes: Sequence[str], stage: int,
                         related: Mapping[str, str], next_id: int) -> None:  # fmt: skip
    """Record each new language's token in `ext`: its existing one, else a new one numbered from `next_id`."""
    for code in codes:
        token, tid = language_token(tokenizer, code)
        ext.languages.append({"code": code, "token": token, "id": tid if tid is not None else next_id, "new": tid is None,
                              "stage": stage, "related": related.get(code)})  # fmt: skip
        next_id += tid is None


def _candidates(tokenizer: Any, kind: str, base: Any, new_texts: Mapping[str, Sequence[str]], vocab_size: int,
                seed: int) -> tuple[list[Candidate], dict[str, int]]:  # fmt: skip
    """The pieces (with their BPE merge) a SentencePiece model per new language has and the tokenizer lacks, in
    order, without duplicates; and how many pieces each language's model has."""
    known = _known_pieces(tokenizer, kind)
    candidates: list[Candidate] = []
    trained_count: dict[str, int] = {}
    for code in new_texts:
        trained = _train_pieces(new_texts[code], kind, base, vocab_size, seed)
        have = {c[0] for c in candidates}
        fresh = [(p, s) for p, s in trained if p not in known and p not in have]
        candidates += _bpe_candidates(fresh, known | have) if kind == "bpe" else [(p, s, None) for p, s in fresh]
        trained_count[code] = len(trained)
    return candidates, trained_count


def _drop_until_unchanged(tokenizer: Any, base: Any, ext: TokenizerExtension, stage: int,
                          candidates: Sequence[Candidate], old_lines: Sequence[str]) -> tuple[list[Candidate], int]:  # fmt: skip
    """The candidates left once every piece that changes an old line's segmentation is dropped (with what builds
    on it), and how many old lines the full candidate set changed."""
    before = segment(tokenizer, old_lines)
    dropped: set[str] = set()
    changed_first: int | None = None
    while True:
        keep = _closure(candidates, dropped)
        trial = copy.deepcopy(ext)
        trial.pieces += [{"piece": p, "score": s, "id": ext.rows + k, "stage": stage, "pair": list(pair) if pair else None}
                         for k, (p, s, pair) in enumerate(keep)]  # fmt: skip
        after = segment(apply_extension(base, trial), old_lines)
        changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
        changed_first = len(changed) if changed_first is None else changed_first
        if not changed:
            return keep, changed_first
        new_ids = {p["id"]: p["piece"] for p in trial.pieces[len(ext.pieces) :]}
        culprits = {new_ids[i] for k in changed for i in after[k] if i in new_ids}
        if not culprits:  # cannot happen with these kinds; never return a tokenizer that changes old text
            raise LsloError("extend_tokenizer: old-language segmentation changed without a new piece; report this bug")
        dropped |= culprits


def _closure(candidates: Sequence[tuple[str, float, tuple[str, str] | None]], dropped: set[str]) -> list[tuple[str, float, tuple[str, str] | None]]:
    """The candidates left when `dropped` go, with (BPE) every piece whose merge uses a piece that went."""
    gone = set(dropped)
    keep = []
    for piece, score, pair in candidates:
        if piece in gone or (pair is not None and (pair[0] in gone or pair[1] in gone)):
            gone.add(piece)
            continue
        keep.append((piece, score, pair))
    return keep


# -- save / load ------------------------------------------------------------------------------------


def save_extension(tokenizer: Any, folder: str | os.PathLike) -> None:
    """Write the extension record of an extended tokenizer into `folder` (next to the base's own files)."""
    ext = extension_of(tokenizer)
    if ext is not None:
        (Path(folder) / EXTENSION_FILE).write_text(json.dumps(ext.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def load_extension(tokenizer: Any, folder: str | os.PathLike) -> Any:
    """`tokenizer` with the extension saved in `folder` applied (unchanged when the folder has none)."""
    path = Path(folder) / EXTENSION_FILE
    if not path.is_file():
        return tokenizer
    try:
        ext = TokenizerExtension.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise LsloError(f"{path}: not a valid tokenizer extension ({err}); re-save the model with lslo") from None
    from lslo.languages import register_language

    for lang in ext.languages:  # its codes (e.g. tyv_Cyrl) are known wherever this tokenizer is used
        register_language(lang["code"])
    return apply_extension(tokenizer, ext)
