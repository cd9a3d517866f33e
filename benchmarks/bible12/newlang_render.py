"""The `bible12-newlang` section of benchmarks/RESULTS.md and its validation curves, from results-newlang/*.json only.

    python benchmarks/bible12/run.py --family newlang --render

The claims and their rules are fixed here, in code committed before any test score of the family was read:

- LSLo-add leaves old directions exact: every hypothesis of the 132 old directions is the starting point's own
  (a count, no statistics: the claim holds when the count of changed lines is 0);
- the statistical claims below, judged together by `inference.judge` (paired pigeonhole bootstrap over languages,
  Bonferroni over every claim measured, no margin), on the old directions (forgetting) or on the new language's
  24 directions (its quality; the new language is its own stratum, so every replicate holds it once).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import results_md

from . import inference
from .runner import BenchError

FORMAT = "lslo-bible12-newlang/2"  # the result JSONs' (newlang.py writes them); /2: spBLEU on the family's pieces

SECTION = "bible12-newlang"
LANGS = ("es", "hi", "tr")
KIND = {"es": "a relative of fr/it", "hi": "a script the base has no pieces for", "tr": "unrelated to the 12"}
METHOD_TEXT = {"lslo-add": "LSLo-add", "full-ext": "full FT, extended vocabulary", "full-ext-replay": "full FT + replay",
               "lora-ext": "shared LoRA + new rows"}  # fmt: skip


def claims() -> list[dict[str, Any]]:
    """The statistical claims of the family (a = the side claimed higher; "better" or "kept" = matches or beats)."""
    out: list[dict[str, Any]] = []
    for x in LANGS:
        out += [
            {"text": f"{x}: full fine-tuning lowers the old directions", "a": "start-base", "b": f"{x}.full-ext", "kind": "better", "models": "old"},
            {"text": f"{x}: the shared LoRA lowers the old directions", "a": "start-base", "b": f"{x}.lora-ext", "kind": "better", "models": "old"},
            {"text": f"{x}: replay forgets less than no replay", "a": f"{x}.full-ext-replay", "b": f"{x}.full-ext", "kind": "better", "models": "old"},
            {"text": f"{x}: LSLo-add matches or beats the shared LoRA on {x}'s directions", "a": f"{x}.lslo-add", "b": f"{x}.lora-ext", "kind": "kept", "models": "new"},
            {"text": f"{x}: LSLo-add matches or beats full fine-tuning on {x}'s directions", "a": f"{x}.lslo-add", "b": f"{x}.full-ext", "kind": "kept", "models": "new"},
        ]  # fmt: skip
    out += [
        {"text": "seq: full fine-tuning lowers the old directions (es, hi, tr added in turn)", "a": "start-base", "b": "seq.full-ext", "kind": "better", "models": "old"},
        {"text": "seq: LSLo-add matches or beats full fine-tuning on the three languages' directions", "a": "seq.lslo-add", "b": "seq.full-ext", "kind": "kept", "models": "new"},
    ]  # fmt: skip
    return [{**c, "group": "all"} for c in out]


def load(results_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every result JSON of the family; one of another format is an error (run the family again: it redoes them)."""
    out = []
    for p in sorted(Path(results_dir).glob("*.json")):
        r = json.loads(p.read_text(encoding="utf-8"))
        if r.get("format") != FORMAT:
            raise BenchError(f"{p}: format {r.get('format')!r}, not {FORMAT!r}; run the newlang family again to redo it "
                             "(training and evaluations are cached)")  # fmt: skip
        out.append(r)
    return out


def experiment(r: Mapping[str, Any]) -> str:
    """start-base, or SET.METHOD of a run from the shipped base (lslo12.SET.METHOD from the LSLo model)."""
    if r["kind"] == "start":
        return r["run"]
    return ("" if r["start"] == "base" else f"{r['start']}.") + f"{r['set']}.{r['method']}"


def views(results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{"old": experiment -> runs scored on the 132 old directions, "new": ... on the new languages' directions},
    in `inference.judge`'s shape; a new language is a tier of its own (drawn once in every replicate)."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {"old": {}, "new": {}}
    for r in results:
        tiers = {**r["tiers"], **{c: "new" for c in r.get("new_languages", [])}}
        out["old"].setdefault(experiment(r), []).append({"run": r["run"], "directions": r["old_directions"], "tiers": tiers})
        if r["kind"] == "add":
            out["new"].setdefault(experiment(r), []).append({"run": r["run"], "directions": r["new_directions"], "tiers": tiers})
    return out


def train_cpu(train: Mapping[str, Any]) -> float:
    """A run's training CPU seconds: the trainer's own clock (kept across resumes) where its summary has it, else what
    the bench measured of the last `lslo train` process."""
    return float((train.get("summary") or {}).get("cpu_s") or train["cpu_s"])


def _lslo12_start(results: Sequence[Mapping[str, Any]]) -> str:
    r = next((r for r in results if r["run"] == "start-lslo12"), None)
    if r is None:
        return ""
    return (f"; `start-lslo12` ({r['settings']['steps']} steps of `configs/bible12-lslo.yaml`) scores "
            f"{r['old']['spbleu']:.2f} / {r['old']['chrf']:.2f}")  # fmt: skip


def _mean(rows: Sequence[Mapping[str, Any]], key: str, metric: str) -> float:
    return sum(r[key][metric] for r in rows) / len(rows)


def _into_out(r: Mapping[str, Any], lang: str, metric: str) -> tuple[float, float]:
    into = [v[metric] for d, v in r["new_directions"].items() if d.split("-")[1] == lang]
    out = [v[metric] for d, v in r["new_directions"].items() if d.split("-")[0] == lang]
    return sum(into) / len(into), sum(out) / len(out)


def render(results_dir: str | os.PathLike) -> str:
    results = load(results_dir)
    start = next((r for r in results if r["run"] == "start-base"), None)
    adds = [r for r in results if r["kind"] == "add"]
    if start is None or not adds:
        return f"## bible12-newlang: adding a language the base has never seen\n\nNo results yet in `{results_dir}`."
    s = adds[0]["settings"]
    m = adds[0]["machine"]
    root = Path(__file__).resolve().parents[2]
    where = Path(results_dir).resolve()
    rel = where.relative_to(root) if where.is_relative_to(root) else where
    lines = [
        "## bible12-newlang: adding a language the base has never seen", "",
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/bible12/run.py --family newlang --steps {s['steps']} --only RUN...` "
        f"(two runs side by side, one thread each), then `python benchmarks/bible12/run.py --family newlang --render`; "
        f"rendered from `{rel}/*.json`. Machine: {m['cpu']}, {m['cpu_cores']} cores, torch {m['torch']}, "
        f"precision `{s['precision']}` (fp32 here: this CPU has no bf16 instructions); result JSONs written "
        f"{min(r['machine']['date'] for r in adds)} to {max(r['machine']['date'] for r in adds)}.", "",
        f"Each run trains {s['steps']} steps of {s['max_tokens']} tokens from the shipped base on the directions that "
        "involve the new language (bible22: bible12 plus es, hi, tr on bible12's own verse ids), then `lslo eval` "
        f"scores its last model (no checkpoint is picked by validation), greedy, {s['max_sentences']} test verses per "
        "direction, on the 132 old directions and the new language's 24. "
        "A small budget on a 2-core CPU: the new-language scores are those of a few hundred steps, and the comparison "
        "that matters most here, forgetting, does not depend on the budget for LSLo-add. Learning rates: one rule, fixed "
        "before any run (the centre of each class in the project's sweep protocol: 2e-3 for adapters, 2e-4 for full "
        "fine-tuning), unswept for this family. spBLEU: sacrebleu BLEU on the pieces of one SentencePiece model for "
        f"every run of the family (`{s['spbleu']['metric']}`, a unigram model trained on bible22's training text of "
        "its 15 languages, `newlang.scoring_pieces`): the shipped base's own model has no pieces for hi's script, so "
        "its spBLEU into hi would be a byte-level score. chrF++ needs no pieces.", "",
        "### Forgetting: the 132 old directions after adding a language", "",
        f"The starting point (the shipped base) scores {start['old']['spbleu']:.2f} spBLEU / {start['old']['chrf']:.2f} chrF++ "
        "on them (mean over directions)" + _lslo12_start(results) + ". Δ is against the run's own starting point. "
        "*Changed hypotheses*: test lines of the 132 old directions whose output differs from the starting point's, "
        "counted from the two `lslo eval` outputs.", "",
        "| run | method | old spBLEU (Δ) | old chrF++ (Δ) | changed hypotheses | trained parameters | CPU min |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    order = {k: i for i, k in enumerate(METHOD_TEXT)}
    adds.sort(key=lambda r: (r["start"] != "base", r["set"] not in LANGS, LANGS.index(r["set"]) if r["set"] in LANGS else 0,
                             order[r["method"]], r["seed"]))  # fmt: skip
    for r in adds:
        d_b, d_c = (r["old"][k] - r["old_start"][k] for k in ("spbleu", "chrf"))
        cpu = r.get("chain_cpu_s") or train_cpu(r["train"])  # a chain: every stage's training
        lines.append(f"| {r['run']} | {METHOD_TEXT[r['method']]} | {r['old']['spbleu']:.2f} ({d_b:+.2f}) | {r['old']['chrf']:.2f} "
                     f"({d_c:+.2f}) | {r['old_changed_hypotheses']} of {r['old_hypotheses']} | {r['trained_parameters']:,} "
                     f"| {cpu / 60:.0f} |")  # fmt: skip
    exact = [r for r in adds if r["method"] == "lslo-add"]
    bad = [r["run"] for r in exact if r["old_changed_hypotheses"]]
    lines += ["", f"**Exactness** (rule: 0 changed lines): {len(exact) - len(bad)} of {len(exact)} LSLo-add runs leave every "
              "old hypothesis as it was" + (f"; NOT for {', '.join(bad)}." if bad else ".")]  # fmt: skip
    chained = [r for r in adds if r.get("earlier_language")]
    if chained:
        e = chained[0]["earlier_language"]
        lines += ["", f"**Earlier languages** (languages added one after another; rule for LSLo-add: 0 changed lines): "
                  f"{e['language']}'s {e['of'] // chained[0]['settings']['max_sentences']} directions with the old languages after the "
                  "later ones were added, evaluated on their own as in the run that added it (the chain's first stage; "
                  "`lslo eval` batches mix the directions it is given, so the same directions give the same batches), "
                  "against that run: "
                  + "; ".join(f"{r['run']} ({METHOD_TEXT[r['method']]}): {r['earlier_language']['changed']} of "
                              f"{r['earlier_language']['of']} hypotheses changed" for r in chained) + "."]  # fmt: skip
    lines += ["", "### The new language's directions", "",
              "| run | method | into it: spBLEU / chrF++ | out of it: spBLEU / chrF++ | all its directions: spBLEU / chrF++ | tokens per word before → after |",
              "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in adds:
        lang = r["new_languages"][-1]
        (ib, ob), (ic, oc) = _into_out(r, lang, "spbleu"), _into_out(r, lang, "chrf")
        x = r["extension"]["languages"][lang]
        lines.append(f"| {r['run']} | {METHOD_TEXT[r['method']]} | {ib:.2f} / {ic:.2f} | {ob:.2f} / {oc:.2f} "
                     f"| {r['new']['spbleu']:.2f} / {r['new']['chrf']:.2f} | {x['tokens_per_word_before']:.2f} → "
                     f"{x['tokens_per_word_after']:.2f} |")  # fmt: skip
    lines += ["", "The languages: " + "; ".join(f"{x} ({KIND[x]})" for x in LANGS) + ". A `seq` run adds es, then hi, then "
              "tr, one after another, each from the model before (its first stage is the es-alone run); its into/out-of "
              "columns score tr, the last one added, its *all* column every direction with es, hi or tr (78), its "
              "forgetting row every old direction after all three, its trained parameters the last stage's and its CPU "
              "minutes every stage's training. `lslo12.*` runs start from `start-lslo12`, an LSLo "
              "model fine-tuned on the 12 languages whose LoRAs stay frozen.", ""]  # fmt: skip
    cl = claims()
    judged = inference.judge(cl, {}, metric="spbleu", views=views(results))
    tested = sum(j is not None for j in judged)
    lines += ["### Verdicts", "", inference.method_text(tested).split(" *Old rule*")[0], "",
              "| claim | on | Δ spBLEU [interval] | p (raw; adjusted) | verdict |", "|---|---|---:|---|---|"]  # fmt: skip
    for c, j in zip(cl, judged, strict=True):
        interval, p, verdict = inference.cells(j)
        lines.append(f"| {c['text']} | {'132 old directions' if c['models'] == 'old' else 'its new directions'} | {interval} | {p} | {verdict} |")
    lines += ["", "Claims not measured (a run missing) show –. Validation curves (validation NLL every 100 steps on the "
              "directions each run trains: the new language's, and for full FT + replay the old ones too): `"
              + str(rel / "curves.png") + "`.", ""]  # fmt: skip
    return "\n".join(lines)


def plot_curves(results_dir: str | os.PathLike) -> Path | None:
    """results-newlang/curves.png: every run's validation NLL on its new directions, one panel per language set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    adds = [r for r in load(results_dir) if r["kind"] == "add" and r.get("valid_curve")]
    if not adds:
        return None
    sets = sorted({r["set"] for r in adds}, key=lambda x: (x not in LANGS, x))
    colours = {m: f"C{i}" for i, m in enumerate(METHOD_TEXT)}  # one colour per method, the same in every panel
    fig, axes = plt.subplots(1, len(sets), figsize=(4 * len(sets), 3.4), squeeze=False)
    handles: dict[str, Any] = {}
    for ax, name in zip(axes[0], sets, strict=True):
        for r in (r for r in adds if r["set"] == name):
            label = f"{METHOD_TEXT[r['method']]}" + (" (from lslo12)" if r["start"] != "base" else "") + f", seed {r['seed']}"
            (line,) = ax.plot([p["step"] for p in r["valid_curve"]], [p["valid_nll"] for p in r["valid_curve"]],
                              color=colours[r["method"]], linestyle="-" if r["seed"] == 1 else "--",
                              marker="o" if r["start"] == "base" else "s", label=label)  # fmt: skip
            handles.setdefault(label, line)
        ax.set_title(name + (" (last stage: tr)" if name not in LANGS else ""))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation NLL (its training directions)")
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(4, len(handles)), fontsize=7,
               frameon=False)  # fmt: skip
    fig.tight_layout(rect=(0, 0.06 + 0.04 * ((len(handles) - 1) // 4), 1, 1))
    out = Path(results_dir) / "curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def render_to_md(results_dir: str | os.PathLike, md: str | os.PathLike | None = None) -> Path:
    plot_curves(results_dir)
    return results_md.update_section_in(md, SECTION, render(results_dir))
