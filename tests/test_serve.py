"""`lslo serve`, part by part: the engine (real tiny model), the scheduler (fake engine, fake clock) and the API
(fake engine and scheduler). The real server on a loopback port is `test_serve_e2e.py`."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import pytest

from lslo.errors import LsloError

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from lslo.serve.scheduler import Closed, DeadlineExceeded, Overloaded, Scheduler  # noqa: E402

# ----------------------------------------------------------------------------- the engine


@pytest.fixture(scope="module")
def adapter(world, tmp_path_factory):
    """A tiny LSLo adapter on disk (en, fr, sw) whose LoRAs change the translations."""
    import torch

    from lslo import LSLoConfig, add_lslo
    from lslo.loading import load_base
    from lslo.tokenizer import load_tokenizer

    out = tmp_path_factory.mktemp("serve") / "adapter"
    tok = load_tokenizer(str(world / "model"))
    model = add_lslo(load_base(str(world / "model")), LSLoConfig(languages={"en": "high", "fr": "high", "sw": "low"}), tok)
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in model.lslo_layers().values():
            layer.lora_B.normal_(0, 0.5)
    model.save_pretrained(out)
    return out


TEXTS = ["enbo enci", "frdu frek frfa frgi frho frja frku", "swa", "enbo enci endu enek enfa engi enho enja enku enlo"]
DIRS = [("en", "fr"), ("fr", "sw"), ("sw", "en"), ("en", "sw")]


def test_engine_mixed_batch_gives_each_row_what_lslo_translate_gives_it_alone(adapter, one_thread, capsys, tmp_path):
    from lslo.cli import main
    from lslo.serve.engine import load_engine

    engine = load_engine(str(adapter), num_beams=2)  # lslo translate's settings: beam 2 here, default lengths
    assert sorted(engine.languages) == ["en", "fr", "sw"] and engine.pairs()["en"] == ["fr", "sw"]
    rows = engine.encode(TEXTS, [s for s, _ in DIRS], [t for _, t in DIRS])
    # Per-row caps: each row stops at 2 x its own length + 10 (a batch of lslo translate stops at its longest's).
    assert [engine.cap(r) for r in rows] == [2 * r.tokens + 10 for r in rows] and len({engine.cap(r) for r in rows}) == 4
    mixed = [r[0] for r in engine.translate(rows)]
    for text, (src, tgt), got in zip(TEXTS, DIRS, mixed, strict=True):
        (tmp_path / "in.txt").write_text(text + "\n", encoding="utf-8")
        assert main(["translate", str(adapter), "--src", src, "--tgt", tgt, "--beams", "2", "--input", str(tmp_path / "in.txt")]) == 0
        assert capsys.readouterr().out == got + "\n"
    # The LoRAs act (the base translates otherwise), and alternatives come after the best, which is unchanged.
    base = load_engine(_base_dir(adapter), num_beams=2)
    only = load_engine(_base_dir(adapter), num_beams=2, languages=["fr", "en"])  # --languages: these, in this order
    assert only.languages == ["fr", "en"] and only.pairs() == {"fr": ["en"], "en": ["fr"]}
    with pytest.raises(LsloError, match=r"^--languages xx: the model has no such language; it holds "):
        load_engine(_base_dir(adapter), languages=["xx"])
    assert [r[0] for r in base.translate(base.encode(TEXTS, [s for s, _ in DIRS], [t for _, t in DIRS]))] != mixed
    alts = engine.translate(engine.encode(TEXTS[:2], ["en", "fr"], ["fr", "sw"], alternatives=1))
    assert [len(a) for a in alts] == [2, 2]
    with pytest.raises(ValueError, match="same number of alternatives"):
        engine.translate([rows[0], *engine.encode(["x"], ["en"], ["fr"], alternatives=1)])
    # One direction at a time with its LoRAs merged (the benchmark's `direction` server) translates the same.
    merged = load_engine(str(adapter), num_beams=2, merge=True)
    assert merged.merge and [merged.translate([r])[0][0] for r in rows] == mixed
    with pytest.raises(ValueError, match="one direction per call"):
        merged.translate(rows)


def _base_dir(adapter):
    import json

    return json.loads((adapter / "adapter_config.json").read_text())["base_model"]["name_or_path"]


# ----------------------------------------------------------------------------- the scheduler


@dataclass(frozen=True)
class FakeRow:
    text: str
    tokens: int = 3
    alternatives: int = 0


class FakeClock:
    """Time moves only when the scheduler waits: a wait for t seconds advances the clock by t (or until woken)."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def wait(self, event: asyncio.Event, timeout: float) -> None:
        await asyncio.sleep(0)
        if not event.is_set():
            self.t += timeout


class FakeEngine:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def __call__(self, rows):
        self.batches.append([r.text for r in rows])
        if any(r.text == "boom" for r in rows):
            raise RuntimeError("engine failed")
        return [r.text.upper() for r in rows]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_scheduler_pools_concurrent_requests_into_one_batch_in_request_order():
    async def main():
        engine = FakeEngine()
        s = Scheduler(engine, max_wait_s=0.05, clock=FakeClock())
        s.start()
        results = await asyncio.gather(s.submit([FakeRow("a"), FakeRow("b")]), s.submit([FakeRow("c")]), s.submit([FakeRow("d", 9)]))
        await s.close()
        return engine.batches, results, s.stats

    batches, results, stats = run(main())
    assert results == [["A", "B"], ["C"], ["D"]]
    assert batches == [["d", "a", "b", "c"]]  # one batch, sorted by length (longest first)
    assert stats.rows == 4 and stats.batches == [4]


def test_scheduler_cuts_batches_by_token_budget_rows_and_alternatives():
    async def main():
        engine = FakeEngine()
        s = Scheduler(engine, max_batch_tokens=20, max_batch_rows=3, max_wait_s=0.05, clock=FakeClock())
        s.start()
        rows = [FakeRow(f"r{i}", tokens=5) for i in range(5)] + [FakeRow("alt", 5, alternatives=2), FakeRow("long", 15)]
        out = await asyncio.gather(*(s.submit([r]) for r in rows))
        await s.close()
        return engine.batches, out

    batches, out = run(main())
    assert [o[0] for o in out] == ["R0", "R1", "R2", "R3", "R4", "ALT", "LONG"]
    assert all(len(b) <= 3 for b in batches) and ["alt"] in batches  # alternatives never share a batch with others
    assert ["long"] in batches  # 2 x 15 tokens > 20
    assert sorted(x for b in batches for x in b) == sorted(r for r in ["r0", "r1", "r2", "r3", "r4", "alt", "long"])


def test_scheduler_groups_rows_by_its_key():
    async def main():
        engine = FakeEngine()
        s = Scheduler(engine, max_wait_s=0.05, clock=FakeClock(), group=lambda r: r.text[0])
        s.start()
        out = await asyncio.gather(*(s.submit([FakeRow(x)]) for x in ["a1", "b1", "a2", "b2", "a3"]))
        await s.close()
        return engine.batches, out

    batches, out = run(main())
    assert [o[0] for o in out] == ["A1", "B1", "A2", "B2", "A3"]
    assert sorted(map(sorted, batches)) == [["a1", "a2", "a3"], ["b1", "b2"]]  # one batch per key, the oldest's first
    assert batches[0][0].startswith("a")


def test_scheduler_waits_for_more_rows_only_up_to_max_wait():
    async def main():
        engine = FakeEngine()
        clock = FakeClock()
        s = Scheduler(engine, max_wait_s=0.5, clock=clock)
        s.start()
        first = asyncio.ensure_future(s.submit([FakeRow("a")]))
        await first
        t_first = clock.t
        await s.close()
        return t_first, engine.batches

    t_first, batches = run(main())
    assert t_first == pytest.approx(0.5) and batches == [["a"]]  # it waited max_wait for company, then ran alone


def test_scheduler_refuses_when_the_queue_is_full_and_says_when_to_retry():
    async def main():
        engine = FakeEngine()
        s = Scheduler(engine, max_queue_rows=3, max_wait_s=10, clock=FakeClock())
        s.start()
        s.stats.rows_per_s = 2.0
        held = asyncio.ensure_future(s.submit([FakeRow("a"), FakeRow("b")]))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as err:
            await s.submit([FakeRow("c"), FakeRow("d")])
        ok = await s.submit([FakeRow("e")])  # still fits
        await held
        await s.close()
        with pytest.raises(Closed):
            await s.submit([FakeRow("f")])
        return err.value.retry_after, ok, engine.batches

    retry, ok, batches = run(main())
    assert retry == 1 and ok == ["E"] and sorted(batches[0]) == ["a", "b", "e"]


def test_scheduler_deadline_cancel_and_engine_errors_fail_only_their_requests():
    async def main():
        engine = FakeEngine()
        clock = FakeClock()
        s = Scheduler(engine, max_wait_s=5, timeout_s=1, clock=clock)
        s.start()
        late = asyncio.ensure_future(s.submit([FakeRow("late")]))
        with pytest.raises(DeadlineExceeded):
            await late  # waited 5 s for company with a deadline of 1 s
        gone = asyncio.ensure_future(s.submit([FakeRow("gone")], timeout_s=100))
        await asyncio.sleep(0)
        gone.cancel()  # the client went away: its row leaves the queue
        with pytest.raises(RuntimeError, match="engine failed"):
            await s.submit([FakeRow("boom")], timeout_s=100)
        after = await s.submit([FakeRow("after")], timeout_s=100)
        await s.close()
        return engine.batches, after

    batches, after = run(main())
    assert batches == [["boom"], ["after"]] and after == ["AFTER"]  # "late" and "gone" never ran


def test_scheduler_close_finishes_queued_rows():
    async def main():
        engine = FakeEngine()
        s = Scheduler(engine, max_wait_s=1000, clock=FakeClock(), max_batch_rows=2)
        s.start()
        pending = [asyncio.ensure_future(s.submit([FakeRow(x)])) for x in "abc"]
        await asyncio.sleep(0)
        await s.close()
        return await asyncio.gather(*pending), engine.batches

    results, batches = run(main())
    assert results == [["A"], ["B"], ["C"]] and len(batches) == 2


# ----------------------------------------------------------------------------- the API


class FakeApiEngine:
    """The engine's language interface over en, fr, de; rows are (src, tgt, text)."""

    languages = ["en", "fr", "de"]

    def pairs(self):
        return {s: [t for t in self.languages if t != s] for s in self.languages}

    def code(self, asked):
        from lslo.languages import same_language

        return next((c for c in self.languages if isinstance(asked, str) and same_language(c, asked)), None)

    @staticmethod
    def public_code(code):
        return code

    def encode(self, texts, srcs, tgts, alternatives=0):
        return [FakeRow(f"{s}>{t}:{x}", alternatives=alternatives) for x, s, t in zip(texts, srcs, tgts, strict=True)]


class FakeApiScheduler:
    def __init__(self, fail=None):
        self.fail, self.calls = fail, []

    def start(self):
        pass

    async def close(self):
        pass

    async def submit(self, rows, timeout_s=None):
        if self.fail:
            raise self.fail
        self.calls.append(rows)
        return [[f"<{r.text}>"] + [f"<{r.text}#{k}>" for k in range(r.alternatives)] for r in rows]


_DETECTOR = None


def wait_ready(c, status="ok"):
    import time

    for _ in range(500):  # at most ~10 s
        if c.get("/health").json()["status"] != "loading":
            break
        time.sleep(0.02)
    assert c.get("/health").json()["status"] == status
    return c


@contextlib.contextmanager
def client(scheduler=None, **limits):
    from fastapi.testclient import TestClient

    from lslo.serve.api import Limits, Service, create_app
    from lslo.serve.langid import LanguageDetector

    global _DETECTOR
    _DETECTOR = _DETECTOR or LanguageDetector(FakeApiEngine.languages)  # loading its model takes a second
    service = Service(lambda: (FakeApiEngine(), scheduler or FakeApiScheduler()), Limits(**limits),
                      detector=lambda e: _DETECTOR, warmup=False)  # fmt: skip
    with TestClient(create_app(service), raise_server_exceptions=False) as c:
        yield wait_ready(c)


def test_api_translates_strings_lists_forms_per_item_directions_and_alternatives():
    with client() as c:
        assert c.get("/health").json() == {"status": "ok"}
        assert c.post("/translate", json={"q": "hi", "source": "en", "target": "fr"}).json() == {"translatedText": "<en>fr:hi>"}
        r = c.post("/translate", data={"q": "hi", "source": "eng_Latn", "target": "deu"})  # form, other code styles
        assert r.json() == {"translatedText": "<en>de:hi>"}
        r = c.post("/translate", json={"q": ["a", "b"], "source": ["en", "de"], "target": ["fr", "en"], "alternatives": 2})
        assert r.json() == {"translatedText": ["<en>fr:a>", "<de>en:b>"],
                            "alternatives": [["<en>fr:a#0>", "<en>fr:a#1>"], ["<de>en:b#0>", "<de>en:b#1>"]]}  # fmt: skip
        r = c.post("/translate", json={"q": "Au commencement, Dieu créa les cieux et la terre.", "source": "auto", "target": "en"})
        body = r.json()
        assert body["translatedText"].startswith("<fr>en:") and body["detectedLanguage"]["language"] == "fr"
        assert 0 < body["detectedLanguage"]["confidence"] <= 100
        assert c.post("/detect", data={"q": "Im Anfang schuf Gott Himmel und Erde."}).json()[0]["language"] == "de"
        r = c.post("/translate", json={"q": '<p class="x">Hello <b>world</b><br> </p><script>var a;</script>', "source": "en",
                                       "target": "fr", "format": "html"})  # fmt: skip
        want = '<p class="x">&lt;en&gt;fr:Hello&gt; <b>&lt;en&gt;fr:world&gt;</b><br> </p><script>var a;</script>'
        assert r.json() == {"translatedText": want}  # text nodes translated (and escaped), markup and script kept
        langs = c.get("/languages").json()
        assert langs[0] == {"code": "en", "name": "English", "targets": ["fr", "de"]} and len(langs) == 3
        settings = c.get("/frontend/settings").json()
        assert settings["charLimit"] == 5000 and settings["language"]["source"]["code"] == "auto"
        assert "lslo_request_seconds" in c.get("/metrics").text


BAD = [
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "malformed JSON"),
    ({"json": ["q", "x"]}, 400, "Invalid JSON format"),
    ({"json": {"source": "en", "target": "fr"}}, 400, "missing q parameter"),
    ({"json": {"q": "", "source": "en", "target": "fr"}}, 400, "missing q parameter"),
    ({"json": {"q": 5, "source": "en", "target": "fr"}}, 400, "q must be a string or a list of strings"),
    ({"json": {"q": ["a", 1], "source": "en", "target": "fr"}}, 400, "q must be a string"),
    ({"json": {"q": "x" * 5001, "source": "en", "target": "fr"}}, 400, r"request \(5001\) exceeds text limit \(5000\)"),
    ({"json": {"q": ["x"] * 129, "source": "en", "target": "fr"}}, 400, r"request \(129\) exceeds text limit \(128\)"),
    ({"content": b'{"q": "' + b"x" * 200_000 + b'"}', "headers": {"content-type": "application/json"}}, 400, "exceeds the limit"),
    ({"content": b"q=" + b"x" * 200_000, "headers": {"content-type": "application/x-www-form-urlencoded"}}, 400, "exceeds the limit"),
    ({"json": {"q": "x", "target": "fr"}}, 400, "missing source parameter"),
    ({"json": {"q": "x", "source": "en"}}, 400, "missing target parameter"),
    ({"json": {"q": "x", "source": 3, "target": "fr"}}, 400, "source must be a language code"),
    ({"json": {"q": "x", "source": "xx", "target": "fr"}}, 400, "^xx is not supported$"),
    ({"json": {"q": "x", "source": "en", "target": "ja"}}, 400, "^ja is not supported$"),
    ({"json": {"q": "x", "source": "en", "target": "eng_Latn"}}, 400, r"English \(en\) is not available as a target language from English \(en\)"),
    ({"json": {"q": ["a", "b"], "source": ["en"], "target": "fr"}}, 400, "source has 1 codes for 2 texts"),
    ({"json": {"q": "x", "source": "en", "target": "fr", "format": "pdf"}}, 400, "pdf format is not supported"),
    ({"json": {"q": "<p>x</b>", "source": "en", "target": "fr", "format": "html"}}, 400, "html does not parse"),
    ({"json": {"q": "<p>x", "source": "en", "target": "fr", "format": "html"}}, 400, "html does not parse"),
    ({"json": {"q": "x", "source": "en", "target": "fr", "alternatives": "two"}}, 400, "alternatives must be an integer"),
    ({"json": {"q": "x", "source": "en", "target": "fr", "alternatives": 9}}, 400, "alternatives must be between 0 and 3"),
]


@pytest.mark.parametrize("kwargs, status, message", BAD, ids=[m for _, _, m in BAD])
def test_api_bad_input_answers_one_json_error_and_the_server_goes_on(kwargs, status, message):
    import re

    scheduler = FakeApiScheduler()
    with client(scheduler) as c:
        r = c.post("/translate", **kwargs)
        assert r.status_code == status and re.search(message, r.json()["error"]), r.text
        assert set(r.json()) == {"error"} and "Traceback" not in r.text
        assert scheduler.calls == []  # nothing bad reached the scheduler
        assert c.post("/translate", json={"q": "ok", "source": "en", "target": "fr"}).status_code == 200


def test_api_keys_overload_shutdown_and_unknown_routes():
    with client(api_keys=frozenset({"k1"})) as c:
        r = c.post("/translate", json={"q": "x", "source": "en", "target": "fr"})
        assert r.status_code == 403 and "API key" in r.json()["error"]
        r = c.post("/translate", json={"q": "x", "source": "en", "target": "fr", "api_key": "bad"})
        assert r.status_code == 403 and r.json() == {"error": "Invalid API key"}
        assert c.post("/translate", data={"q": "x", "source": "en", "target": "fr", "api_key": "k1"}).status_code == 200
        assert c.get("/nope").json() == {"error": "Not Found"}
        chunked = c.post("/translate", content=iter([b"q=", b"x" * 200_000]), headers={"content-type": "application/x-www-form-urlencoded"})
        assert chunked.status_code == 400 and "exceeds the limit" in chunked.json()["error"]  # no length given: read up to the limit
    with client(FakeApiScheduler(fail=Overloaded(7))) as c:
        r = c.post("/translate", json={"q": "x", "source": "en", "target": "fr"})
        assert r.status_code == 429 and r.headers["retry-after"] == "7" and r.json()["error"].startswith("Slowdown:")
    with client(FakeApiScheduler(fail=Closed())) as c:
        r = c.post("/translate", json={"q": "x", "source": "en", "target": "fr"})
        assert r.status_code == 503 and "shutting down" in r.json()["error"]
    with client(FakeApiScheduler(fail=RuntimeError("kaput\nline two"))) as c:
        r = c.post("/translate", json={"q": "x", "source": "en", "target": "fr"})
        assert r.status_code == 500 and r.json() == {"error": "Cannot translate text: RuntimeError: kaput"}


def test_api_is_not_ready_until_loaded():
    from fastapi.testclient import TestClient

    from lslo.serve.api import Limits, Service, create_app

    def load():
        raise OSError("no weights here")

    with TestClient(create_app(Service(load, Limits(), warmup=False))) as c:
        r = wait_ready(c, "failed").get("/health")
        assert r.status_code == 503 and r.json() == {"status": "failed", "error": "OSError: no weights here"}
        r = c.post("/translate", json={"q": "x", "source": "en", "target": "fr"})
        assert r.status_code == 503 and "failed to load" in r.json()["error"]


def test_engine_serves_a_ctranslate2_export_of_one_direction(adapter, one_thread, tmp_path):
    pytest.importorskip("ctranslate2")
    from lslo.cli import main
    from lslo.evaluate import translate
    from lslo.loading import load_model
    from lslo.serve.engine import load_engine

    out = tmp_path / "ct2"
    assert main(["export", str(adapter), "--merge", "en-fr", "--format", "ctranslate2", "--out", str(out)]) == 0
    engine = load_engine(str(out), num_beams=1, max_new_tokens=12)
    assert engine.pairs() == {"en": ["fr"]} and engine.plain_decoder
    got = [r[0] for r in engine.translate(engine.encode(TEXTS[:1] + TEXTS[3:], ["en", "en"], ["fr", "fr"]))]
    model, tok, _ = load_model(str(out))
    assert got == translate(model, tok, [TEXTS[0], TEXTS[3]], "en", "fr", num_beams=1, max_new_tokens=12, progress=False)


@pytest.mark.parametrize("argv, message", [
    (["--port", "0"], "--port 0: give a port between 1 and 65535"),
    (["--max-batch-rows", "0"], "--max-batch-rows 0: give a number above 0"),
    (["--max-wait-ms", "-1"], "--max-wait-ms -1.0: give 0 or more"),
])  # fmt: skip
def test_serve_flags_are_checked_before_anything_loads(argv, message, capsys, tmp_path):
    from lslo.cli import main

    assert main(["serve", str(tmp_path / "no-model"), *argv]) == 2
    assert capsys.readouterr().err.strip() == f"lslo: error: {message}"


def test_serve_a_missing_model_is_a_one_line_error(capsys, tmp_path):
    from lslo.cli import main

    assert main(["serve", str(tmp_path / "no-model")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lslo: error: base model") and "no such model directory" in err and "\n" not in err
