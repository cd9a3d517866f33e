"""Load on `lslo serve` over loopback: mixed-direction batching against one direction at a time, one text at a
time and the base model, with the share of mixed directions from 1 to all 132 of bible12.

    nice -n 10 python benchmarks/serve_load.py            # needs data/bible12 (`make data`) and the serve extra

The model: the shipped base (base/bible12-small) under an *untrained* LSLo wrapper (bible12 tiers, ranks
2/2/8, the paper's routing) whose B matrices are drawn from N(0, `--b-std`), so every row really pays for its
routed LoRA term (an untrained LSLo has B = 0 and translates exactly as its base; the translations here are
not meant to be good). Four real servers run as subprocesses on 127.0.0.1, each with `--threads` torch threads:

- `mixed`:     `lslo serve ADAPTER`: rows of concurrent requests share batches whatever their directions;
- `direction`: `lslo serve ADAPTER --batching direction`: one direction per batch, that direction's LoRAs
               folded into the weights for the batch (what peft-style serving does: group, swap/merge, run);
- `single`:    `lslo serve ADAPTER --batching single`: one text per generate call (LibreTranslate's loop);
- `base`:      `lslo serve BASE`: the base model alone, mixed batches, no LoRA (the ceiling).

Every request carries one text (as a LibreTranslate client sends it): a random test verse in a random direction
of the first K of the 132 directions (shuffled with a fixed seed). Two phases:

1. sustainable throughput: `--clients` closed-loop clients for `--duration` seconds per (server, K) cell,
   cells interleaved; sentences/s and source tokens/s (from the server's own counters);
2. offered load: Poisson arrivals (open loop) at fractions of `mixed`'s sustainable rate at K = 132, against
   `mixed`, `direction` and `single`, up to 2x: p50/p95/p99 latency of admitted requests, 429s, errors and
   requests still unanswered after the client timeout (hung). At 2x, the claim checked: p99 of admitted
   requests under `--p99-bound` seconds, the rest answered 429, none lost or hung.

The CPU is shared with other work: the JSON records the load average around every cell, and only ratios
within this run mean anything. Writes benchmarks/results/serve_load.json and the `serve-load` section of
RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

if not __package__:  # run as `python benchmarks/X.py`: see benchmarks/_bootstrap.py
    import _bootstrap  # noqa: F401
from benchmarks.results_md import HERE, machine, update_section  # noqa: E402
from lslo.io import write_json  # noqa: E402

ROOT = HERE.parent
BIBLE12 = ["en", "fr", "it", "de", "zh", "ja", "ko", "ru", "sw", "tl", "fa", "vi"]


def build_adapter(base: str, out: Path, b_std: float) -> None:
    """An untrained LSLo wrapper of `base` with B ~ N(0, b_std), saved as an adapter folder."""
    import torch

    from lslo import LSLoConfig, add_lslo
    from lslo.languages import BIBLE12_TIERS
    from lslo.loading import load_base, load_tokenizer

    tok = load_tokenizer(base)
    model = add_lslo(load_base(base), LSLoConfig(languages=dict(BIBLE12_TIERS)), tok)
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in model.lslo_layers().values():
            layer.lora_B.normal_(0, b_std)
    model.save_pretrained(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, extra: list[str], args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "lslo.cli", "serve", model, "--port", str(port), "--threads", str(args.threads),
           "--beams", str(args.beams), "--max-new-tokens", str(args.max_new_tokens), "--max-queue-rows", str(args.max_queue_rows), "--timeout", str(args.p99_bound * 2),
           *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    return proc, f"http://127.0.0.1:{port}"


async def wait_ready(client, url: str, proc: subprocess.Popen, limit: float = 300) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"serve_load: the server for {url} exited with {proc.returncode}")
        try:
            if (await client.get(url + "/health", timeout=2)).status_code == 200:
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        await asyncio.sleep(0.5)
    raise SystemExit(f"serve_load: {url} not ready after {limit} s")


async def counters(client, url: str) -> dict[str, float]:
    text = (await client.get(url + "/metrics", timeout=10)).text
    out = {}
    for name in ("lslo_rows_total", "lslo_source_tokens_total", "lslo_batch_rows_sum", "lslo_batch_rows_count"):
        m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
        out[name] = float(m.group(1)) if m else 0.0
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q / 100 * (len(v) - 1))))]


class Requests:
    """Random requests: a test verse in a random direction of the first `k` shuffled directions."""

    def __init__(self, data: Path, max_chars: int, seed: int = 0) -> None:
        from lslo.data.corpus import load_multiway

        corpus = load_multiway(data, split="test")
        self.text = {lang: [t for t in corpus.sentences(lang) if len(t) <= max_chars] for lang in BIBLE12}
        self.directions = [(s, t) for s in BIBLE12 for t in BIBLE12 if s != t]
        random.Random(seed).shuffle(self.directions)

    def stream(self, k: int, seed: int):
        rng = random.Random(seed)
        while True:
            s, t = self.directions[rng.randrange(k)]
            yield {"q": rng.choice(self.text[s]), "source": s, "target": t}


async def one(client, url: str, payload: dict, timeout: float) -> tuple[str, float]:
    t0 = time.perf_counter()
    try:
        r = await client.post(url + "/translate", json=payload, timeout=timeout)
        status = str(r.status_code)
    except Exception as err:  # noqa: BLE001 - a timeout is a hung request; anything else an error
        status = "hung" if "Timeout" in type(err).__name__ else "error"
    return status, time.perf_counter() - t0


async def closed_loop(client, url: str, reqs: Requests, k: int, clients: int, duration: float, timeout: float) -> dict:
    """`clients` clients, each sending its next request when the last is answered, for `duration` seconds."""
    before = await counters(client, url)
    load0 = os.getloadavg()[0]
    stream = reqs.stream(k, seed=k)
    done: list[tuple[str, float, float]] = []
    t0 = time.perf_counter()
    end = t0 + duration

    async def worker() -> None:
        while time.perf_counter() < end:
            status, latency = await one(client, url, next(stream), timeout)
            done.append((status, latency, time.perf_counter()))

    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - t0
    after = await counters(client, url)
    ok = [d for d in done if d[0] == "200"]
    rows = after["lslo_rows_total"] - before["lslo_rows_total"]
    tokens = after["lslo_source_tokens_total"] - before["lslo_source_tokens_total"]
    batches = after["lslo_batch_rows_count"] - before["lslo_batch_rows_count"]
    return {
        "k": k, "clients": clients, "duration_s": duration, "wall_s": round(wall, 2),
        "sentences_per_s": round(len(ok) / wall, 3),  # clients stop sending at `duration`; wall includes the drain
        "source_tokens_per_s": round(len(ok) / wall * (tokens / rows if rows else 0), 1),
        "mean_batch_rows": round((after["lslo_batch_rows_sum"] - before["lslo_batch_rows_sum"]) / batches, 2) if batches else None,
        "p50_s": percentile([d[1] for d in ok], 50), "p99_s": percentile([d[1] for d in ok], 99),
        "statuses": {s: sum(1 for d in done if d[0] == s) for s in sorted({d[0] for d in done})},
        "loadavg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }  # fmt: skip


async def open_loop(client, url: str, reqs: Requests, k: int, rate: float, duration: float, timeout: float) -> dict:
    """Poisson arrivals at `rate` requests/s for `duration` seconds (a bounded count); every answer awaited."""
    rng = random.Random(1)
    stream = reqs.stream(k, seed=1000 + k)
    load0 = os.getloadavg()[0]
    tasks = []
    t0 = time.perf_counter()
    t = 0.0
    count = 0
    limit = int(rate * duration * 2) + 10
    while count < limit:
        t += rng.expovariate(rate)
        if t >= duration:
            break
        await asyncio.sleep(max(0.0, t0 + t - time.perf_counter()))
        tasks.append(asyncio.ensure_future(one(client, url, next(stream), timeout)))
        count += 1
    results = await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    ok = [lat for status, lat in results if status == "200"]
    statuses = {s: sum(1 for r in results if r[0] == s) for s in sorted({r[0] for r in results})}
    return {
        "k": k, "offered_per_s": round(rate, 3), "requests": len(results), "wall_s": round(wall, 2),
        "admitted_per_s": round(len(ok) / wall, 3) if wall else None,
        "p50_s": percentile(ok, 50), "p95_s": percentile(ok, 95), "p99_s": percentile(ok, 99),
        "statuses": statuses, "loadavg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }  # fmt: skip


async def run(args: argparse.Namespace, adapter: Path) -> dict:
    import httpx

    reqs = Requests(Path(args.data), args.max_chars)
    servers = {
        "mixed": start_server(str(adapter), [], args),
        "direction": start_server(str(adapter), ["--batching", "direction"], args),
        "single": start_server(str(adapter), ["--batching", "single"], args),
        "base": start_server(args.base, [], args),
    }
    limits = httpx.Limits(max_connections=4 * args.clients + 64, max_keepalive_connections=args.clients)
    try:
        async with httpx.AsyncClient(limits=limits) as client:
            for name, (proc, url) in servers.items():
                await wait_ready(client, url, proc)
                print(f"serve_load: {name} ready at {url}", flush=True)
            saturation = []
            cells = [(k, mode) for k in args.shares for mode in ("mixed", "direction")]
            cells += [(132, "single"), (132, "base")]
            for rnd in range(args.rounds):  # every cell once per round, rounds one after the other (A B A B)
                for k, mode in cells:
                    cell = await closed_loop(client, servers[mode][1], reqs, k, args.clients, args.duration, args.client_timeout)
                    saturation.append({"server": mode, "round": rnd, **cell})
                    print(f"serve_load: round {rnd} saturation {mode:9s} K={k:3d}: {cell['sentences_per_s']:7.2f} sent/s, "
                          f"batch {cell['mean_batch_rows']}, load {cell['loadavg_1m']}", flush=True)  # fmt: skip
            capacity = median_rates(saturation)[("mixed", 132)]
            offered = []
            for frac in args.loads:
                for mode in ("mixed", "direction", "single"):
                    cell = await open_loop(client, servers[mode][1], reqs, 132, frac * capacity, args.load_duration,
                                           args.client_timeout)  # fmt: skip
                    offered.append({"server": mode, "fraction_of_mixed_capacity": frac, **cell})
                    print(f"serve_load: offered {frac:4.2f}x {mode:9s}: p50 {cell['p50_s']} p99 {cell['p99_s']} "
                          f"{cell['statuses']}", flush=True)  # fmt: skip
    finally:
        for proc, _ in servers.values():
            proc.terminate()
        for proc, _ in servers.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return {"saturation": saturation, "offered": offered, "capacity_mixed_132": capacity}


def median_rates(saturation: list[dict]) -> dict[tuple[str, int], float]:
    """(server, K) -> the median over rounds of its sentences per second."""
    import statistics

    cells: dict[tuple[str, int], list[float]] = {}
    for c in saturation:
        cells.setdefault((c["server"], c["k"]), []).append(c["sentences_per_s"])
    return {key: statistics.median(v) for key, v in cells.items()}


def verdicts(result: dict, bound: float) -> dict:
    sat = median_rates(result["saturation"])
    mixed = sat[("mixed", 132)]
    over = [c for c in result["offered"] if c["server"] == "mixed" and c["fraction_of_mixed_capacity"] == max(
        c["fraction_of_mixed_capacity"] for c in result["offered"])]  # fmt: skip
    o = over[0]
    lost = sum(v for s, v in o["statuses"].items() if s not in ("200", "429"))
    return {
        "mixed1_over_direction1": round(sat[("mixed", 1)] / sat[("direction", 1)], 3) if sat.get(("direction", 1)) and sat.get(("mixed", 1)) else None,
        "mixed132_over_direction1": round(mixed / sat[("direction", 1)], 3) if sat.get(("direction", 1)) else None,
        "mixed132_over_direction132": round(mixed / sat[("direction", 132)], 3) if sat.get(("direction", 132)) else None,
        "mixed132_over_single132": round(mixed / sat[("single", 132)], 3) if sat.get(("single", 132)) else None,
        "mixed132_over_base132": round(mixed / sat[("base", 132)], 3) if sat.get(("base", 132)) else None,
        "overload": {"fraction": o["fraction_of_mixed_capacity"], "p99_s": o["p99_s"], "bound_s": bound,
                     "p99_under_bound": o["p99_s"] is not None and o["p99_s"] <= bound,
                     "rejected_429": o["statuses"].get("429", 0), "lost_or_hung": lost},
    }  # fmt: skip


def render(r: dict) -> str:
    a, v = r["args"], r["verdicts"]
    lines = [
        "## serve-load: `lslo serve` under load (mixed directions vs one direction at a time vs one text at a time)", "",
        f"Command: `nice -n 10 python benchmarks/serve_load.py {' '.join(r['argv'])}`  ",
        f"Machine: {r['machine']['cpu']}, {r['machine']['cpu_cores']} cores, torch {r['machine']['torch']}, "
        f"{a['threads']} torch thread(s) per server; commit {r['machine']['git_commit']}, {r['machine']['date']}.  ",
        f"Model: {a['base']} under an untrained LSLo wrapper (bible12 tiers, ranks 2/2/8) with B ~ N(0, {a['b_std']}): "
        "it measures the cost of routing every row to its LoRAs, not translation quality. "
        f"Beam {a['beams']}, at most {a['max_new_tokens']} new tokens, one test verse of <= {a['max_chars']} characters "
        "per request, loopback HTTP. The CPU was shared with other jobs "
        "(1-minute load average per cell below): compare rows of this run only.", "",
        "Sustainable throughput (closed loop, "
        f"{a['clients']} clients, {a['duration']} s per cell, {a['rounds']} round(s) of all cells one after the other; "
        "K = directions in the request mix; the median over rounds, each round, and the last round's tokens/s, "
        "batch size and latency):", "",
        "| server | K | sentences/s (median) | per round | source tokens/s | mean batch rows | p50 s | p99 s | load avg |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    med = median_rates(r["saturation"])
    for (server, k), rate in med.items():
        cs = [c for c in r["saturation"] if c["server"] == server and c["k"] == k]
        last = cs[-1]
        rounds = " / ".join(f"{c['sentences_per_s']:.2f}" for c in cs)
        loads = " / ".join(str(c["loadavg_1m"][0]) for c in cs)
        lines.append(f"| {server} | {k} | {rate:.2f} | {rounds} | {last['source_tokens_per_s']:.0f} | {last['mean_batch_rows']} | "
                     f"{_f(last['p50_s'])} | {_f(last['p99_s'])} | {loads} |")  # fmt: skip
    lines += ["", f"Offered load (open loop, Poisson, K = 132, {a['load_duration']} s per cell; "
              f"1.0x = mixed's sustainable {r['capacity_mixed_132']:.2f} sentences/s):", "",
              "| offered | server | requests | admitted/s | p50 s | p95 s | p99 s | answers | load avg |",
              "|---:|---|---:|---:|---:|---:|---:|---|---|"]  # fmt: skip
    for c in r["offered"]:
        answers = ", ".join(f"{k}: {n}" for k, n in c["statuses"].items())
        lines.append(f"| {c['fraction_of_mixed_capacity']}x ({c['offered_per_s']:.1f}/s) | {c['server']} | {c['requests']} | "
                     f"{c['admitted_per_s']} | {_f(c['p50_s'])} | {_f(c['p95_s'])} | {_f(c['p99_s'])} | {answers} | "
                     f"{c['loadavg_1m'][0]}-{c['loadavg_1m'][1]} |")  # fmt: skip
    o = v["overload"]
    lines += ["", "Ratios (targets at K = 132: >= 0.8x the same server serving one merged direction, >= 5x one text at "
              f"a time): mixed(K=132) / direction(K=1) = **{v['mixed132_over_direction1']}**, mixed(K=132) / base(K=132) = "
              f"**{v['mixed132_over_base132']}**, mixed(K=1) / direction(K=1) = {v['mixed1_over_direction1']}, "
              f"mixed(K=132) / direction(K=132) = **{v['mixed132_over_direction132']}**, mixed(K=132) / single(K=132) = "
              f"**{v['mixed132_over_single132']}**. K = 1 is one language pair and K = 132 a mix of all twelve languages, "
              "whose verses and outputs differ in length: a different workload. The base model alone (one merged "
              "direction costs what the base costs) on the same 132-direction mix is the like-for-like reference.  ",
              f"Overload ({o['fraction']}x): p99 of admitted requests {_f(o['p99_s'])} s against the stated bound "
              f"{o['bound_s']} s ({'met' if o['p99_under_bound'] else 'NOT met'}); {o['rejected_429']} answered 429; "
              f"lost or hung: {o['lost_or_hung']}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="base/bible12-small")
    ap.add_argument("--data", default="data/bible12")
    ap.add_argument("--work", default="runs/serve-bench")
    ap.add_argument("--b-std", type=float, default=0.02)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per server")
    ap.add_argument("--beams", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--max-chars", type=int, default=100, help="test verses of at most this many characters")
    ap.add_argument("--clients", type=int, default=24)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per saturation cell")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the saturation cells")
    ap.add_argument("--shares", type=int, nargs="+", default=[1, 12, 132], help="directions in the mix (1..132)")
    ap.add_argument("--loads", type=float, nargs="+", default=[0.5, 0.9, 2.0], help="offered load, x mixed capacity")
    ap.add_argument("--load-duration", type=float, default=10.0)
    ap.add_argument("--max-queue-rows", type=int, default=16, help="each server's queue bound (429 past it)")
    ap.add_argument("--p99-bound", type=float, default=15.0,
                    help="the stated p99 bound (s) of admitted requests at overload (servers' --timeout: twice it)")
    ap.add_argument("--client-timeout", type=float, default=120.0, help="a request unanswered this long is 'hung'")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if not (Path(args.data) / "test").is_dir():
        raise SystemExit(f"serve_load: --data {args.data}: no test split; build it with `make data`")
    if any(not 1 <= k <= 132 for k in args.shares):
        raise SystemExit("serve_load: --shares: each between 1 and 132")
    adapter = Path(args.work) / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        build_adapter(args.base, adapter, args.b_std)
    result = asyncio.run(run(args, adapter))
    result = {"benchmark": "serve_load", "argv": sys.argv[1:], "args": vars(args), "machine": machine(), **result}
    result["verdicts"] = verdicts(result, args.p99_bound)
    print(json.dumps(result["verdicts"], indent=2))
    if not args.no_write:
        write_json(HERE / "results" / "serve_load.json", result)
        update_section("serve-load", render(result))
        print("wrote benchmarks/results/serve_load.json and the serve-load section of benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
