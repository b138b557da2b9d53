#!/usr/bin/env python3
"""Hostile load against akidb-rest: patterns that test that every unit of work is admitted,
bounded and cancellable, each with its figures and a PASS/FAIL against its target. Driven only through HTTP, environment variables and the process
(/proc/<pid>/status VmRSS/VmHWM, /proc/<pid>/stat CPU ticks). Stdlib only. Run it through
benches/hostile.sh, whose header lists the variables; this file reads them from the
environment.

Patterns (each on a fresh server, so one pattern's leftovers never colour the next):
  a  overload: A_CLIENTS clients posting A_TEXTS texts of A_MIN_WORDS..A_MAX_WORDS words to
     POST /api/v1/embed for A_SECONDS; counts 200/503/504/other; 503 latency P99 < 50 ms,
     504 <= 2 %, every 200 correct (count, 768 dims, unit norm)
  b  B_REQUESTS sequential requests with one ~B_BYTES text, "truncate": false, header
     `timeout: B_TIMEOUT`; idle (CPU ~0) within IDLE_TARGET s of the last answer, peak RSS <
     start + 1 GiB, RSS SETTLE s later < start + 256 MiB
  c  TEI POST /embed, "truncation_direction": "Left", one ~C_BYTES text, header `timeout:
     C_TIMEOUT`: one alone (latency), then C_CONCURRENT at once; the same checks as b
  d  D_CLIENTS raw sockets post POST /tokenize and never read the answer, held D_HOLD s;
     peak RSS < start + 512 MiB
  e  E_STARTS starts on 5 kinds of damaged model folder, rounds of five cycling E_MODES of
     GET /health traffic while it loads; each must exit non-zero with the reason in its log
"""
import asyncio
import bisect
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env(name, default):
    value = os.environ.get(name, "")
    return type(default)(value) if value != "" else default


BIN = env("AKIDB_BIN", os.path.join(ROOT, "target/release/akidb-rest"))
GEMMA = os.path.expanduser(env("GEMMA_DIR", "/root/models/embeddinggemma-300m-ONNX"))
ORT = env("ORT_DYLIB_PATH", os.path.join(ROOT, ".akidb/runtime/libonnxruntime.so"))
PORT = env("PORT", 18093)
THREADS = env("THREADS", 2)
PATTERNS = env("PATTERNS", "a b c d e").split()
LOGS = env("LOGS", os.path.join(ROOT, "target/hostile"))
SEED = env("SEED", 18)
DIMS = env("DIMS", 768)
IDLE_TARGET = env("IDLE_TARGET", 5.0)  # s after the last answer
IDLE_OBSERVE = env("IDLE_OBSERVE", 90.0)  # s watched at most for idleness
IDLE_CORES = env("IDLE_CORES", 0.03)  # "idle": under this many cores over a 1 s window
SETTLE = env("SETTLE", 30.0)
A_SECONDS = env("A_SECONDS", 90.0)
A_CLIENTS = env("A_CLIENTS", 8)
A_TEXTS = env("A_TEXTS", 4)
A_MIN_WORDS = env("A_MIN_WORDS", 50)
A_MAX_WORDS = env("A_MAX_WORDS", 2500)
B_REQUESTS = env("B_REQUESTS", 12)
B_BYTES = env("B_BYTES", 2_000_000)
B_TIMEOUT = env("B_TIMEOUT", "0.05")
C_BYTES = env("C_BYTES", 2_000_000)
C_TIMEOUT = env("C_TIMEOUT", "0.5")
C_CONCURRENT = env("C_CONCURRENT", 8)
D_CLIENTS = env("D_CLIENTS", 160)
D_TEXTS = env("D_TEXTS", 16)
D_WORDS = env("D_WORDS", 2000)
D_HOLD = env("D_HOLD", 10.0)
E_STARTS = env("E_STARTS", 30)
E_MODEL = os.path.expanduser(env("E_MODEL_DIR", GEMMA))
E_LOAD_CLIENTS = env("E_LOAD_CLIENTS", 8)
E_MODES = env("E_MODES", "none heavy light").split()
E_START_TIMEOUT = env("E_START_TIMEOUT", 300.0)
CLIENT_TIMEOUT = env("CLIENT_TIMEOUT", 600.0)  # s a client waits for one answer
MIB = 1024

verdicts = []  # (pattern, check, ok)
children = []  # Popen objects this script started


def say(line=""):
    print(line, flush=True)


def verdict(pattern, check, ok, figures):
    verdicts.append((pattern, check, ok))
    say(f"  [{'PASS' if ok else 'FAIL'}] {pattern}: {check}: {figures}")


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))]


# ---- texts -----------------------------------------------------------------------------------

def vocabulary():
    texts = json.load(open(os.path.join(ROOT, "benches/texts.json")))
    words = set()
    for value in texts.values():
        for text in value if isinstance(value, list) else [value]:
            words.update(re.findall(r"[A-Za-z]+", text.lower()))
    return sorted(words)


WORDS = vocabulary()


def text_of_words(rng, n):
    out = []
    for i in range(n):
        word = rng.choice(WORDS)
        if i == 0 or out[-1].endswith("."):
            word = word.capitalize()
        r = rng.random()
        if r < 0.08 or i == n - 1:
            word += "."
        elif r < 0.15:
            word += ","
        out.append(word)
    return " ".join(out)


def text_of_bytes(rng, size):
    parts, length = [], 0
    while length < size:
        part = text_of_words(rng, 200) + " "
        parts.append(part)
        length += len(part)
    return "".join(parts)[:size].rstrip()


# ---- the process ------------------------------------------------------------------------------

def proc_sample(pid):
    """(VmRSS KiB, VmHWM KiB, CPU ticks) of pid, or None once it is gone."""
    try:
        rss = hwm = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return rss, hwm, int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


TICKS = os.sysconf("SC_CLK_TCK")


class Monitor:
    """Samples a process every `period` s in a thread: (time, rss KiB, hwm KiB, cpu ticks)."""

    def __init__(self, pid, period=0.05):
        self.pid, self.period, self.samples = pid, period, []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopped.is_set():
            sample = proc_sample(self.pid)
            if sample is None:
                return
            self.samples.append((time.monotonic(),) + sample)
            time.sleep(self.period)

    def stop(self):
        self.stopped.set()
        self.thread.join()

    def now(self):
        sample = proc_sample(self.pid)
        return sample[0] if sample else 0

    def _range(self, start, end):
        samples = self.samples[:]  # the thread appends meanwhile
        times = [s[0] for s in samples]
        return samples[bisect.bisect_left(times, start):bisect.bisect_right(times, end)]

    def peak(self, start, end=None):
        values = [s[1] for s in self._range(start, end or time.monotonic())]
        return max(values) if values else 0

    def rss_at(self, t):
        after = self._range(t, float("inf"))
        return after[0][1] if after else (self.samples[-1][1] if self.samples else 0)

    def cores(self, start, end):
        """CPU used between two times, in cores."""
        inside = self._range(start, end)
        if len(inside) < 2 or inside[-1][0] - inside[0][0] <= 0:
            return float("nan")
        return (inside[-1][3] - inside[0][3]) / TICKS / (inside[-1][0] - inside[0][0])

    def idle_after(self, t0):
        """Seconds from t0 to the first 1 s window under IDLE_CORES cores, or None."""
        samples = self._range(t0, float("inf"))
        times = [s[0] for s in samples]
        for i, t in enumerate(times):
            j = bisect.bisect_left(times, t + 1.0)
            if j >= len(times):
                break
            span = times[j] - t
            if span > 0 and (samples[j][3] - samples[i][3]) / TICKS / span < IDLE_CORES:
                return t - t0
        return None


class Server:
    def __init__(self, name, model, extra_env=None):
        self.log_path = os.path.join(LOGS, f"server-{name}.log")
        self.log = open(self.log_path, "wb")
        server_env = dict(os.environ)
        server_env.update({
            "AKIDB_BIND": f"127.0.0.1:{PORT}",
            "AKIDB_EMBEDDING_MODEL": model,
            "AKIDB_EMBEDDING_PROVIDER": "onnx",
            "AKIDB_THREADS": str(THREADS),
            "ORT_DYLIB_PATH": ORT,
        })
        server_env.setdefault("AKIDB_EMBEDDING_VARIANT", "fp32")
        server_env.update(extra_env or {})
        self.started = time.monotonic()
        self.process = subprocess.Popen([BIN], env=server_env, stdout=self.log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        children.append(self.process)
        self.pid = self.process.pid

    def wait_healthy(self, timeout=900):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"hostile: the server exited with {self.process.returncode} while loading; "
                                 f"see {self.log_path}:\n{tail(self.log_path)}")
            if health() == 200:
                return time.monotonic() - self.started
            time.sleep(0.2)
        raise SystemExit(f"hostile: the server was not healthy within {timeout} s; see {self.log_path}")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def tail(path, lines=15):
    try:
        with open(path, "rb") as f:
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def health(timeout=2.0):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=timeout) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ValueError):
        return None


def fresh_server(name):
    server = Server(name, GEMMA)
    loaded = server.wait_healthy()
    # One small request warms the route before the baseline is read.
    status, _, _ = asyncio.run(one_request("POST", "/api/v1/embed", {"inputs": ["warm up"]}))
    if status != 200:
        raise SystemExit(f"hostile: the warm-up request answered {status}; see {server.log_path}")
    time.sleep(1.0)
    monitor = Monitor(server.pid)
    time.sleep(0.5)
    start = monitor.now()
    say(f"  server pid {server.pid}, healthy after {loaded:.1f} s; RSS at start {start / MIB:.0f} MiB")
    return server, monitor, start


# ---- a small HTTP/1.1 client ---------------------------------------------------------------

class Connection:
    def __init__(self):
        self.reader = self.writer = None

    async def ensure(self):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", PORT)

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method, path, body=None, headers=None):
        """(status, headers, body bytes); raises on a broken connection."""
        await self.ensure()
        payload = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{PORT}", f"Content-Length: {len(payload)}"]
        if body is not None:
            head.append("Content-Type: application/json")
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed before the answer")
        status = int(status_line.split()[1])
        answer_headers = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            key, _, value = line.decode("latin-1").partition(":")
            answer_headers[key.strip().lower()] = value.strip()
        if "content-length" in answer_headers:
            data = await self.reader.readexactly(int(answer_headers["content-length"]))
        elif answer_headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                chunks.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            data = b"".join(c[:-2] for c in chunks)
        else:
            data = await self.reader.read()
        if answer_headers.get("connection", "").lower() == "close":
            self.close()
        return status, answer_headers, data


async def one_request(method, path, body=None, headers=None, timeout=None):
    connection = Connection()
    try:
        return await asyncio.wait_for(connection.request(method, path, body, headers), timeout or CLIENT_TIMEOUT)
    finally:
        connection.close()


def error_type(data):
    try:
        value = json.loads(data)
    except ValueError:
        return data[:80].decode(errors="replace")
    if isinstance(value, dict):
        error = value.get("error")
        if isinstance(error, dict):
            return f"{error.get('type')}: {str(error.get('message'))[:100]}"
        return f"{value.get('error_type')}: {str(error)[:100]}"
    return "?"


# ---- a: overload ------------------------------------------------------------------------------

def check_vectors(data, count):
    try:
        vectors = json.loads(data)["embeddings"]
    except (ValueError, KeyError, TypeError):
        return "not the native answer"
    if len(vectors) != count:
        return f"{len(vectors)} vectors for {count} texts"
    for vector in vectors:
        if len(vector) != DIMS:
            return f"{len(vector)} dims"
        if not all(math.isfinite(x) for x in vector):
            return "non-finite value"
        norm = math.sqrt(sum(x * x for x in vector))
        if abs(norm - 1) > 1e-3:
            return f"norm {norm:.5f}"
    return None


def pattern_a():
    say(f"a. overload: {A_CLIENTS} clients x {A_TEXTS} texts of {A_MIN_WORDS}-{A_MAX_WORDS} words, "
        f"POST /api/v1/embed, {A_SECONDS:.0f} s")
    server, monitor, start = fresh_server("a")
    rng = random.Random(SEED)
    pool = [text_of_words(rng, rng.randint(A_MIN_WORDS, A_MAX_WORDS)) for _ in range(200)]
    results = []  # (status, latency s, problem or None)
    server_ms = []  # the service's own x-total-time of each 503

    async def client(index):
        client_rng = random.Random(SEED * 1000 + index)
        connection = Connection()
        end = time.monotonic() + A_SECONDS
        while time.monotonic() < end:
            body = {"inputs": client_rng.sample(pool, A_TEXTS)}
            t0 = time.monotonic()
            try:
                status, headers, data = await asyncio.wait_for(
                    connection.request("POST", "/api/v1/embed", body), CLIENT_TIMEOUT)
            except (OSError, ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError) as error:
                connection.close()
                results.append(("error", time.monotonic() - t0, type(error).__name__))
                continue
            latency = time.monotonic() - t0
            problem = check_vectors(data, A_TEXTS) if status == 200 else (error_type(data) if status != 503 else None)
            results.append((status, latency, problem))
            if status == 503:
                try:
                    server_ms.append(float(headers.get("x-total-time", "nan")))
                except ValueError:
                    pass
                # A shed client waits 50 ms (not the Retry-After), so the overload stays an overload.
                await asyncio.sleep(0.05)
        connection.close()

    async def run():
        await asyncio.gather(*(client(i) for i in range(A_CLIENTS)))

    t0 = time.monotonic()
    asyncio.run(run())
    wall = time.monotonic() - t0
    total = len(results)
    by = {}
    for status, latency, problem in results:
        by.setdefault(status, []).append((latency, problem))
    ok = [r for r in by.get(200, []) if r[1] is None]
    bad200 = [r for r in by.get(200, []) if r[1] is not None]
    l503 = [r[0] * 1000 for r in by.get(503, [])]
    l200 = [r[0] for r in by.get(200, [])]
    n504 = len(by.get(504, []))
    others = {k: len(v) for k, v in by.items() if k not in (200, 503, 504)}
    say(f"  {total} requests in {wall:.0f} s: 200 {len(by.get(200, []))}, 503 {len(l503)}, 504 {n504}, "
        f"other {sum(others.values())} {others or ''}")
    if l200:
        say(f"  200 latency: P50 {pct(l200, 50):.2f} s, P99 {pct(l200, 99):.2f} s, max {max(l200):.2f} s; "
            f"{len(l200) * A_TEXTS / wall:.2f} texts/s")
    if l503:
        say(f"  503 latency at the client: P50 {pct(l503, 50):.1f} ms, P99 {pct(l503, 99):.1f} ms, max {max(l503):.1f} ms")
    server_ms = [x for x in server_ms if x == x]
    if server_ms:
        say(f"  503 x-total-time (the service's own count): P50 {pct(server_ms, 50):.1f} ms, "
            f"P99 {pct(server_ms, 99):.1f} ms, max {max(server_ms):.1f} ms")
    for status, rows in by.items():
        if status not in (200, 503) and rows:
            say(f"  {status} e.g.: {rows[0][1]} (latency {rows[0][0]:.2f} s)")
    say(f"  RSS: start {start / MIB:.0f} MiB, peak {monitor.peak(t0) / MIB:.0f} MiB, "
        f"end {monitor.now() / MIB:.0f} MiB; CPU during the run {monitor.cores(t0, time.monotonic()):.2f} cores")
    verdict("a", "503 latency P99 < 50 ms", bool(l503) and pct(l503, 99) < 50,
            f"P99 {pct(l503, 99):.1f} ms over {len(l503)} answers" if l503 else "no 503 at all (nothing shed)")
    verdict("a", "504 <= 2 % of requests", total > 0 and n504 <= 0.02 * total,
            f"{n504} of {total} ({100 * n504 / max(total, 1):.1f} %)")
    verdict("a", "every 200 correct (count, dims, unit norm)", bool(ok) and not bad200,
            f"{len(ok)} correct, {len(bad200)} wrong" + (f" (e.g. {bad200[0][1]})" if bad200 else "")
            + (" (no 200 at all: nothing served, nothing to check)" if not by.get(200) else ""))
    verdict("a", "no other status or socket error", not others, str(others or "none"))
    server.stop()
    monitor.stop()


# ---- b, c: huge texts with short deadlines ---------------------------------------------------

def watch_after(pattern, monitor, start, t_last, peak_from, rss_limit_peak=1024, rss_limit_settled=256):
    """Idleness, peak RSS and settled RSS after the last answer at t_last."""
    while True:
        now = time.monotonic()
        idle = monitor.idle_after(t_last)
        if now >= t_last + SETTLE + 1 and (idle is not None or now >= t_last + IDLE_OBSERVE):
            break
        time.sleep(0.5)
    peak = monitor.peak(peak_from)
    settled = monitor.rss_at(t_last + SETTLE)
    hwm = monitor.samples[-1][2] if monitor.samples else 0
    busy = monitor.cores(t_last, t_last + min(5.0, IDLE_TARGET))
    say(f"  after the last answer: CPU {busy:.2f} cores over the next {IDLE_TARGET:.0f} s; "
        + (f"idle after {idle:.1f} s" if idle is not None else f"still busy after {IDLE_OBSERVE:.0f} s "
           f"(CPU {monitor.cores(time.monotonic() - 2, time.monotonic()):.2f} cores now)"))
    say(f"  RSS: start {start / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB (+{(peak - start) / MIB:.0f}), "
        f"{SETTLE:.0f} s after the last answer {settled / MIB:.0f} MiB (+{(settled - start) / MIB:.0f}); "
        f"VmHWM {hwm / MIB:.0f} MiB")
    verdict(pattern, f"idle within {IDLE_TARGET:.0f} s of the last answer", idle is not None and idle <= IDLE_TARGET,
            f"{idle:.1f} s" if idle is not None else f"not idle within {IDLE_OBSERVE:.0f} s")
    verdict(pattern, f"peak RSS < start + {rss_limit_peak} MiB", peak - start < rss_limit_peak * MIB,
            f"+{(peak - start) / MIB:.0f} MiB")
    verdict(pattern, f"RSS {SETTLE:.0f} s later < start + {rss_limit_settled} MiB",
            settled - start < rss_limit_settled * MIB, f"+{(settled - start) / MIB:.0f} MiB")


def pattern_b():
    say(f"b. {B_REQUESTS} sequential requests, one {B_BYTES / 1e6:.1f} MB text, \"truncate\": false, "
        f"header timeout: {B_TIMEOUT} (POST /api/v1/embed)")
    text = text_of_bytes(random.Random(SEED + 1), B_BYTES)
    body = json.dumps({"inputs": [text], "truncate": False}).encode()
    server, monitor, start = fresh_server("b")
    t0 = time.monotonic()
    answers = []
    for _ in range(B_REQUESTS):
        t = time.monotonic()
        try:
            status, _, data = asyncio.run(one_request("POST", "/api/v1/embed", body, {"timeout": B_TIMEOUT}))
            answers.append((status, time.monotonic() - t, error_type(data)))
        except (OSError, ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError) as error:
            answers.append(("error", time.monotonic() - t, type(error).__name__))
    t_last = time.monotonic()
    statuses = {}
    for status, _, _ in answers:
        statuses[status] = statuses.get(status, 0) + 1
    latencies = [a[1] * 1000 for a in answers]
    say(f"  answers {statuses}; latency ms: min {min(latencies):.0f}, median {statistics.median(latencies):.0f}, "
        f"max {max(latencies):.0f}; e.g. {answers[0][0]} {answers[0][2]}")
    watch_after("b", monitor, start, t_last, t0)
    server.stop()
    monitor.stop()


def pattern_c():
    say(f"c. TEI POST /embed, truncation_direction Left, one {C_BYTES / 1e6:.1f} MB text, header timeout: "
        f"{C_TIMEOUT}: one alone, then {C_CONCURRENT} at once")
    text = text_of_bytes(random.Random(SEED + 2), C_BYTES)
    body = json.dumps({"inputs": text, "truncation_direction": "Left"}).encode()
    server, monitor, start = fresh_server("c")

    async def post():
        t = time.monotonic()
        try:
            status, _, data = await one_request("POST", "/embed", body, {"timeout": C_TIMEOUT})
            detail = error_type(data) if status != 200 else f"{len(json.loads(data)[0])} dims"
            return status, time.monotonic() - t, detail
        except (OSError, ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError) as error:
            return "error", time.monotonic() - t, type(error).__name__

    async def many(n):
        return await asyncio.gather(*(post() for _ in range(n)))

    t0 = time.monotonic()
    alone = asyncio.run(many(1))[0]
    t_alone = time.monotonic()
    say(f"  alone: {alone[0]} in {alone[1] * 1000:.0f} ms ({alone[2]})")
    # Let the one alone finish whatever it left running before the burst.
    while time.monotonic() < t_alone + IDLE_OBSERVE and monitor.idle_after(t_alone) is None:
        time.sleep(0.5)
    idle_alone = monitor.idle_after(t_alone)
    say(f"  after it: idle after {idle_alone:.1f} s" if idle_alone is not None
        else f"  after it: still busy after {IDLE_OBSERVE:.0f} s")
    t1 = time.monotonic()
    burst = asyncio.run(many(C_CONCURRENT))
    t_last = time.monotonic()
    statuses = {}
    for status, _, _ in burst:
        statuses[status] = statuses.get(status, 0) + 1
    latencies = sorted(b[1] * 1000 for b in burst)
    say(f"  {C_CONCURRENT} at once: {statuses}; latency ms: min {latencies[0]:.0f}, max {latencies[-1]:.0f}; "
        f"e.g. {burst[0][2]}")
    verdict("c", f"the one alone answers within its timeout ({C_TIMEOUT} s) + 0.1 s",
            alone[1] <= float(C_TIMEOUT) + 0.1, f"{alone[1] * 1000:.0f} ms, {alone[0]}")
    watch_after("c", monitor, start, t_last, t0)
    server.stop()
    monitor.stop()


# ---- d: clients that never read ---------------------------------------------------------------

def pattern_d():
    say(f"d. {D_CLIENTS} raw sockets post POST /tokenize ({D_TEXTS} texts of {D_WORDS} words) and never "
        f"read the answer, held {D_HOLD:.0f} s")
    rng = random.Random(SEED + 3)
    texts = [text_of_words(rng, D_WORDS) for _ in range(D_TEXTS)]
    payload = json.dumps({"inputs": texts}).encode()
    request = (f"POST /tokenize HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
    server, monitor, start = fresh_server("d")
    sockets, failures = [], []

    async def open_and_send():
        loop = asyncio.get_running_loop()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # small window: the server keeps the rest
        s.setblocking(False)
        try:
            await loop.sock_connect(s, ("127.0.0.1", PORT))
            await asyncio.wait_for(loop.sock_sendall(s, request), 60)
            sockets.append(s)
        except (OSError, asyncio.TimeoutError) as error:
            failures.append(type(error).__name__)
            s.close()

    t0 = time.monotonic()
    async def send_all():
        await asyncio.wait_for(asyncio.gather(*(open_and_send() for _ in range(D_CLIENTS))), 180)

    asyncio.run(send_all())
    sent = time.monotonic()
    say(f"  {len(sockets)} requests sent in {sent - t0:.1f} s ({len(payload) / 1e3:.0f} kB each), "
        f"{len(failures)} failed {set(failures) or ''}")
    time.sleep(max(0.0, D_HOLD - (time.monotonic() - sent)))
    during = health(timeout=10)
    for s in sockets:
        s.close()
    t_close = time.monotonic()
    time.sleep(5)
    peak = monitor.peak(t0)
    after = health(timeout=10)
    say(f"  /health while held: {during}, after: {after}; CPU while held {monitor.cores(t0, t_close):.2f} cores")
    say(f"  RSS: start {start / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB (+{(peak - start) / MIB:.0f}), "
        f"5 s after closing {monitor.now() / MIB:.0f} MiB")
    verdict("d", "peak RSS < start + 512 MiB", peak - start < 512 * MIB, f"+{(peak - start) / MIB:.0f} MiB")
    verdict("d", "healthy after", after == 200, str(after))
    server.stop()
    monitor.stop()


# ---- e: failed starts -------------------------------------------------------------------------

def mirror(source, dest):
    """dest: a copy of source made of hard links (a copy where linking fails). Not symlinks: ONNX
    Runtime resolves them and then refuses external weights outside the graph's real folder.
    Damage is done by unlinking a file and writing a new one, never by writing through a link."""
    for folder, dirs, files in os.walk(source):
        relative = os.path.relpath(folder, source)
        os.makedirs(os.path.join(dest, relative), exist_ok=True)
        for name in files:
            try:
                os.link(os.path.join(folder, name), os.path.join(dest, relative, name))
            except OSError:
                shutil.copy2(os.path.join(folder, name), os.path.join(dest, relative, name))


def graph_path(folder):
    for candidate in ("model.onnx", "onnx/model.onnx"):
        if os.path.exists(os.path.join(folder, candidate)):
            return candidate
    raise SystemExit(f"hostile: no model.onnx or onnx/model.onnx in {folder}")


def damaged_folders():
    base = os.path.join(LOGS, "damaged")
    shutil.rmtree(base, ignore_errors=True)
    graph = graph_path(E_MODEL)
    weights = graph + "_data"
    kinds = {}

    def make(kind, damage):
        folder = os.path.join(base, kind)
        mirror(E_MODEL, folder)
        damage(folder)
        kinds[kind] = folder

    def replace(folder, name, data):
        path = os.path.join(folder, name)
        if os.path.lexists(path):
            os.unlink(path)
        with open(path, "wb") as f:
            f.write(data)

    def no_weights(folder):
        if not os.path.exists(os.path.join(folder, weights)):
            raise SystemExit(f"hostile: {E_MODEL} has no {weights} to remove")
        os.unlink(os.path.join(folder, weights))

    graph_bytes = open(os.path.join(E_MODEL, graph), "rb").read()
    tokenizer_bytes = open(os.path.join(E_MODEL, "tokenizer.json"), "rb").read(4096)
    make("no-weights", no_weights)
    make("truncated-graph", lambda f: replace(f, graph, graph_bytes[: len(graph_bytes) // 2]))
    make("corrupt-tokenizer", lambda f: replace(f, "tokenizer.json", tokenizer_bytes))
    make("garbage-config", lambda f: replace(f, "config.json", bytes(random.Random(7).randrange(256) for _ in range(512))))
    os.makedirs(os.path.join(base, "empty"))
    kinds["empty"] = os.path.join(base, "empty")
    return kinds


READY = re.compile(r"akidb_rest::server: ready\b")
REASON = re.compile(r"\bERROR\b|\berror\b|cannot|failed", re.IGNORECASE)


def pattern_e():
    say(f"e. {E_STARTS} starts on 5 kinds of damaged {os.path.basename(E_MODEL)}, rounds of five cycling "
        f"{'/'.join(E_MODES)} (none: no request; light: 1 client, GET /health every 0.1 s; heavy: "
        f"{E_LOAD_CLIENTS} clients polling GET /health without pause)")
    kinds = damaged_folders()
    names = list(kinds)
    rows = []
    for i in range(E_STARTS):
        kind = names[i % len(names)]
        mode = E_MODES[(i // len(names)) % len(E_MODES)]
        loaded = mode != "none"
        server = Server(f"e{i:02d}-{kind}-{mode}", kinds[kind])
        stop_load = threading.Event()
        polls = [0, 0]  # answered, refused

        def poll():
            while not stop_load.is_set():
                code = health(timeout=1.0)
                polls[0 if code else 1] += 1
                if mode == "light":
                    time.sleep(0.1)
                elif not code:
                    time.sleep(0.005)

        clients = {"none": 0, "light": 1, "heavy": E_LOAD_CLIENTS}[mode]
        pollers = [threading.Thread(target=poll, daemon=True) for _ in range(clients)]
        for t in pollers:
            t.start()
        outcome = None
        deadline = time.monotonic() + E_START_TIMEOUT
        next_probe = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                break
            # A damaged folder the service serves anyway is a failure too. Without load, the
            # only request is one /health probe every 5 s (the log's `ready` line is read first).
            if loaded or time.monotonic() >= next_probe or READY.search(tail(server.log_path, 3)):
                next_probe = time.monotonic() + 5.0
                if health(timeout=1.0) == 200:
                    outcome = "served"
                    break
            time.sleep(0.05)
        elapsed = time.monotonic() - server.started
        stop_load.set()
        for t in pollers:
            t.join()
        if server.process.poll() is None:
            outcome = outcome or "hung"
            server.stop()
        else:
            server.log.close()
        code = server.process.returncode
        log = open(server.log_path, "rb").read().decode(errors="replace")
        reasons = [line for line in log.splitlines() if REASON.search(line)]
        reason = reasons[-1].strip() if reasons else ""
        ok = outcome is None and code not in (0, None) and bool(reason)
        rows.append((i, kind, mode, code, outcome, elapsed, reason, ok, polls[0]))
        say(f"  start {i + 1:2d} {kind:18s} {mode:5s}: exit {code}"
            f"{' (' + outcome + ')' if outcome else ''} after {elapsed:.1f} s"
            f"{f', {polls[0]} health answers' if loaded else ''}; "
            f"{'reason: ' + reason[-160:] if reason else 'NO REASON IN THE LOG'}")
    for mode in E_MODES:
        mine = [r for r in rows if r[2] == mode]
        say(f"  {mode}: {sum(r[7] for r in mine)} of {len(mine)} starts right; exit 0: {sum(r[3] == 0 for r in mine)}")
    for kind in names:
        mine = [r for r in rows if r[1] == kind]
        good = sum(r[7] for r in mine)
        verdict("e", f"{kind}: exit non-zero with a reason", good == len(mine),
                f"{good} of {len(mine)} (exit codes {[r[3] for r in mine]})")
    shutil.rmtree(os.path.join(LOGS, "damaged"), ignore_errors=True)


# ---- main ------------------------------------------------------------------------------------

def cleanup(*_):
    for process in children:
        if process.poll() is None:
            process.kill()
            process.wait()


def main():
    for name, path in (("AKIDB_BIN", BIN), ("ORT_DYLIB_PATH", ORT)):
        if not os.path.exists(path):
            raise SystemExit(f"hostile: {name} {path} does not exist")
    if any(p in PATTERNS for p in "abcd") and not os.path.exists(os.path.join(GEMMA, "tokenizer.json")):
        raise SystemExit(f"hostile: GEMMA_DIR {GEMMA} is not a model folder")
    os.makedirs(LOGS, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        version = subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        version = "?"
    say(f"hostile load: {BIN} ({version}), model {GEMMA} ({os.environ.get('AKIDB_EMBEDDING_VARIANT', 'fp32')}), "
        f"{THREADS} threads, port {PORT}")
    try:
        tree = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip() or "?"
    except OSError:
        tree = "?"
    say(f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores; load average "
        f"{' '.join(open('/proc/loadavg').read().split()[:3])}; patterns {' '.join(PATTERNS)}; "
        f"harness tree {tree}; NICE={os.environ.get('NICE', 'unset')}")
    say()
    try:
        for pattern in PATTERNS:
            {"a": pattern_a, "b": pattern_b, "c": pattern_c, "d": pattern_d, "e": pattern_e}[pattern]()
            say()
    finally:
        cleanup()
    passed = sum(ok for _, _, ok in verdicts)
    say(f"summary: {passed} of {len(verdicts)} checks PASS; FAIL: "
        + ("; ".join(f"{p}: {c}" for p, c, ok in verdicts if not ok) or "none"))
    say(f"load average at end {' '.join(open('/proc/loadavg').read().split()[:3])}")
    return 0 if passed == len(verdicts) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        cleanup()
        sys.exit(130)
