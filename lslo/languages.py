"""Language registry: M2M-100, FLORES-101 and FLORES-200/NLLB codes, model language tokens, resource tiers.

Users may type a language in any of three styles: M2M-100 (`en`, also the token form `__en__`),
FLORES-101 file names (`eng`, `zho_simpl`) or FLORES-200/NLLB (`eng_Latn`, `zho_Hans`). `lookup`
resolves all of them (case-insensitive) to one `Language`; `canonical` names it with one code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lslo.errors import LsloError


@dataclass(frozen=True)
class Language:
    """One language and its code in each scheme (None where the scheme lacks it)."""

    name: str
    m2m: str | None
    flores101: str | None
    flores200: str | None


# (name, M2M-100, FLORES-101, FLORES-200). The 101 FLORES-101 languages first (102 codes: Chinese comes
# in two scripts, zho_simpl and zho_trad), then the 13 M2M-100 languages absent from FLORES-101, then the rest
# of FLORES-200: with them every one of NLLB-200's 202 language codes (and FLORES-200's 204 files) is known.
# `zho_trad` has no M2M-100 code: M2M-100's `zh` is Simplified Chinese.
_TABLE: tuple[tuple[str, str | None, str | None, str | None], ...] = (
    ("Afrikaans", "af", "afr", "afr_Latn"),
    ("Amharic", "am", "amh", "amh_Ethi"),
    ("Arabic", "ar", "ara", "arb_Arab"),
    ("Armenian", "hy", "hye", "hye_Armn"),
    ("Assamese", None, "asm", "asm_Beng"),
    ("Asturian", "ast", "ast", "ast_Latn"),
    ("Azerbaijani", "az", "azj", "azj_Latn"),
    ("Belarusian", "be", "bel", "bel_Cyrl"),
    ("Bengali", "bn", "ben", "ben_Beng"),
    ("Bosnian", "bs", "bos", "bos_Latn"),
    ("Bulgarian", "bg", "bul", "bul_Cyrl"),
    ("Burmese", "my", "mya", "mya_Mymr"),
    ("Catalan", "ca", "cat", "cat_Latn"),
    ("Cebuano", "ceb", "ceb", "ceb_Latn"),
    ("Chinese (Simplified)", "zh", "zho_simpl", "zho_Hans"),
    ("Chinese (Traditional)", None, "zho_trad", "zho_Hant"),
    ("Croatian", "hr", "hrv", "hrv_Latn"),
    ("Czech", "cs", "ces", "ces_Latn"),
    ("Danish", "da", "dan", "dan_Latn"),
    ("Dutch", "nl", "nld", "nld_Latn"),
    ("English", "en", "eng", "eng_Latn"),
    ("Estonian", "et", "est", "est_Latn"),
    ("Filipino (Tagalog)", "tl", "tgl", "tgl_Latn"),
    ("Finnish", "fi", "fin", "fin_Latn"),
    ("French", "fr", "fra", "fra_Latn"),
    ("Fula", "ff", "ful", "fuv_Latn"),
    ("Galician", "gl", "glg", "glg_Latn"),
    ("Ganda", "lg", "lug", "lug_Latn"),
    ("Georgian", "ka", "kat", "kat_Geor"),
    ("German", "de", "deu", "deu_Latn"),
    ("Greek", "el", "ell", "ell_Grek"),
    ("Gujarati", "gu", "guj", "guj_Gujr"),
    ("Hausa", "ha", "hau", "hau_Latn"),
    ("Hebrew", "he", "heb", "heb_Hebr"),
    ("Hindi", "hi", "hin", "hin_Deva"),
    ("Hungarian", "hu", "hun", "hun_Latn"),
    ("Icelandic", "is", "isl", "isl_Latn"),
    ("Igbo", "ig", "ibo", "ibo_Latn"),
    ("Indonesian", "id", "ind", "ind_Latn"),
    ("Irish", "ga", "gle", "gle_Latn"),
    ("Italian", "it", "ita", "ita_Latn"),
    ("Japanese", "ja", "jpn", "jpn_Jpan"),
    ("Javanese", "jv", "jav", "jav_Latn"),
    ("Kabuverdianu", None, "kea", "kea_Latn"),
    ("Kamba", None, "kam", "kam_Latn"),
    ("Kannada", "kn", "kan", "kan_Knda"),
    ("Kazakh", "kk", "kaz", "kaz_Cyrl"),
    ("Khmer", "km", "khm", "khm_Khmr"),
    ("Korean", "ko", "kor", "kor_Hang"),
    ("Kyrgyz", None, "kir", "kir_Cyrl"),
    ("Lao", "lo", "lao", "lao_Laoo"),
    ("Latvian", "lv", "lav", "lvs_Latn"),
    ("Lingala", "ln", "lin", "lin_Latn"),
    ("Lithuanian", "lt", "lit", "lit_Latn"),
    ("Luo", None, "luo", "luo_Latn"),
    ("Luxembourgish", "lb", "ltz", "ltz_Latn"),
    ("Macedonian", "mk", "mkd", "mkd_Cyrl"),
    ("Malay", "ms", "msa", "zsm_Latn"),
    ("Malayalam", "ml", "mal", "mal_Mlym"),
    ("Maltese", None, "mlt", "mlt_Latn"),
    ("Maori", None, "mri", "mri_Latn"),
    ("Marathi", "mr", "mar", "mar_Deva"),
    ("Mongolian", "mn", "mon", "khk_Cyrl"),
    ("Nepali", "ne", "npi", "npi_Deva"),
    ("Northern Sotho", "ns", "nso", "nso_Latn"),
    ("Norwegian", "no", "nob", "nob_Latn"),
    ("Nyanja", None, "nya", "nya_Latn"),
    ("Occitan", "oc", "oci", "oci_Latn"),
    ("Oriya", "or", "ory", "ory_Orya"),
    ("Oromo", None, "orm", "gaz_Latn"),
    ("Pashto", "ps", "pus", "pbt_Arab"),
    ("Persian", "fa", "fas", "pes_Arab"),
    ("Polish", "pl", "pol", "pol_Latn"),
    ("Portuguese", "pt", "por", "por_Latn"),
    ("Punjabi", "pa", "pan", "pan_Guru"),
    ("Romanian", "ro", "ron", "ron_Latn"),
    ("Russian", "ru", "rus", "rus_Cyrl"),
    ("Serbian", "sr", "srp", "srp_Cyrl"),
    ("Shona", None, "sna", "sna_Latn"),
    ("Sindhi", "sd", "snd", "snd_Arab"),
    ("Slovak", "sk", "slk", "slk_Latn"),
    ("Slovenian", "sl", "slv", "slv_Latn"),
    ("Somali", "so", "som", "som_Latn"),
    ("Sorani Kurdish", None, "ckb", "ckb_Arab"),
    ("Spanish", "es", "spa", "spa_Latn"),
    ("Swahili", "sw", "swh", "swh_Latn"),
    ("Swedish", "sv", "swe", "swe_Latn"),
    ("Tajik", None, "tgk", "tgk_Cyrl"),
    ("Tamil", "ta", "tam", "tam_Taml"),
    ("Telugu", None, "tel", "tel_Telu"),
    ("Thai", "th", "tha", "tha_Thai"),
    ("Turkish", "tr", "tur", "tur_Latn"),
    ("Ukrainian", "uk", "ukr", "ukr_Cyrl"),
    ("Umbundu", None, "umb", "umb_Latn"),
    ("Urdu", "ur", "urd", "urd_Arab"),
    ("Uzbek", "uz", "uzb", "uzn_Latn"),
    ("Vietnamese", "vi", "vie", "vie_Latn"),
    ("Welsh", "cy", "cym", "cym_Latn"),
    ("Wolof", "wo", "wol", "wol_Latn"),
    ("Xhosa", "xh", "xho", "xho_Latn"),
    ("Yoruba", "yo", "yor", "yor_Latn"),
    ("Zulu", "zu", "zul", "zul_Latn"),
    # M2M-100 languages that FLORES-101 lacks.
    ("Albanian", "sq", None, "als_Latn"),
    ("Bashkir", "ba", None, "bak_Cyrl"),
    ("Breton", "br", None, None),
    ("Haitian Creole", "ht", None, "hat_Latn"),
    ("Iloko", "ilo", None, "ilo_Latn"),
    ("Malagasy", "mg", None, "plt_Latn"),
    ("Scottish Gaelic", "gd", None, "gla_Latn"),
    ("Sinhala", "si", None, "sin_Sinh"),
    ("Sundanese", "su", None, "sun_Latn"),
    ("Swati", "ss", None, "ssw_Latn"),
    ("Tswana", "tn", None, "tsn_Latn"),
    ("Western Frisian", "fy", None, None),
    ("Yiddish", "yi", None, "ydd_Hebr"),
    # FLORES-200 / NLLB-200 languages in neither of the above (all without an M2M-100 or FLORES-101 code);
    # arb_Latn and min_Arab are FLORES-200 files that NLLB-200 has no language token for.
    ("Acehnese (Arabic script)", None, None, "ace_Arab"),
    ("Acehnese (Latin script)", None, None, "ace_Latn"),
    ("Akan", None, None, "aka_Latn"),
    ("Awadhi", None, None, "awa_Deva"),
    ("Ayacucho Quechua", None, None, "quy_Latn"),
    ("Balinese", None, None, "ban_Latn"),
    ("Bambara", None, None, "bam_Latn"),
    ("Banjar (Arabic script)", None, None, "bjn_Arab"),
    ("Banjar (Latin script)", None, None, "bjn_Latn"),
    ("Basque", None, None, "eus_Latn"),
    ("Bemba", None, None, "bem_Latn"),
    ("Bhojpuri", None, None, "bho_Deva"),
    ("Buginese", None, None, "bug_Latn"),
    ("Central Atlas Tamazight", None, None, "tzm_Tfng"),
    ("Central Aymara", None, None, "ayr_Latn"),
    ("Central Kanuri (Arabic script)", None, None, "knc_Arab"),
    ("Central Kanuri (Latin script)", None, None, "knc_Latn"),
    ("Chhattisgarhi", None, None, "hne_Deva"),
    ("Chokwe", None, None, "cjk_Latn"),
    ("Crimean Tatar", None, None, "crh_Latn"),
    ("Dari", None, None, "prs_Arab"),
    ("Dyula", None, None, "dyu_Latn"),
    ("Dzongkha", None, None, "dzo_Tibt"),
    ("Egyptian Arabic", None, None, "arz_Arab"),
    ("Esperanto", None, None, "epo_Latn"),
    ("Ewe", None, None, "ewe_Latn"),
    ("Faroese", None, None, "fao_Latn"),
    ("Fijian", None, None, "fij_Latn"),
    ("Fon", None, None, "fon_Latn"),
    ("Friulian", None, None, "fur_Latn"),
    ("Guarani", None, None, "grn_Latn"),
    ("Jingpho", None, None, "kac_Latn"),
    ("Kabiyè", None, None, "kbp_Latn"),
    ("Kabyle", None, None, "kab_Latn"),
    ("Kashmiri (Arabic script)", None, None, "kas_Arab"),
    ("Kashmiri (Devanagari script)", None, None, "kas_Deva"),
    ("Kikongo", None, None, "kon_Latn"),
    ("Kikuyu", None, None, "kik_Latn"),
    ("Kimbundu", None, None, "kmb_Latn"),
    ("Kinyarwanda", None, None, "kin_Latn"),
    ("Latgalian", None, None, "ltg_Latn"),
    ("Ligurian", None, None, "lij_Latn"),
    ("Limburgish", None, None, "lim_Latn"),
    ("Lombard", None, None, "lmo_Latn"),
    ("Luba-Kasai", None, None, "lua_Latn"),
    ("Magahi", None, None, "mag_Deva"),
    ("Maithili", None, None, "mai_Deva"),
    ("Meitei (Bengali script)", None, None, "mni_Beng"),
    ("Mesopotamian Arabic", None, None, "acm_Arab"),
    ("Minangkabau (Arabic script)", None, None, "min_Arab"),
    ("Minangkabau (Latin script)", None, None, "min_Latn"),
    ("Mizo", None, None, "lus_Latn"),
    ("Modern Standard Arabic (Romanized)", None, None, "arb_Latn"),
    ("Moroccan Arabic", None, None, "ary_Arab"),
    ("Mossi", None, None, "mos_Latn"),
    ("Najdi Arabic", None, None, "ars_Arab"),
    ("North Levantine Arabic", None, None, "apc_Arab"),
    ("Northern Kurdish", None, None, "kmr_Latn"),
    ("Norwegian Nynorsk", None, None, "nno_Latn"),
    ("Nuer", None, None, "nus_Latn"),
    ("Pangasinan", None, None, "pag_Latn"),
    ("Papiamento", None, None, "pap_Latn"),
    ("Rundi", None, None, "run_Latn"),
    ("Samoan", None, None, "smo_Latn"),
    ("Sango", None, None, "sag_Latn"),
    ("Sanskrit", None, None, "san_Deva"),
    ("Santali", None, None, "sat_Beng"),
    ("Sardinian", None, None, "srd_Latn"),
    ("Shan", None, None, "shn_Mymr"),
    ("Sicilian", None, None, "scn_Latn"),
    ("Silesian", None, None, "szl_Latn"),
    ("South Azerbaijani", None, None, "azb_Arab"),
    ("South Levantine Arabic", None, None, "ajp_Arab"),
    ("Southern Sotho", None, None, "sot_Latn"),
    ("Southwestern Dinka", None, None, "dik_Latn"),
    ("Standard Tibetan", None, None, "bod_Tibt"),
    ("Ta'izzi-Adeni Arabic", None, None, "acq_Arab"),
    ("Tamasheq (Latin script)", None, None, "taq_Latn"),
    ("Tamasheq (Tifinagh script)", None, None, "taq_Tfng"),
    ("Tatar", None, None, "tat_Cyrl"),
    ("Tigrinya", None, None, "tir_Ethi"),
    ("Tok Pisin", None, None, "tpi_Latn"),
    ("Tsonga", None, None, "tso_Latn"),
    ("Tumbuka", None, None, "tum_Latn"),
    ("Tunisian Arabic", None, None, "aeb_Arab"),
    ("Turkmen", None, None, "tuk_Latn"),
    ("Twi", None, None, "twi_Latn"),
    ("Uyghur", None, None, "uig_Arab"),
    ("Venetian", None, None, "vec_Latn"),
    ("Waray", None, None, "war_Latn"),
    ("Yue Chinese", None, None, "yue_Hant"),
)

LANGUAGES: tuple[Language, ...] = tuple(Language(*row) for row in _TABLE)


def _build_index() -> dict[str, Language]:
    index: dict[str, Language] = {}
    for lang in LANGUAGES:
        for code in (lang.m2m, lang.flores101, lang.flores200):
            if code is None:
                continue
            key = code.lower()
            if key in index and index[key] is not lang:
                raise AssertionError(f"language code {code!r} is ambiguous")
            index[key] = lang
    return index


_INDEX = _build_index()

STYLES = ("m2m100", "nllb")


def register_language(code: str, name: str | None = None) -> Language:
    """Make `code`, a language no registry knows (e.g. `tyv_Cyrl`, being added to a model), known in this process.

    Called for the languages a run adds (`new_languages`) and those of a loaded model that has added languages;
    every other unknown code stays an error. Returns the language (the known one when `code` is known).
    """
    known = lookup(code)
    if known is not None:
        return known
    key = code.strip().lower().replace("-", "_") if isinstance(code, str) else ""
    if not key or key.startswith("__") or not all(c.isalnum() or c == "_" for c in key):
        raise LsloError(f"language code {code!r}: use letters, digits and '_' only, e.g. tyv_Cyrl")
    lang = Language(name or code, None, None, code)
    _INDEX[key] = lang
    return lang


def lookup(code: str) -> Language | None:
    """The language named by `code` in any style (`en`, `__en__`, `eng`, `eng_Latn`, any case), else None."""
    if not isinstance(code, str):
        return None
    key = code.strip().lower().replace("-", "_")
    if len(key) > 4 and key.startswith("__") and key.endswith("__"):
        key = key[2:-2]
    return _INDEX.get(key)


def resolve(code: str, where: str = "language code") -> Language:
    """Like `lookup`, but raise `LsloError` naming `code` (and `where` it came from) when unknown."""
    lang = lookup(code)
    if lang is None:
        raise LsloError(
            f"{where}: unknown language {code!r}; use an M2M-100 code (en), a FLORES-101 code (eng) "
            "or a FLORES-200 code (eng_Latn)"
        )
    return lang


def canonical(code: str) -> str:
    """The M2M-100 code of `code` when it has one, else its FLORES-200 (then FLORES-101) code."""
    lang = resolve(code)
    return lang.m2m or lang.flores200 or lang.flores101  # type: ignore[return-value]


def same_language(a: str, b: str) -> bool:
    """True when codes `a` and `b` name the same known language (or are the same unknown string)."""
    la, lb = lookup(a), lookup(b)
    if la is None or lb is None:
        return a == b
    return la is lb


def lang_token(code: str, style: str) -> str:
    """The model's language token: `__en__` for style "m2m100", `eng_Latn` for style "nllb"."""
    lang = resolve(code)
    if style == "m2m100":
        if lang.m2m is None:
            raise LsloError(f"language {code!r} ({lang.name}) has no M2M-100 token; use an NLLB model for it")
        return f"__{lang.m2m}__"
    if style == "nllb":
        if lang.flores200 is None:
            raise LsloError(f"language {code!r} ({lang.name}) has no NLLB token; use an M2M-100 model for it")
        return lang.flores200
    raise ValueError(f"unknown language-token style {style!r}; expected one of {STYLES}")


def _token_id(tokenizer: Any, token: str) -> int | None:
    """The id of `token` in `tokenizer`, or None when the tokenizer maps it to its unknown token."""
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tid == tokenizer.unk_token_id and token != tokenizer.unk_token):
        return None
    return int(tid)


def detect_style(tokenizer: Any) -> str:
    """Which language-token scheme `tokenizer` uses, "m2m100" (`__en__`) or "nllb" (`eng_Latn`)."""
    if hasattr(tokenizer, "get_lang_id"):
        return "m2m100"
    m2m = sum(_token_id(tokenizer, f"__{lang.m2m}__") is not None for lang in LANGUAGES if lang.m2m)
    nllb = sum(_token_id(tokenizer, lang.flores200) is not None for lang in LANGUAGES if lang.flores200)
    if m2m == 0 and nllb == 0:
        raise LsloError(
            f"tokenizer {type(tokenizer).__name__} has no language tokens (neither __en__ nor eng_Latn); "
            "use an M2M-100 or NLLB tokenizer"
        )
    return "m2m100" if m2m >= nllb else "nllb"


def lang_token_ids(tokenizer: Any, codes: Iterable[str]) -> dict[str, int]:
    """Map each code (as given, any style) to the id of its language token in `tokenizer`."""
    style = detect_style(tokenizer)
    ext = getattr(tokenizer, "lslo_extension", None)  # languages added by lslo.extend.tokenizer
    ids: dict[str, int] = {}
    for code in codes:
        if ext is not None and (added := ext.language(code)) is not None:
            ids[code] = int(added["id"])
            continue
        token = lang_token(code, style)
        tid = _token_id(tokenizer, token)
        if tid is None:
            raise LsloError(
                f"tokenizer {type(tokenizer).__name__} has no token {token!r} for language {code!r}; "
                "drop the language or use a model that covers it"
            )
        ids[code] = tid
    return ids


# Resource tiers of the paper's two 12-language settings (M2M-100 codes).
LANG12_TIERS: dict[str, str] = {
    "en": "high", "fr": "high", "it": "high", "de": "high",
    "nl": "medium", "zh": "medium", "ja": "medium", "ko": "medium",
    "oc": "low", "or": "low", "sd": "low", "wo": "low",
}  # fmt: skip
BIBLE12_TIERS: dict[str, str] = {
    "en": "high", "fr": "high", "it": "high", "de": "high",
    "zh": "medium", "ja": "medium", "ko": "medium", "ru": "medium",
    "sw": "low", "tl": "low", "fa": "low", "vi": "low",
}  # fmt: skip


def tier_of(code: str, tiers: Mapping[str, str] = LANG12_TIERS) -> str:
    """The tier of language `code` in `tiers` (codes in `tiers` may be in any style)."""
    lang = resolve(code)
    for other, tier in tiers.items():
        if lookup(other) is lang:
            return tier
    raise LsloError(f"language {code!r} has no resource tier; add it to the tiers ({', '.join(tiers)})")
