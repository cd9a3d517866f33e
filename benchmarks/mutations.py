"""Mutation check: break the code on purpose, one claim at a time, and see that the tests fail.

    python benchmarks/mutations.py                  # every mutant, on a clone of the committed HEAD
    python benchmarks/mutations.py --only merge-scale unk-threshold
    python benchmarks/mutations.py --worktree       # include uncommitted changes (tracked files)

Each mutant names a claim (what the README or an issue says the code does), a source edit that breaks it, and
the tests that should catch it. The repository is cloned into a scratch folder; for each mutant the edit is
applied there, its tests run (`pytest -x`), and the edit reverted. A mutant is *caught* when pytest reports a
failing test (exit 1); an error (exit 2-4: the edit broke collection or pytest) counts as not caught, since a
suite that cannot run proves nothing. Exits 1 if any mutant survives, 2 if an edit no longer applies (the code
moved: update the mutant). Writes `benchmarks/results/mutations.json` and the `mutations` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as `python benchmarks/X.py`: see benchmarks/_bootstrap.py
    import _bootstrap  # noqa: F401
from benchmarks import results_md  # noqa: E402

OUT = results_md.HERE / "results" / "mutations.json"
ROOT = results_md.HERE.parent


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One deliberate bug: replace `old` by `new` in `file` (every occurrence when `every`, else exactly one)."""

    key: str
    claim: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    every: bool = False


MUTANTS = (
    Mutant("merge-scale", "a merged direction keeps the LoRA's alpha/rank scale (merged logits = unmerged)",
           "lslo/layer.py", "return (self.lora_B[:, s].float() @ self.lora_A[s].float()) * self.scales[lang]",
           "return (self.lora_B[:, s].float() @ self.lora_A[s].float())", ("tests/test_claims.py",)),
    Mutant("one-language-scale", "a batch of one language applies alpha/rank on the one-language path",
           "lslo/layer.py", "h = F.linear(x, lora_A[s].to(x.dtype)) * self.scales[single]",
           "h = F.linear(x, lora_A[s].to(x.dtype))", ("tests/test_claims.py",)),
    Mutant("mixed-scale", "a mixed-language batch applies each language's alpha/rank (dense and gathered paths)",
           "lslo/layer.py",
           "derived = dict(gates=gates, pad_index=pad_index, pad_gate=scales[:, None] * pad_valid, pad_valid=pad_valid)",
           "derived = dict(gates=(gates != 0).float(), pad_index=pad_index, pad_gate=pad_valid.float(), pad_valid=pad_valid)",
           ("tests/test_claims.py",)),
    Mutant("memo-never-cleared", "nothing of one no-grad call's routing (the gathered rows) outlives it",
           "lslo/routing.py", "self._memo.clear()", "pass  # mutant", ("tests/test_claims.py",), every=True),
    Mutant("plain-adamw", "`lslo train` of LSLo steps with LanguageAdamW (an unused language's weights stay exactly)",
           "lslo/run_setup.py", "        return LanguageAdamW(params, model, **kwargs)",
           "        return torch.optim.AdamW(params, **kwargs)", ("tests/test_claims.py", "-k", "adamw")),
    Mutant("out-dir-before-refusing", "a config with an unknown key is refused before anything is written",
           "lslo/run_config.py", "        known = [f.name for f in dataclasses.fields(cls)]",
           "        known = [f.name for f in dataclasses.fields(cls)]\n"
           "        __import__('pathlib').Path(data.get('out_dir', '.')).mkdir(parents=True, exist_ok=True)",
           ("tests/test_cli.py", "-k", "unknown_key")),
    Mutant("unk-threshold", "training stops when over half of a language's pieces are <unk>",
           "lslo/tokenizer.py", "max_share: float = 0.5)", "max_share: float = 0.6)", ("tests/test_claims.py", "-k", "unk")),
    Mutant("precision-not-recorded", "results.json records the --precision that generated the translations",
           "lslo/evaluate.py", '"precision": effective_precision(precision),', '"precision": "fp32",',
           ("tests/test_claims.py", "-k", "precision")),
    Mutant("no-lora-dropout", "LoRA dropout acts in training (and only there)",
           "lslo/layer.py", "self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()",
           "self.dropout = nn.Identity()", ("tests/test_claims.py", "-k", "dropout")),
    Mutant("base-not-frozen", "the base weights stay frozen: only the LoRAs train",
           "lslo/model.py", "    model.requires_grad_(False)\n", "\n", ("tests/test_core.py", "tests/test_claims.py")),
    Mutant("routes-ignored", "each layer routes by its configured side (src or tgt language)",
           "lslo/config.py", 'routes[i]) for pos in positions]', '"src") for pos in positions]',
           ("tests/test_core.py", "tests/test_claims.py")),
    Mutant("pruning-linear", "the pruned fraction follows the cubic schedule",
           "lslo/pruning.py", "(1.0 - (t - cfg.start) / cfg.duration) ** 3", "(1.0 - (t - cfg.start) / cfg.duration) ** 1",
           ("tests/test_pruning.py",)),
    Mutant("pruned-regrow", "pruned entries stay zero through training (the masks are applied after every step)",
           "lslo/pruning.py", "    for layer in _layers(model).values():\n        layer.apply_masks()\n",
           "    return\n", ("tests/test_pruning.py",)),
    Mutant("newlang-head-width", "a call whose targets are old languages gets exactly the base's logits",
           "lslo/extend/embeddings.py", "            width = self.added.width(stages)\n",
           "            width = len(self.added.row_stage)\n", ("tests/test_newlang.py",)),
    Mutant("newlang-old-stage-trains", "adding a language freezes the rows of the languages added before it",
           "lslo/extend/embeddings.py", "        for p in list(self.rows) + list(self.overrides):\n            p.requires_grad_(False)",
           "        for p in list(self.rows) + list(self.overrides):\n            p.requires_grad_(True)", ("tests/test_newlang.py",)),
    Mutant("serve-one-target", "`lslo serve` batches rows of different directions, each decoded into its own target",
           "lslo/serve/engine.py", "tgt_lang=[r.tgt for r in rows],", "tgt_lang=[rows[0].tgt for r in rows],",
           ("tests/test_serve.py", "-k", "engine")),
    Mutant("serve-row-order", "`lslo serve` answers each row of a batch with its own translation",
           "lslo/serve/engine.py", "for i in range(len(rows))]", "for i in reversed(range(len(rows)))]",
           ("tests/test_serve.py", "-k", "engine")),
    Mutant("resume-torch-rng", "a run killed mid-epoch resumes exactly as if never stopped (RNG state restored)",
           "lslo/run_folder.py", '    torch.set_rng_state(state["torch"])\n', "", ("tests/test_train.py", "-k", "sigkill")),
    Mutant("p-one-sided", "the claims' p is two-sided", "benchmarks/bible12/inference.py",
           "p = min(1.0, 2 * min(", "p = min(1.0, 1 * min(", ("tests/test_bench_inference.py",)),
    Mutant("no-bonferroni", "every claim's interval is corrected for the number of claims tested",
           "benchmarks/bible12/inference.py", "level=1 - (1 - LEVEL) / m)", "level=LEVEL)", ("tests/test_bench_inference.py",)),
    Mutant("no-target-effect", "the bootstrap resamples source and target languages (a direction's weight is both draws)",
           "benchmarks/bible12/inference.py", "weights = counts[:, src] * counts[:, tgt]", "weights = counts[:, src]",
           ("tests/test_bench_inference.py",)),
)


class MutantError(Exception):
    """A mutant's edit does not apply to the source any more."""


def mutate(text: str, m: Mutant) -> str:
    """`text` with `m`'s edit; MutantError when `old` is absent (or, for a one-place mutant, not unique)."""
    n = text.count(m.old)
    if n == 0 or (n > 1 and not m.every):
        raise MutantError(f"mutant {m.key}: its text occurs {n} times in {m.file} (want {'1 or more' if m.every else 'once'}); "
                          "the code moved: update the mutant in benchmarks/mutations.py")  # fmt: skip
    return text.replace(m.old, m.new)


def clone(tree: Path, worktree: bool, root: Path = ROOT) -> str:
    """Clone `root`'s HEAD into `tree` (plus its uncommitted tracked changes with `worktree`); the commit tested."""
    subprocess.run(["git", "clone", "-q", str(root), str(tree)], check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True, check=True).stdout.strip()
    if worktree:
        diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=root, capture_output=True, check=True).stdout
        if diff:
            subprocess.run(["git", "apply"], cwd=tree, input=diff, check=True)
            commit += "+worktree"
    return commit


def run_mutant(tree: Path, m: Mutant, python: str = sys.executable) -> dict[str, Any]:
    """Apply `m` in `tree`, run its tests, revert; what happened."""
    path = tree / m.file
    original = path.read_text(encoding="utf-8")
    path.write_text(mutate(original, m), encoding="utf-8")
    start = time.perf_counter()
    try:
        proc = subprocess.run([python, "-m", "pytest", "-x", "-q", "-p", "no:warnings", "-p", "no:cacheprovider", *m.tests],
                              cwd=tree, capture_output=True, text=True)  # fmt: skip
    finally:
        path.write_text(original, encoding="utf-8")
    failed = [line.split(" ")[1] for line in proc.stdout.splitlines() if line.startswith("FAILED ")]
    tail = [line for line in proc.stdout.splitlines() if line.strip()][-1:] or [proc.stderr.strip()[-200:]]
    return {"key": m.key, "claim": m.claim, "file": m.file, "tests": " ".join(m.tests), "exit": proc.returncode,
            "caught": proc.returncode == 1 and bool(failed), "failed_test": failed[0] if failed else None,
            "summary": tail[0], "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


def render(data: dict[str, Any]) -> str:
    m, rows = data["machine"], data["mutants"]
    caught = sum(r["caught"] for r in rows)
    return "\n".join([
        "## mutations: does the test suite catch a broken claim?", "",
        f"Command: `{data['command']}` · {m['cpu']}, {m['cpu_cores']} cores, torch {m['torch']} · {m['date']} · "
        f"tested tree: commit {data['commit']}", "",
        "Each mutant is a deliberate bug (`benchmarks/mutations.py`: the edit and the tests run against it), applied "
        "alone to a clone of the repository; *caught*: a test failed. "
        f"**{caught} of {len(rows)} caught.**", "",
        "| mutant | the claim it breaks | tests run | caught | first failing test | seconds |",
        "|---|---|---|---|---|---:|",
        *(f"| `{r['key']}` | {r['claim']} | `{r['tests']}` | {'yes' if r['caught'] else '**no** (exit ' + str(r['exit']) + ')'} | "
          f"{'`' + r['failed_test'] + '`' if r['failed_test'] else '–'} | {r['seconds']:.0f} |" for r in rows),
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", metavar="KEY", help=f"mutants to run (default: all): {', '.join(m.key for m in MUTANTS)}")
    ap.add_argument("--worktree", action="store_true", help="test the working tree's uncommitted changes too")
    ap.add_argument("--no-write", action="store_true", help="print only: no JSON, no RESULTS.md")
    opts = ap.parse_args(argv)
    known = {m.key: m for m in MUTANTS}
    unknown = [k for k in opts.only or () if k not in known]
    if unknown:
        print(f"mutations.py: error: --only {unknown[0]}: no such mutant; known: {', '.join(known)}", file=sys.stderr)
        return 2
    chosen = [known[k] for k in opts.only] if opts.only else list(MUTANTS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lslo-mutants-") as tmp:
        tree = Path(tmp) / "tree"
        commit = clone(tree, opts.worktree)
        for i, m in enumerate(chosen, 1):
            try:
                rows.append(run_mutant(tree, m))
            except MutantError as err:
                print(f"mutations.py: error: {err}", file=sys.stderr)
                return 2
            r = rows[-1]
            print(f"[{i}/{len(chosen)}] {m.key}: {'caught by ' + str(r['failed_test']) if r['caught'] else 'NOT CAUGHT (' + r['summary'] + ')'}"
                  f" ({r['seconds']:.0f} s)", flush=True)  # fmt: skip
    data = {"command": "python benchmarks/mutations.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": results_md.machine(), "commit": commit, "mutants": rows}  # fmt: skip
    if not opts.no_write:
        from lslo.io import write_json

        write_json(OUT, data)
        results_md.update_section("mutations", render(data))
    print(render(data))
    return 0 if all(r["caught"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
