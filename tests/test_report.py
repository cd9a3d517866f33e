"""Tier-group averages, tables, run comparison and recomputation of written results."""

from __future__ import annotations

import csv
import json

import pytest
import sentencepiece as spm

from lslo.errors import LsloError
from lslo.report import GROUPS, compare_runs, load_results, order_by_tier, recompute, tier_groups, tier_table
from lslo.scoring import piece_tokenizer, rescore, score_direction, write_results

TIERS = {"en": "high", "fr": "high", "zh": "medium", "sw": "low"}
# spBLEU per direction, chosen so that every group mean is easy to check by hand.
VALUES = {
    "en-fr": 10, "fr-en": 20, "en-zh": 30, "zh-en": 40, "en-sw": 50, "sw-en": 60,
    "fr-zh": 1, "zh-fr": 2, "fr-sw": 3, "sw-fr": 4, "zh-sw": 5, "sw-zh": 6,
}  # fmt: skip
EXPECTED = {
    "H->H": (15.0, 2), "H->M": (15.5, 2), "H->L": (26.5, 2),
    "M->H": (21.0, 2), "M->M": (None, 0), "M->L": (5.0, 1),
    "L->H": (32.0, 2), "L->M": (6.0, 1), "L->L": (None, 0),
    "H->*": (114 / 6, 6), "M->*": (47 / 3, 3), "L->*": (70 / 3, 3),
    "*->H": (136 / 6, 6), "*->M": (37 / 3, 3), "*->L": (58 / 3, 3),
    "all": (231 / 12, 12),
}  # fmt: skip


def _rows(offset: float = 0.0) -> dict:
    rows = {}
    for key, value in VALUES.items():
        s, t = key.split("-")
        rows[key] = {"src": s, "tgt": t, "src_tier": TIERS[s], "tgt_tier": TIERS[t], "spbleu": value + offset,
                     "chrf": 2.0 * value}  # fmt: skip
    return rows


def _results(rows: dict, name: str = "spBLEU[tok=t spm]") -> dict:
    return {
        "metrics": {"spbleu": {"name": name}, "chrf": {"name": "chrF++"}},
        "directions": rows,
        "groups": {m: tier_groups(rows, m) for m in ("spbleu", "chrf")},
    }


def test_tier_groups_by_hand():
    groups = tier_groups(_rows(), "spbleu")
    assert list(groups) == list(GROUPS)
    for group, (mean, n) in EXPECTED.items():
        assert groups[group]["n_directions"] == n, group
        assert groups[group]["mean"] == (None if mean is None else pytest.approx(mean)), group
    assert tier_groups(_rows(), "chrf")["all"]["mean"] == pytest.approx(2 * 231 / 12)


def test_tier_table_margins():
    table = tier_table(_results(_rows()), "spbleu")
    assert "| medium | 21.00 | – | 5.00 | 15.67 |" in table
    assert "| as target | 22.67 | 12.33 | 19.33 | 19.25 (all) |" in table


def test_order_by_tier_keeps_order_within_a_tier():
    tiers = {"sw": "low", "de": "high", "zh": "medium", "en": "high", "wo": "low"}
    assert order_by_tier(["sw", "de", "zh", "en", "wo"], tiers) == ["de", "en", "zh", "sw", "wo"]


def test_compare_runs_deltas_against_the_first(tmp_path):
    for name, offset in (("base", 0.0), ("lslo", 1.5)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(_results(_rows(offset))), encoding="utf-8")
    table = compare_runs([tmp_path / "base", tmp_path / "lslo" / "results.json"])
    assert "| group | base | lslo |" in table
    assert "| H->H | 15.00 | 16.50 (+1.50) |" in table
    assert "| M->M | – | – |" in table
    assert "| all | 38.50 | 38.50 (+0.00) |" in table  # chrF++ is the same in both runs
    assert "warning" not in table
    named = compare_runs([tmp_path / "base", tmp_path / "base"], names=["a", "b"])
    assert "| group | a | b |" in named and "| L->M | 6.00 | 6.00 (+0.00) |" in named


def test_compare_runs_warns_on_different_tokenizations_and_directions(tmp_path):
    rows = _rows()
    other = {k: v for k, v in rows.items() if k != "en-fr"}
    (tmp_path / "a.json").write_text(json.dumps(_results(rows)), encoding="utf-8")
    (tmp_path / "b.json").write_text(
        json.dumps(_results(other, "spBLEU(flores200 spm, sha256:x)")), encoding="utf-8"
    )
    table = compare_runs([tmp_path / "a.json", tmp_path / "b.json"], names=["a", "b"])
    assert "different spbleu tokenizations" in table and "cover different directions" in table
    with pytest.raises(LsloError, match="2 names for 1 runs"):
        compare_runs([tmp_path / "a.json"], names=["a", "b"])


def test_load_results_errors(tmp_path):
    with pytest.raises(LsloError, match="no results.json there"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(LsloError, match="not valid JSON"):
        load_results(tmp_path)


# ----------------------------------------------------------------------------- recompute round trip


@pytest.fixture(scope="module")
def spm_file(tmp_path_factory):
    lines = [
        f"the {w} sat on the mat number {i} à côté du chat {w[::-1]}"
        for i in range(200)
        for w in ("cat", "dog")
    ]
    path = tmp_path_factory.mktemp("spm") / "flores101_sacrebleu_tokenizer_spm.model"
    with open(path, "wb") as f:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=f, vocab_size=60,
                                       hard_vocab_limit=False, minloglevel=2)  # fmt: skip
    return path


def _write(out, spm_file) -> dict:
    hyps = {("en", "fr"): ["le chat sur le tapis", "un chien"], ("fr", "en"): ["the cat sat", ""],
            ("sw", "en"): ["the dog sat on the mat", "number 3"]}  # fmt: skip
    refs = {("en", "fr"): ["le chat est sur le tapis", "un chien aboie"], ("fr", "en"): ["the cat sat down", "a dog"],
            ("sw", "en"): ["the dog sat on a mat", "number three"]}  # fmt: skip
    outputs = {d: (["source one", "source two\nwith a break"], hyps[d], refs[d]) for d in hyps}
    return write_results(out, outputs, TIERS, piece_tokenizer(spm=spm_file), {"num_beams": 1})


def test_recompute_round_trip_and_tampering(tmp_path, spm_file):
    res = _write(tmp_path, spm_file)
    assert res["metrics"]["spbleu"]["name"].startswith("spBLEU(flores101 spm, sha256:")
    assert res["languages"] == ["en", "fr", "sw"]
    assert "--tokenize flores101" in res["recompute"]["spbleu_flores"]
    assert recompute(tmp_path, check_pieces=True) < 1e-9
    assert (tmp_path / "directions/en-fr/src.txt").read_text(
        encoding="utf-8"
    ) == "source one\nsource two with a break\n"
    with open(tmp_path / "results.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["src"], r["tgt"]) for r in rows] == [("en", "fr"), ("fr", "en"), ("sw", "en")]
    assert [float(r["spbleu"]) for r in rows] == [
        res["directions"][f"{r['src']}-{r['tgt']}"]["spbleu"] for r in rows
    ]

    # A changed score, group mean or hypothesis is caught.
    tampered = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    tampered["directions"]["fr-en"]["chrf"] += 0.25
    (tmp_path / "results.json").write_text(json.dumps(tampered), encoding="utf-8")
    assert recompute(tmp_path) == pytest.approx(0.25)
    tampered["directions"]["fr-en"]["chrf"] -= 0.25
    tampered["groups"]["spbleu"]["L->H"]["mean"] += 2.0
    (tmp_path / "results.json").write_text(json.dumps(tampered), encoding="utf-8")
    assert recompute(tmp_path) == pytest.approx(2.0)

    _write(tmp_path, spm_file)
    hyp = tmp_path / "directions/sw-en/hyp.txt"
    hyp.write_text("the dog sat on a mat\nnumber 3\n", encoding="utf-8")
    assert recompute(tmp_path) > 1.0  # chrF++ of the changed hypothesis moves
    with pytest.raises(ValueError, match="sw-en: hyp.pieces.txt is not the SentencePiece split of hyp.txt"):
        recompute(tmp_path, check_pieces=True)


# ----------------------------------------------------------------------------- sample translations


def _write_run(out, spm_file, hyp_of) -> None:
    """A run over three directions; line 2's reference is the readable one (6-20 words)."""
    refs = ["short", "the cat sat on the mat today", "x"]
    outputs = {d: ([f"src {d[0]} {i}" for i in range(3)], [hyp_of(d, i) for i in range(3)], refs)
               for d in (("en", "fr"), ("fr", "sw"), ("sw", "en"))}  # fmt: skip
    write_results(out, outputs, TIERS, piece_tokenizer(spm=spm_file), {"num_beams": 1})


def test_sample_translations_side_by_side_across_tiers(tmp_path, spm_file, capsys):
    from lslo.cli import main
    from lslo.report import sample_translations

    _write_run(tmp_path / "base", spm_file, lambda d, i: f"base {d[1]} {i}")
    _write_run(tmp_path / "lslo", spm_file, lambda d, i: f"tuned | {d[1]} {i}")
    md = sample_translations([tmp_path / "base", tmp_path / "lslo"], names=["base", "lslo"], n_directions=2)
    # H->L first (fr-sw), then L->H (sw-en); en-fr (H->H) is third and cut by n_directions=2.
    assert md.index("**fr → sw** (high → low), test line 2") < md.index("**sw → en** (low → high), test line 2")
    assert "en → fr" not in md
    assert "| source | src fr 1 |" in md and "| base | base sw 1 |" in md
    assert "| lslo | tuned \\| sw 1 |" in md  # a '|' in a hypothesis does not break the table
    assert "| reference | the cat sat on the mat today |" in md
    assert f"`{tmp_path / 'lslo'}/directions/<src>-<tgt>/hyp.txt` (lslo)" in md
    assert sample_translations([tmp_path / "base"], n_directions=0) == ""

    assert main(["report", str(tmp_path / "base"), str(tmp_path / "lslo"), "--names", "base", "lslo"]) == 0
    printed = capsys.readouterr().out
    assert "| group | base | lslo |" in printed and printed.count("test line 2") == 3
    assert main(["report", str(tmp_path / "base"), "--samples", "0"]) == 0
    assert "Sample translations" not in capsys.readouterr().out
    assert main(["report", str(tmp_path / "base"), "--samples", "-1"]) == 2
    assert "--samples -1: give a number of directions >= 0" in capsys.readouterr().err

    (tmp_path / "lslo/directions/sw-en/hyp.txt").unlink()  # text files gone: one line, tables still shown
    md = sample_translations([tmp_path / "base", tmp_path / "lslo"], n_directions=3)
    assert md.startswith("> samples: the text files of sw-en are missing")


def test_delta_heatmap_writes_a_png_of_the_change(tmp_path):
    from lslo.report import _matrix, delta_heatmap

    before = {**_results(_rows()), "languages": ["en", "fr", "zh", "sw"], "tiers": TIERS}
    after = {**_results(_rows(offset=1.5)), "languages": ["en", "fr", "zh", "sw"], "tiers": TIERS}
    delta_heatmap(before, after, tmp_path / "d.png")
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    grid = _matrix(before, "spbleu")
    assert grid[0][1] == 10 and grid[3][0] == 60  # en-fr, sw-en: rows are sources, columns targets


def _bytes_for(script_chars: str):
    """A piece tokenizer with no pieces for `script_chars`: each such character becomes its UTF-8 bytes."""
    from lslo.scoring import PieceTokenizer

    def encode(line: str) -> list[str]:
        out: list[str] = []
        for word in line.split():
            out.append("▁")
            for ch in word:
                out += [f"<0x{b:02X}>" for b in ch.encode()] if ch in script_chars else [ch]
        return out

    return PieceTokenizer("spBLEU[tok=toy spm]", {"kind": "tokenizer", "name": "toy"}, encode)


def test_byte_level_spbleu_is_reported_per_target_language(tmp_path):
    hi = "अबकखगघ"
    outputs = {("en", "hi"): (["a cat"], ["अब कख"], ["अब खग घ"]), ("hi", "en"): (["अब"], ["a cat"], ["the cat"]),
               ("en", "fr"): (["a cat"], ["un chat"], ["le chat"])}  # fmt: skip
    res = write_results(tmp_path, outputs, {**TIERS, "hi": "low"}, _bytes_for(hi))
    assert res["directions"]["en-hi"]["ref_byte_share"] > 0.8 and res["directions"]["hi-en"]["ref_byte_share"] == 0
    (warning,) = res["warnings"]  # into hi only: the source side's pieces do not enter spBLEU
    assert warning.startswith("spBLEU into hi: ") and "--spm" in warning
    assert json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["warnings"] == [warning]
    assert write_results(tmp_path / "b", outputs, {**TIERS, "hi": "low"}, _bytes_for(""))["warnings"] == []


def test_rescore_keeps_texts_and_chrf_and_changes_only_the_pieces(tmp_path, spm_file):
    first = _write(tmp_path / "a", spm_file)
    toy = _bytes_for("")
    again = rescore(tmp_path / "a", tmp_path / "b", toy)
    assert again["metrics"]["spbleu"]["name"] == toy.metric and again["settings"] == first["settings"]
    for d, row in first["directions"].items():
        new = again["directions"][d]
        assert new["chrf"] == row["chrf"] and new["n"] == row["n"]
        for key in ("src", "hyp", "ref"):
            assert (tmp_path / "b" / new["files"][key]).read_text() == (tmp_path / "a" / row["files"][key]).read_text()
        hyps = (tmp_path / "a" / row["files"]["hyp"]).read_text().splitlines()
        refs = (tmp_path / "a" / row["files"]["ref"]).read_text().splitlines()
        assert new["spbleu"] == score_direction(hyps, refs, toy)["spbleu"]
    assert any(again["directions"][d]["spbleu"] != first["directions"][d]["spbleu"] for d in first["directions"])
    with pytest.raises(LsloError, match=r"no readable results\.json"):
        rescore(tmp_path / "missing", tmp_path / "c", toy)
    assert not (tmp_path / "c").exists()
