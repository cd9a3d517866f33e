"""End to end through the `lslo` command line: train -> eval -> translate -> export -> report."""

from __future__ import annotations

import json

import torch
import yaml
from transformers import M2M100ForConditionalGeneration

from lslo.cli import main


def test_cli_pipeline(world, tmp_path, capsys):
    cfg = {
        "data": str(world / "data"), "base_model": str(world / "model"), "out_dir": str(tmp_path / "run"),
        "method": "lslo", "languages": {"en": "high", "fr": "high", "sw": "low"}, "max_steps": 4, "max_tokens": 96,
        "max_len": 24, "warmup_steps": 2, "lr": 3e-3, "save_every": 2, "eval_every": 4, "progress": False,
        "lslo": {"encoder_routing": "src*1,tgt*1"},
    }  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "run.yaml")]) == 0
    # The same out_dir with a different config is refused, and nothing there changes.
    before = (tmp_path / "run" / "run.json").read_text()
    assert main(["train", str(tmp_path / "run.yaml"), "--set", "lr=0.01"]) == 2
    assert "lr" in capsys.readouterr().err
    assert (tmp_path / "run" / "run.json").read_text() == before

    ev = tmp_path / "eval"
    assert main(["eval", str(tmp_path / "run"), "--data", str(world / "data"), "--split", "valid", "--out", str(ev),
                 "--max-sentences", "3", "--beams", "2", "--no-progress"]) == 0  # fmt: skip
    results = json.loads((ev / "results.json").read_text())
    assert len(results["directions"]) == 6  # 3 languages -> 6 directions
    base_ev = tmp_path / "eval-base"
    assert main(["eval", str(world / "model"), "--data", str(world / "data"), "--split", "valid", "--out", str(base_ev),
                 "--languages", "en", "fr", "sw", "--max-sentences", "3", "--beams", "2", "--no-progress"]) == 0  # fmt: skip
    assert main(["report", str(base_ev), str(ev), "--names", "base", "lslo"]) == 0
    assert "lslo" in capsys.readouterr().out

    (tmp_path / "in.txt").write_text("ena bo\nenci du ek\n")
    assert main(["translate", str(tmp_path / "run"), "--src", "en", "--tgt", "sw", "--input", str(tmp_path / "in.txt"),
                 "--output", str(tmp_path / "out.txt"), "--beams", "2"]) == 0  # fmt: skip
    assert len((tmp_path / "out.txt").read_text().splitlines()) == 2

    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "adapter")]) == 0
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "merged"), "--merge", "en-sw"]) == 0
    merged = M2M100ForConditionalGeneration.from_pretrained(tmp_path / "merged")
    # eval --merge (one direction per batch, its LoRAs folded in) translates en-sw exactly as the exported
    # merged en-sw model does; mixed batches may differ from it by float rounding only.
    assert main(["eval", str(tmp_path / "run"), "--data", str(world / "data"), "--split", "valid", "--out",
                 str(tmp_path / "eval-merged"), "--max-sentences", "3", "--beams", "2", "--no-progress", "--merge"]) == 0  # fmt: skip
    assert main(["eval", str(tmp_path / "merged"), "--data", str(world / "data"), "--split", "valid", "--out",
                 str(tmp_path / "eval-plain"), "--directions", "en-sw", "--max-sentences", "3", "--beams", "2", "--no-progress"]) == 0  # fmt: skip
    merged_results = json.loads((tmp_path / "eval-merged" / "results.json").read_text())
    assert merged_results["settings"]["merged_per_direction"] and not results["settings"]["merged_per_direction"]
    hyp = "directions/en-sw/hyp.txt"
    assert (tmp_path / "eval-merged" / hyp).read_text() == (tmp_path / "eval-plain" / hyp).read_text()
    capsys.readouterr()
    assert main(["eval", str(world / "model"), "--data", str(world / "data"), "--split", "valid", "--out", str(tmp_path / "e2"), "--merge"]) == 2
    assert "--merge" in capsys.readouterr().err and not (tmp_path / "e2").exists()
    from lslo.loading import load_model

    model, tok, _ = load_model(str(tmp_path / "adapter"))
    batch = tok(["ena bo"], return_tensors="pt")
    dec = torch.tensor([[2, tok.convert_tokens_to_ids("__sw__")]])
    want = model.eval()(**batch, decoder_input_ids=dec, src_lang="en", tgt_lang="sw").logits
    torch.testing.assert_close(merged.eval()(**batch, decoder_input_ids=dec).logits, want, rtol=1e-4, atol=1e-4)


def test_cli_pruned_run_subspace_report_compact_export_and_search(world, tmp_path, capsys):
    cfg = {
        "data": str(world / "data"), "base_model": str(world / "model"), "out_dir": str(tmp_path / "run"),
        "method": "lslo", "languages": {"en": "high", "fr": "high", "sw": "low"}, "max_steps": 4, "max_tokens": 96,
        "max_len": 24, "warmup_steps": 2, "lr": 3e-3, "progress": False, "valid_split": None,
        "lslo": {"encoder_routing": "src*1,tgt*1"},
    }  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "run.yaml"), "--prune-scope", "layer"]) == 2
    assert "--prune-scope: needs --prune R" in capsys.readouterr().err and not (tmp_path / "run").exists()
    flags = ["--prune", "0.9", "--prune-start", "1", "--prune-duration", "2", "--prune-unit", "step", "--prune-every", "1",
             "--prune-scope", "layer"]  # fmt: skip
    assert main(["train", str(tmp_path / "run.yaml"), *flags]) == 0
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())["prune"]
    assert recorded == {"ratio": 0.9, "start": 1, "duration": 2, "unit": "step", "every": 1, "scope": "layer"}
    capsys.readouterr()
    assert main(["report", "--subspace", str(tmp_path / "run"), "--out", str(tmp_path / "sub")]) == 0
    sub = json.loads((tmp_path / "sub" / "subspace.json").read_text())
    shares = [r["share"] for r in sub["subspace"]["positions"]]
    assert all(abs(share - 0.1) < 0.02 for share in shares)  # layer scope: every LSLo linear keeps 10% of B
    assert (tmp_path / "sub" / "subspace.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "compact"), "--compact"]) == 0
    from lslo.loading import load_model
    from lslo.subspace import load_compact

    model, tok, _ = load_model(str(tmp_path / "run"))
    again = load_compact(M2M100ForConditionalGeneration.from_pretrained(world / "model"), tmp_path / "compact")
    batch = tok(["ena bo"], return_tensors="pt")
    kw = dict(decoder_input_ids=torch.tensor([[2, 5]]), src_lang="sw", tgt_lang="en")
    assert torch.equal(model.eval()(**batch, **kw).logits, again.eval()(**batch, **kw).logits)

    (tmp_path / "search.yaml").write_text(yaml.safe_dump({**cfg, "out_dir": str(tmp_path / "unused")}))
    assert main(["search", "routing", str(tmp_path / "search.yaml"), "--steps", "3", "--out", str(tmp_path / "routing")]) == 0
    routed = json.loads((tmp_path / "routing" / "lslo_config.json").read_text())
    from lslo.config import parse_routing

    assert len(parse_routing(routed["encoder_routing"], 2, "encoder_routing")) == 2
    assert (tmp_path / "routing" / "routing.png").is_file()
    assert main(["search", "placement", str(tmp_path / "search.yaml"), "--steps", "3", "--out", str(tmp_path / "place")]) == 0
    assert (tmp_path / "place" / "placement.json").is_file()
    assert not (tmp_path / "unused").exists()  # a search writes only its --out folder
