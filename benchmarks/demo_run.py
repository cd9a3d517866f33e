"""Time `make demo` from scratch and record what it shows: the figures the README quotes.

    python benchmarks/demo_run.py            # runs `make demo DEMO=runs/demo-timed` (a fresh folder)
    python benchmarks/demo_run.py --render   # the RESULTS.md section from the committed JSON only

Runs the demo exactly as a new user does (install, bible12, LSLo training on the shipped base for the demo's 4
languages, evaluation of the base and of the LSLo model on their 12 directions) and times each phase by wall clock. Then writes
`benchmarks/results/demo.json` and the `demo` section of `benchmarks/RESULTS.md`: wall time, the tier-group
scores of the base and the fine-tuned model, how many directions improved, the sample translations the demo
prints, and `docs/demo.png` (the change of every direction, the README's picture).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

if not __package__:  # run as `python benchmarks/X.py`: see benchmarks/_bootstrap.py
    import _bootstrap  # noqa: F401
from benchmarks.bible12.analysis import sign_test  # noqa: E402
from benchmarks.results_md import HERE, machine, update_section  # noqa: E402

ROOT = HERE.parent
ALPHA = 0.05  # sign-test level for "clearly above"
GROUPS = ("H->*", "M->*", "L->*", "*->H", "*->M", "*->L", "all")


def overall(results: dict, metric: str) -> float:
    scores = [d[metric] for d in results["directions"].values()]
    return sum(scores) / len(scores)


def base_info(folder: Path) -> dict | None:
    """Which base the demo fine-tuned: its pretraining steps, hours and validation figures (lslo_base.json)."""
    path = folder / "lslo_base.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text(encoding="utf-8"))
    return {"steps": m.get("steps"), "hours": m.get("hours"), "valid_loss": (m.get("valid") or {}).get("valid_loss"),
            "valid_chrf_greedy": (m.get("chrf") or {}).get("mean")}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-dir", default="runs/demo-timed", help="a fresh folder (removed first)")
    ap.add_argument("--make-args", nargs="*", default=[], help="extra make variables, e.g. DEMO_STEPS=200")
    ap.add_argument("--render", action="store_true", help="only re-render the section from the committed JSON")
    ap.add_argument("--name", default="demo", help="the JSON's name in benchmarks/results/: `demo` (the default "
                    "settings, the section's main figures and docs/demo.png) or `demo-*` for other settings, listed in the "
                    "section's table of other lengths (e.g. --name demo-300steps --make-args DEMO_STEPS=300)")
    args = ap.parse_args()
    if args.name != "demo" and not args.name.startswith("demo-"):
        raise SystemExit(f"demo_run.py: --name {args.name}: use demo or demo-SOMETHING")
    if args.render:
        update_section("demo", render(json.loads((HERE / "results" / "demo.json").read_text(encoding="utf-8"))))
        return

    demo = ROOT / args.demo_dir
    shutil.rmtree(demo, ignore_errors=True)
    cmd = ["make", "demo", f"DEMO={args.demo_dir}", *args.make_args]
    started = time.time()
    marks: list[tuple[float, str]] = []
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            if " -m lslo.cli " in line or " -m pip " in line:  # a command that make echoes
                marks.append((time.time() - started, line.strip()))
    if proc.returncode != 0:
        raise SystemExit(f"demo_run.py: `{' '.join(cmd)}` failed (exit {proc.returncode})")
    wall = time.time() - started
    phases = [
        {"command": cmd_line, "start_s": round(t, 1), "seconds": round((marks[i + 1][0] if i + 1 < len(marks) else wall) - t, 1)}
        for i, (t, cmd_line) in enumerate(marks)
    ]  # fmt: skip
    base = json.loads((demo / "eval-base" / "results.json").read_text(encoding="utf-8"))
    lslo = json.loads((demo / "eval-lslo" / "results.json").read_text(encoding="utf-8"))
    train_log = [json.loads(x) for x in (demo / "lslo" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    improved = {
        m: sum(lslo["directions"][d][m] > base["directions"][d][m] for d in base["directions"]) for m in ("spbleu", "chrf")
    }  # fmt: skip
    worse = {
        m: sum(lslo["directions"][d][m] < base["directions"][d][m] for d in base["directions"]) for m in ("spbleu", "chrf")
    }  # fmt: skip
    from lslo.report import delta_heatmap, sample_translations

    samples = sample_translations([demo / "eval-base", demo / "eval-lslo"], names=["base", "lslo"])
    if args.name == "demo":  # the README's picture: the default settings only
        delta_heatmap(base, lslo, ROOT / "docs" / "demo.png", names=("base", "LSLo"))
    result = {
        "format": "lslo-demo/1",
        "command": "python benchmarks/demo_run.py " + " ".join(sys.argv[1:]),
        "make": " ".join(cmd),
        "wall_s": round(wall, 1),
        "phases": phases,
        "metric_names": {"spbleu": base["metrics"]["spbleu"]["name"], "chrf": base["metrics"]["chrf"]["name"]},
        "settings": lslo["settings"],
        "directions": len(base["directions"]),
        "train_steps": max(r.get("step", 0) for r in train_log),
        "train_max_tokens": json.loads((demo / "lslo" / "run.json").read_text(encoding="utf-8"))["max_tokens"],
        "scores": {
            name: {m: {**{g: r["groups"][m][g]["mean"] for g in GROUPS if g in r["groups"][m]}, "all": overall(r, m)}
                   for m in ("spbleu", "chrf")}
            for name, r in (("base", base), ("lslo", lslo))
        },  # fmt: skip
        "directions_improved": improved,
        "directions_worse": worse,
        "base": base_info(ROOT / "base" / "bible12-small"),
        "samples": samples.replace(f"{ROOT}/", ""),  # what `lslo report` prints at the end of the demo
        "machine": machine(),
    }
    out = HERE / "results" / f"{args.name}.json"
    from lslo.io import write_json

    write_json(out, result)
    update_section("demo", render(json.loads((HERE / "results" / "demo.json").read_text(encoding="utf-8"))))
    print(f"wrote {out.relative_to(ROOT)} and the `demo` section of benchmarks/RESULTS.md")


def verdict(r: dict) -> tuple[str, dict[str, float], dict[str, float]]:
    """"clearly above" needs, on both metrics, a higher average and more improved than worse directions with a
    one-sided sign-test p < 0.05 (a score that moves on a few directions only is not a clear gain)."""
    gains = {m: r["scores"]["lslo"][m]["all"] - r["scores"]["base"][m]["all"] for m in ("spbleu", "chrf")}
    p = {m: sign_test(r["directions_improved"][m], r["directions_worse"][m]) for m in gains}
    clear = [m for m in gains if gains[m] > 0 and p[m] < ALPHA]
    if len(clear) == len(gains):
        return "clearly above", gains, p
    names = {"spbleu": "spBLEU", "chrf": "chrF++"}
    return ("NOT clearly above" + (f" (clearly above on {names[clear[0]]} only)" if clear else "")), gains, p


def render(r: dict) -> str:
    m = r["machine"]
    lines = [
        "## `make demo`: time and what it shows",
        "",
        f"Command: `{r['command'].strip()}` (= `{r['make']}` from scratch, timed by phase) · machine: {m['cpu']}, "
        f"{m['cpu_cores']} cores, torch {m['torch']} · {m['date']} · commit {m['git_commit']} · JSON: `benchmarks/results/demo.json`",
        "",
        f"Wall time: **{r['wall_s'] / 60:.1f} min** (target: 10). LSLo trained {r['train_steps']} steps"
        + (f" of <= {r['train_max_tokens']} tokens" if r.get("train_max_tokens") else "")
        + f" on the shipped base; both models evaluated on {r['directions']} directions x {r['settings']['max_sentences']} "
        + ("test verses, greedy" if r["settings"]["num_beams"] == 1 else f"test verses, beam {r['settings']['num_beams']}")
        + (f", {r['settings']['precision']} autocast." if r["settings"].get("precision", "fp32") != "fp32" else "."),
        "",
        "| phase | seconds |",
        "|---|---:|",
        *[f"| `{p['command'][:110]}` | {p['seconds']:.0f} |" for p in r["phases"]],
        "",
    ]
    for metric in ("spbleu", "chrf"):
        lines += [
            f"| {r['metric_names'][metric]} | " + " | ".join(GROUPS) + " |",
            "|---|" + "---:|" * len(GROUPS),
        ]
        for name in ("base", "lslo"):
            lines.append(f"| {name} | " + " | ".join(f"{r['scores'][name][metric][g]:.2f}" for g in GROUPS) + " |")
        lines.append("")
    lines.append(
        f"Directions where LSLo beats the base: {r['directions_improved']['spbleu']} of {r['directions']} (spBLEU), "
        f"{r['directions_improved']['chrf']} of {r['directions']} (chrF++)."
    )
    said, gains, p = verdict(r)
    lines += ["", f"Verdict: LSLo is **{said}** the base (all directions: spBLEU {gains['spbleu']:+.2f}, sign-test "
              f"p = {p['spbleu']:.2g}; chrF++ {gains['chrf']:+.2f}, p = {p['chrf']:.2g}; \"clearly\" = a higher average "
              f"and p < {ALPHA} on both)."]  # fmt: skip
    if r.get("base"):
        b = r["base"]
        lines.append(f"Base: {b['steps']:,} pretraining steps ({b['hours']} CPU hours), validation loss {b['valid_loss']:.3f}, "
                     f"greedy validation chrF++ {b['valid_chrf_greedy']}.")  # fmt: skip
    if r.get("samples"):
        lines += ["", "What `make demo` prints at its end (`lslo report`: one test verse of six directions across the "
                  "tiers; `docs/demo.png` is the change of every direction):", "", r["samples"].rstrip()]  # fmt: skip
    return "\n".join(lines + other_lengths())


def other_lengths(folder: Path | None = None) -> list[str]:
    """A table of the demos run with other settings (`--name demo-*`): what a shorter demo costs and shows."""
    runs = [(p.stem, json.loads(p.read_text(encoding="utf-8"))) for p in sorted((folder or HERE / "results").glob("demo-*.json"))]
    if not runs:
        return []
    lines = ["", "Other settings measured (`python benchmarks/demo_run.py --name NAME --make-args ...`; wall time from a "
             "clean clone where the phases include the install):", "",
             "| JSON | directions | steps x tokens | test verses | phases | wall (min) | spBLEU Δ | chrF++ Δ | verdict | date, commit |",
             "|---|---:|---|---:|---|---:|---:|---:|---|---|"]  # fmt: skip
    for name, r in runs:
        said, gains, _ = verdict(r)
        starts = [p["start_s"] for p in r["phases"] if " -m lslo.cli " in p["command"]]
        side = "base evaluated beside the training" if len(starts) != len({round(t) for t in starts}) else "one after another"
        lines.append(f"| `{name}.json` | {r['directions']} | {r['train_steps']} x {r.get('train_max_tokens')} | {r['settings']['max_sentences']} | {side} | "
                     f"{r['wall_s'] / 60:.1f} | {gains['spbleu']:+.2f} | {gains['chrf']:+.2f} | {said} | "
                     f"{r['machine']['date']}, {r['machine']['git_commit']} |")  # fmt: skip
    return lines


if __name__ == "__main__":
    main()
