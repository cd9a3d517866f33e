"""Score and write: spBLEU and chrF++ of each direction, and every file of an evaluation folder.

    <out>/directions/<src>-<tgt>/{src,hyp,ref}.txt       plain text, one sentence per line
    <out>/directions/<src>-<tgt>/{hyp,ref}.pieces.txt    the same, SentencePiece pieces joined by spaces
    <out>/results.json  results.csv  tiers.md  heatmap.png

spBLEU is sacrebleu BLEU with `tokenize="none"` on the piece files: identical to sacrebleu's own
`tokenize="flores200"` (or `flores101`) when the piece model is that FLORES model, because sacrebleu's
SPM tokenizer is exactly `" ".join(EncodeAsPieces(line))`. Without a FLORES model (`spm=None`) the
pieces come from the model's own tokenizer and the metric is named so ("spBLEU[tok=... spm]").
`lslo.evaluate` translates and calls `write_results`; the tables and the heatmap are `lslo.report`'s.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sacrebleu.metrics import BLEU, CHRF
from tqdm.auto import tqdm

from lslo.errors import LsloError
from lslo.io import sha256_file, write_json, write_text

FORMAT = "lslo-eval/1"
BYTE_SHARE_LIMIT = 0.3  # above it, a target language's spBLEU is reported as byte-level (`byte_piece_warnings`)
CHRF_NAME = "chrF++"


# Every character that some reader takes for a line break (str.splitlines' set).
_BREAKS = str.maketrans({c: " " for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"})


def _clean(text: str) -> str:
    """One line of output: line-break characters become spaces, outer whitespace goes."""
    return text.translate(_BREAKS).strip()


# ----------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class PieceTokenizer:
    """Splits a line into SentencePiece pieces for spBLEU and says which model did it."""

    metric: str  # the name the score is reported under, e.g. "spBLEU(flores200 spm, sha256:0123abcd...)"
    info: dict  # kind ("flores" | "tokenizer"), name, path, sha256 (where known)
    encode: Callable[[str], list[str]]

    def __call__(self, line: str) -> str:
        return " ".join(self.encode(line))


def _flores_name(path: Path) -> str:
    """Which FLORES model a file is, by the names sacrebleu and FLORES give them; else the file's own name."""
    name = path.name.lower()
    if "flores200" in name:
        return "flores200"
    if "flores101" in name or name == "sacrebleu_tokenizer_spm.model":
        return "flores101"
    return path.name


def _load_spm(path: str | os.PathLike, flag: str) -> Any:
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.Load(str(path))
    except (OSError, RuntimeError) as e:
        raise LsloError(f"{flag}: {path} is not a SentencePiece model ({str(e).splitlines()[0]})") from None
    return sp


def piece_tokenizer(tokenizer: Any = None, spm: str | os.PathLike | None = None) -> PieceTokenizer:
    """The spBLEU piece tokenizer: the FLORES model at `spm`, else the model tokenizer's own pieces."""
    if spm is not None:
        path = Path(spm)
        if not path.is_file():
            raise LsloError(
                f"--spm: no such file {str(spm)!r}; give the FLORES-101 or FLORES-200 SentencePiece model "
                "(e.g. flores200_sacrebleu_tokenizer_spm.model) or leave --spm out"
            )
        sp, sha, name = _load_spm(path, "--spm"), sha256_file(path), _flores_name(path)
        info = {"kind": "flores", "name": name, "path": str(path.resolve()), "sha256": sha}
        return PieceTokenizer(
            f"spBLEU({name} spm, sha256:{sha[:16]})", info, lambda s: sp.encode(s, out_type=str)
        )
    if tokenizer is None:
        raise ValueError("piece_tokenizer needs a tokenizer or an spm path")
    model_name = Path(str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)).name
    metric = f"spBLEU[tok={model_name} spm]"
    info: dict[str, Any] = {"kind": "tokenizer", "name": model_name}
    sp_file = getattr(tokenizer, "spm_file", None) or getattr(tokenizer, "vocab_file", None)
    if sp_file and Path(sp_file).is_file() and str(sp_file).endswith(".model"):
        sp = _load_spm(sp_file, "tokenizer")
        info.update(path=str(Path(sp_file).resolve()), sha256=sha256_file(sp_file))
        return PieceTokenizer(metric, info, lambda s: sp.encode(s, out_type=str))
    return PieceTokenizer(metric, info, tokenizer.tokenize)


def _is_byte_piece(piece: str) -> bool:
    """A SentencePiece byte-fallback piece (`<0xE0>`): the piece model has no piece for that character."""
    return len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">")


def byte_piece_warnings(results: Mapping[str, Any], limit: float = BYTE_SHARE_LIMIT) -> list[str]:
    """One line per target language whose references the piece model mostly splits into bytes: its spBLEU is then
    a byte-level score, not comparable with word-piece spBLEU (chrF++ is unaffected)."""
    shares: dict[str, list[float]] = {}
    for row in results["directions"].values():
        shares.setdefault(row["tgt"], []).append(row.get("ref_byte_share", 0.0))
    name = results["metrics"]["spbleu"]["name"]
    return [
        f"spBLEU into {t}: {100 * max(v):.0f}% of its reference pieces are bytes under {name} (the piece model has no "
        f"pieces for its script), so its spBLEU is byte-level; give --spm a model that covers {t} (e.g. FLORES-200's)"
        for t, v in shares.items() if max(v) > limit
    ]  # fmt: skip


def score_direction(hyps: Sequence[str], refs: Sequence[str], pieces: PieceTokenizer) -> dict[str, Any]:
    """spBLEU and chrF++ of one direction, with the piece files' lines and sacrebleu signatures."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references")
    hyp_pieces, ref_pieces = [pieces(h) for h in hyps], [pieces(r) for r in refs]
    bleu, chrf = BLEU(tokenize="none"), CHRF(word_order=2)
    ref_split = [p for line in ref_pieces for p in line.split()]
    return {
        "n": len(hyps),
        "ref_byte_share": sum(map(_is_byte_piece, ref_split)) / max(1, len(ref_split)),
        "spbleu": bleu.corpus_score(hyp_pieces, [ref_pieces]).score,
        "chrf": chrf.corpus_score(list(hyps), [list(refs)]).score,
        "spbleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "hyp_pieces": hyp_pieces,
        "ref_pieces": ref_pieces,
    }



# ----------------------------------------------------------------------------- writing


def write_results(
    out_dir: str | os.PathLike,
    outputs: Mapping[tuple[str, str], tuple[Sequence[str], Sequence[str], Sequence[str]]],
    tiers: Mapping[str, str],
    pieces: PieceTokenizer,
    settings: Mapping[str, Any] | None = None,
    languages: Sequence[str] | None = None,
    progress: bool = False,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score `outputs[(src, tgt)] = (sources, hypotheses, references)` and write every file of `out_dir`.

    Returns the results.json content. `languages` orders the languages within a tier (default: as they
    first appear in `outputs`). Each file is written atomically; results.json is written last.
    """
    from lslo import report

    if not outputs:
        raise ValueError("write_results: no directions to write")
    out = Path(out_dir)
    rows = {f"{s}-{t}": _write_direction(out, (s, t), texts, tiers, pieces)
            for (s, t), texts in tqdm(outputs.items(), desc="score", unit="dir", disable=not progress)}  # fmt: skip
    seen = list(dict.fromkeys(code for direction in outputs for code in direction))
    order = report.order_by_tier([c for c in (languages or seen) if c in seen], tiers)
    results = _results(rows, order, tiers, pieces, settings, meta)
    report.write_tables(results, out)
    write_json(out / "results.json", results)
    return results


def _write_direction(out: Path, direction: tuple[str, str], texts: tuple[Sequence[str], Sequence[str], Sequence[str]],
                     tiers: Mapping[str, str], pieces: PieceTokenizer) -> dict[str, Any]:  # fmt: skip
    """Score one direction's (sources, hypotheses, references), write its text files under `out`/directions/,
    and return its row of results.json."""
    s, t = direction
    srcs, hyps, refs = texts
    hyps, refs = [_clean(h) for h in hyps], [_clean(r) for r in refs]
    scored = score_direction(hyps, refs, pieces)
    lines_of = {
        "src": [_clean(x) for x in srcs], "hyp": hyps, "ref": refs,
        "hyp_pieces": scored.pop("hyp_pieces"), "ref_pieces": scored.pop("ref_pieces"),
    }  # fmt: skip
    files = {key: f"directions/{s}-{t}/{key.replace('_', '.')}.txt" for key in lines_of}
    for key, lines in lines_of.items():
        write_text(out / files[key], "".join(line + "\n" for line in lines))
    return {"src": s, "tgt": t, "src_tier": tiers[s], "tgt_tier": tiers[t], **scored, "files": files}


def _results(rows: Mapping[str, Any], order: list[str], tiers: Mapping[str, str], pieces: PieceTokenizer,
             settings: Mapping[str, Any] | None, meta: Mapping[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """The results.json document: metrics and how to recompute them, settings, languages, rows, tier groups."""
    from lslo import report

    first = next(iter(rows.values()))
    results = {
        "format": FORMAT,
        "metrics": {
            "spbleu": {"name": pieces.metric, "pieces": pieces.info, "signature": first["spbleu_signature"]},
            "chrf": {"name": CHRF_NAME, "signature": first["chrf_signature"]},
        },
        "meta": dict(meta or {}),
        "settings": dict(settings or {}),
        "languages": order,
        "tiers": {lang: tiers[lang] for lang in order},
        "directions": rows,
        "groups": {m: report.tier_groups(rows, m) for m in report.METRICS},
        "recompute": {
            "spbleu": "sacrebleu {ref_pieces} -i {hyp_pieces} -m bleu --tokenize none -b -w 4",
            "chrf": "sacrebleu {ref} -i {hyp} -m chrf --chrf-word-order 2 -b -w 4",
        },
    }
    results["warnings"] = byte_piece_warnings(results)
    if pieces.info["kind"] == "flores" and pieces.info["name"] in ("flores101", "flores200"):
        results["recompute"]["spbleu_flores"] = (
            f"sacrebleu {{ref}} -i {{hyp}} -m bleu --tokenize {pieces.info['name']} -b -w 4"
            f"  (same score when sacrebleu's cached model is the file of sha256 {pieces.info['sha256']})"
        )
    return results


def rescore(eval_dir: str | os.PathLike, out_dir: str | os.PathLike, pieces: PieceTokenizer) -> dict[str, Any]:
    """Score an evaluation folder's hypotheses again with another piece model (no translating): `out_dir` gets
    every file `write_results` writes, its settings and meta those of `eval_dir`, its spBLEU under `pieces`."""
    src = Path(eval_dir)
    try:
        old = json.loads((src / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise LsloError(f"{src}: no readable results.json ({err}); give a folder `lslo eval` wrote") from None

    def lines(row: Mapping[str, Any], key: str) -> list[str]:
        return (src / row["files"][key]).read_text(encoding="utf-8").splitlines()

    outputs = {(r["src"], r["tgt"]): (lines(r, "src"), lines(r, "hyp"), lines(r, "ref")) for r in old["directions"].values()}
    return write_results(out_dir, outputs, old["tiers"], pieces, settings=old.get("settings"),
                         languages=old.get("languages"), meta=old.get("meta"))  # fmt: skip
