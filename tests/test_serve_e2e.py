"""The real `lslo serve` on a loopback port, driven by a LibreTranslate client from PyPI and by raw HTTP.

One server (a subprocess) serves the whole module; the last test stops it with SIGTERM while requests are in
flight. Every wait is bounded."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("fastapi")
libretranslatepy = pytest.importorskip("libretranslatepy")

from test_serve import DIRS, TEXTS, adapter  # noqa: E402, F401 - the module-scoped tiny LSLo adapter

LONG = " ".join(["enbo enci endu enek enfa engi enho enja enku enlo enmi"] * 5)  # ~60 tokens: a slow row


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, body: bytes | None = None, ctype: str = "application/json", timeout: float = 60) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of one request."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype} if body is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null"), dict(r.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null"), dict(err.headers)


def post(url: str, payload: dict, timeout: float = 60) -> tuple[int, dict, dict]:
    return http(url + "/translate", json.dumps(payload).encode(), timeout=timeout)


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(found.group(1)) if found else float("nan")


class Server:
    """A `lslo serve` subprocess; `url` waits (once, at most 120 s) until its /health says ready."""

    def __init__(self, adapter_dir) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "lslo.cli", "serve", str(adapter_dir), "--port", str(self.port), "--beams", "2",
               "--threads", "1", "--max-queue-rows", "8", "--max-wait-ms", "20"]  # fmt: skip
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._ready = False

    @property
    def url(self) -> str:
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while not self._ready and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"lslo serve exited with {self.proc.returncode}: {self.proc.stdout.read()}")
            try:
                self._ready = http(url + "/health", timeout=2)[0] == 200
            except OSError:
                time.sleep(0.2)
        if not self._ready:
            pytest.fail("lslo serve did not get ready in 120 s")
        return url


@pytest.fixture(scope="module")
def server(adapter):  # noqa: F811
    srv = Server(adapter)  # it loads while the tests' own reference translations are computed
    yield srv
    if srv.proc.poll() is None:
        srv.proc.kill()
        srv.proc.wait(10)


@pytest.fixture(scope="module")
def alone(adapter, server):  # noqa: F811
    """What `lslo translate` (its library function, same settings) gives each of TEXTS alone."""
    import torch

    from lslo.evaluate import translate
    from lslo.loading import load_model

    model, tok, _ = load_model(str(adapter))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a busy machine: one thread is many times faster
    try:
        return {(t, s, g): translate(model.eval(), tok, [t], s, g, num_beams=2, progress=False)[0]
                for t, (s, g) in zip([*TEXTS, LONG], [*DIRS, ("en", "fr")], strict=True)}  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def test_libretranslate_client_gets_what_lslo_translate_gives(server, alone):
    url = server.url
    lt = libretranslatepy.LibreTranslateAPI(url)
    for text, (src, tgt) in zip(TEXTS, DIRS, strict=True):
        assert lt.translate(text, src, tgt, timeout=60) == alone[(text, src, tgt)]
    langs = lt.languages(timeout=10)
    assert {lang["code"]: lang["targets"] for lang in langs} == {"en": ["fr", "sw"], "fr": ["en", "sw"], "sw": ["en", "fr"]}
    assert [d["language"] for d in lt.detect("Au commencement, Dieu créa les cieux et la terre.", timeout=10)][:1] == ["fr"]


def test_mixed_directions_in_one_request_and_across_concurrent_requests_equal_each_alone(server, alone):
    url = server.url
    status, body, _ = post(url, {"q": TEXTS, "source": [s for s, _ in DIRS], "target": [t for _, t in DIRS]})
    assert status == 200 and body["translatedText"] == [alone[(t, s, g)] for t, (s, g) in zip(TEXTS, DIRS, strict=True)]
    rows_before, batches_before = metric(url, "lslo_rows_total"), metric(url, "lslo_batch_rows_count")
    results: dict[int, tuple] = {}

    def one(k: int) -> None:
        results[k] = post(url, {"q": TEXTS[k], "source": DIRS[k][0], "target": DIRS[k][1]})

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(TEXTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [results[k][1]["translatedText"] for k in range(len(TEXTS))] == [alone[(t, s, g)] for t, (s, g) in zip(TEXTS, DIRS, strict=True)]
    rows = metric(url, "lslo_rows_total") - rows_before
    batches = metric(url, "lslo_batch_rows_count") - batches_before
    assert rows == len(TEXTS) and batches < rows  # concurrent requests of different directions shared a batch


BAD = [
    (b"{nope", "application/json", "malformed JSON"),
    (json.dumps({"q": {"a": 1}, "source": "en", "target": "fr"}).encode(), "application/json", "q must be a string"),
    (json.dumps({"q": "", "source": "en", "target": "fr"}).encode(), "application/json", "missing q parameter"),
    (json.dumps({"q": "x" * 6000, "source": "en", "target": "fr"}).encode(), "application/json", "exceeds text limit"),
    (json.dumps({"q": "x", "source": "klingon", "target": "fr"}).encode(), "application/json", "klingon is not supported"),
    (json.dumps({"q": "x", "source": "de", "target": "fr"}).encode(), "application/json", "de is not supported"),
    (json.dumps({"q": "x", "source": "fra_Latn", "target": "fr"}).encode(), "application/json", "is not available as a target"),
    (json.dumps({"q": "<b>x</i>", "source": "en", "target": "fr", "format": "html"}).encode(), "application/json", "html does not parse"),
    (b"q=x&source=en&target=fr&alternatives=many", "application/x-www-form-urlencoded", "alternatives must be an integer"),
]


def test_bad_input_answers_json_errors_and_the_server_keeps_serving(server, alone):
    url, proc = server.url, server.proc
    for body, ctype, message in BAD:
        status, answer, _ = http(url + "/translate", body, ctype)
        assert status == 400 and message in answer["error"] and set(answer) == {"error"}, (message, answer)
    # A client that sends a request and goes away before the answer.
    port = int(url.rsplit(":", 1)[1])
    payload = json.dumps({"q": LONG, "source": "en", "target": "fr"}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # and one that cuts its body short
        s.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"q\"")
    status, body, _ = post(url, {"q": TEXTS[0], "source": "en", "target": "fr"})
    assert status == 200 and body["translatedText"] == alone[(TEXTS[0], "en", "fr")]
    assert proc.poll() is None


def test_a_full_queue_answers_429_with_retry_after(server):
    url = server.url
    done: list[tuple] = []
    slow = threading.Thread(target=lambda: done.append(post(url, {"q": [LONG] * 4, "source": "en", "target": "fr"})))
    slow.start()  # a batch that keeps the engine busy for a while
    t0 = time.monotonic()
    while metric(url, "lslo_queue_rows") != 0 or time.monotonic() - t0 < 0.3:
        time.sleep(0.05)
    queued = threading.Thread(target=lambda: done.append(post(url, {"q": ["enbo"] * 8, "source": "en", "target": "fr"})))
    queued.start()  # 8 rows: the whole queue
    while metric(url, "lslo_queue_rows") < 8 and time.monotonic() - t0 < 30:
        time.sleep(0.02)
    assert metric(url, "lslo_queue_rows") == 8, "the slow batch ended before the queue filled; make it slower"
    status, body, headers = post(url, {"q": "enbo", "source": "en", "target": "fr"})
    assert status == 429 and body["error"].startswith("Slowdown:") and int(headers["retry-after"]) >= 1
    slow.join(60)
    queued.join(60)
    assert sorted(d[0] for d in done) == [200, 200]  # nothing admitted was lost


def test_sigterm_finishes_the_requests_in_flight_then_exits(server, alone):
    url, proc = server.url, server.proc
    results: dict[int, tuple] = {}
    items = [(LONG, "en", "fr"), *((t, s, g) for t, (s, g) in zip(TEXTS, DIRS, strict=True))]

    def one(k: int) -> None:
        text, s, g = items[k]
        results[k] = post(url, {"q": text, "source": s, "target": g})

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(items))]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the requests are in (queued or running)
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    assert proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    assert [results[k][0] for k in range(len(items))] == [200] * len(items)
    assert [results[k][1]["translatedText"] for k in range(len(items))] == [alone[i] for i in items]
    with pytest.raises(OSError):
        http(url + "/health", timeout=2)
