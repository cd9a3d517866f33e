"""The `lslo` command line on bad input: one line naming the file/flag, exit 2, no traceback, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lslo.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lslo: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def folder(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def test_missing_data_path(capsys, tmp_path):
    code, _, err = run(capsys, "data", "info", str(tmp_path / "nowhere"))
    assert_one_line_error(code, err, f"{tmp_path / 'nowhere'}: no such file or directory; check the data path")


def test_mismatched_line_counts_name_the_file(capsys, tmp_path):
    d = folder(tmp_path / "d", {"en.txt": "a\nb\nc\n", "fr.txt": "x\ny\n"})
    code, _, err = run(capsys, "data", "info", str(d))
    assert_one_line_error(code, err, "fr.txt: 2 lines but en.txt has 3")


def test_empty_line_is_reported_with_its_line_number(capsys, tmp_path):
    d = folder(tmp_path / "d", {"en.txt": "a\n\nc\n", "fr.txt": "x\ny\nz\n"})
    code, _, err = run(capsys, "data", "info", str(d))
    assert_one_line_error(code, err, "en.txt:2: empty line")


def test_empty_data(capsys, tmp_path):
    d = folder(tmp_path / "d", {"en.txt": "", "fr.txt": ""})
    code, _, err = run(capsys, "data", "info", str(d))
    assert_one_line_error(code, err, "en.txt: the file has no sentences")


def test_data_info_of_a_folder_of_splits_shows_every_split(capsys, tmp_path):
    import json

    folder(tmp_path / "d" / "train", {"en.txt": "a\nb\nc\n", "fr.txt": "x\ny\nz\n", "de.txt": "1\n2\n3\n"})
    folder(tmp_path / "d" / "valid", {"en.txt": "a\n", "fr.txt": "x\n"})
    code, out, _ = run(capsys, "data", "info", str(tmp_path / "d"))
    assert code == 0 and json.loads(out) == {
        "train": {"languages": ["de", "en", "fr"], "sentences": {"de": 3, "en": 3, "fr": 3}, "directions": 6},
        "valid": {"languages": ["en", "fr"], "sentences": {"en": 1, "fr": 1}, "directions": 2}}  # fmt: skip
    code, out, _ = run(capsys, "data", "info", str(tmp_path / "d"), "--split", "valid")
    assert code == 0 and json.loads(out)["sentences"] == {"en": 1, "fr": 1}
    code, _, err = run(capsys, "data", "info", str(tmp_path / "d"), "--split", "test")
    assert_one_line_error(code, err, "test", "train, valid")
    folder(tmp_path / "d" / "broken", {"en.txt": "a\nb\n", "fr.txt": "x\n"})  # one bad split: its error, one line
    code, _, err = run(capsys, "data", "info", str(tmp_path / "d"))
    assert_one_line_error(code, err, "broken")


def test_unknown_language_code(capsys, tmp_path):
    d = folder(tmp_path / "d", {"en.txt": "a\n", "fr.txt": "b\n"})
    code, _, err = run(capsys, "data", "info", str(d), "--languages", "en", "qq_Zzzz")
    assert_one_line_error(code, err, "unknown language code(s) 'qq_Zzzz'")


def test_bad_yaml_and_unknown_key_and_missing_config(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `out_dir: o` resolves against the working directory: make that tmp_path
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    code, _, err = run(capsys, "train", str(bad))
    assert_one_line_error(code, err, "bad.yaml: not valid YAML")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("data: d\nbase_model: b\nout_dir: o\nmax_steps: 1\nlearning_rat: 0.1\n")
    code, _, err = run(capsys, "train", str(unknown))
    assert_one_line_error(code, err, "unknown key 'learning_rat'; known keys: data, base_model, out_dir")
    code, _, err = run(capsys, "train", str(tmp_path / "none.yaml"))
    assert_one_line_error(code, err, "none.yaml: no such file")
    assert sorted(tmp_path.iterdir()) == sorted([bad, unknown])  # no `o`, nor anything else


def test_unknown_option_and_bad_override(capsys, tmp_path):
    code, _, err = run(capsys, "train", "x.yaml", "--bogus")
    assert_one_line_error(code, err, "unrecognized arguments: --bogus")
    code, _, err = run(capsys, "train", "x.yaml", "--set", "lr")
    assert_one_line_error(code, err, "--set 'lr': write key=value")


def test_checkpoint_of_another_architecture(capsys, tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(tmp_path / "bert")
    d = folder(tmp_path / "d" / "test", {"en.txt": "a\n", "fr.txt": "b\n"}).parent
    out = tmp_path / "eval"
    code, _, err = run(capsys, "eval", str(tmp_path / "bert"), "--data", str(d), "--out", str(out))
    assert_one_line_error(code, err, "bert", "m2m_100")
    assert not out.exists()


def test_missing_local_model_does_not_go_to_the_hub(capsys, tmp_path):
    d = folder(tmp_path / "d" / "test", {"en.txt": "a\n", "fr.txt": "b\n"}).parent
    code, _, err = run(capsys, "eval", str(tmp_path / "no-model"), "--data", str(d), "--out", str(tmp_path / "e"))
    assert_one_line_error(code, err, "no-model")


def test_fp16_generation_without_a_gpu(capsys, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    for argv in (["eval", str(tmp_path / "m"), "--data", str(tmp_path / "d"), "--out", str(out)],
                 ["translate", str(tmp_path / "m"), "--src", "en", "--tgt", "fr", "--output", str(out)]):  # fmt: skip
        code, _, err = run(capsys, *argv, "--precision", "fp16")
        assert_one_line_error(code, err, "precision=fp16", "bf16 or fp32")
        assert not out.exists()


def test_process_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lslo.cli", "data", "info", str(tmp_path / "missing")], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["eval", "--help"], ["data", "bible", "--help"]])
def test_help_works(argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0


def test_hub_retry_warnings_do_not_precede_the_one_line_error(monkeypatch):
    """A hub id that cannot be reached: huggingface_hub logs a warning per retry ("'...' thrown while requesting HEAD
    ...") before lslo's own one-line error; the command line keeps them out unless HF_HUB_VERBOSITY asks for them."""
    import logging

    from huggingface_hub.utils import logging as hub_logging

    from lslo.cli import _quiet_transformers

    http = hub_logging.get_logger("huggingface_hub.utils._http")  # the logger of those warnings
    try:
        hub_logging.set_verbosity_warning()
        assert http.isEnabledFor(logging.WARNING)
        monkeypatch.delenv("HF_HUB_VERBOSITY", raising=False)
        _quiet_transformers()
        assert not http.isEnabledFor(logging.WARNING) and http.isEnabledFor(logging.ERROR)
        hub_logging.set_verbosity_warning()
        monkeypatch.setenv("HF_HUB_VERBOSITY", "warning")
        _quiet_transformers()  # the user's setting wins
        assert http.isEnabledFor(logging.WARNING)
    finally:
        hub_logging.set_verbosity_warning()


def test_eval_prints_the_byte_level_spbleu_warning(capsys, tmp_path, monkeypatch):
    """`lslo eval` puts each results.json warning on stderr, one line each, and still exits 0."""
    import lslo.data.readers
    import lslo.evaluate
    import lslo.loading

    class Model:
        def eval(self) -> None:
            pass

    warning = "spBLEU into hi: 90% of its reference pieces are bytes under spBLEU[tok=x spm] (...)"

    def fake_evaluate(model, tokenizer, corpus, out_dir, **kw):
        folder(Path(out_dir), {"tiers.md": "| tiers |\n"})
        return {"warnings": [warning]}

    monkeypatch.setattr(lslo.loading, "load_model", lambda *a, **k: (Model(), None, {}))
    monkeypatch.setattr(lslo.data.readers, "read_corpus", lambda *a, **k: None)
    monkeypatch.setattr(lslo.evaluate, "evaluate", fake_evaluate)
    code, out, err = run(capsys, "eval", str(tmp_path / "m"), "--data", str(tmp_path / "d"), "--out", str(tmp_path / "e"))
    assert code == 0 and "| tiers |" in out
    assert err.strip().splitlines() == [f"lslo: warning: {warning}"]
