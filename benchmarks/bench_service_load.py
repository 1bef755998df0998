"""The scoring service under load on loopback: ``/health`` latency, upload latency, 503s and peak memory.

Starts ``xrad serve ARTEFACT`` in a subprocess (its own limits: ``--serve-arg=--queue=2`` etc. passes
options through), measures normal uploads one at a time (unloaded), then at once: ``--requests`` normal
uploads from ``--concurrency`` clients, one near-limit 16-bit PNG declaring ``--near-limit-px`` squared
(compressed to ~100 kB), ``--stalled`` uploads that send their headers and a few bytes and then stall, and a
``/health`` poll every 50 ms; a client answered 503 waits its ``Retry-After`` (at most ``--max-backoff``
seconds) before its next upload. Prints ``/health`` latency (max, p95), normal-upload latency unloaded vs
loaded, the share answered within 2x the unloaded median, how many 503s, what became of the near-limit
image and the stalled uploads, the server's peak RSS (``VmHWM``) and any traceback in its log.

Usage (small numbers, one core)::

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python benchmarks/bench_service_load.py ARTEFACT \\
        --requests 60 --concurrency 10 --stalled 5 --near-limit-px 3000

Full run of issue 16: ``--requests 300 --concurrency 50 --stalled 30 --near-limit-px 7700``, best with the
server and the clients on different cores (``--server-cpus 0 --client-cpus 1``): on one shared core the
client threads' own work shows up as server latency.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def grey_png(side: int, seed: int) -> bytes:
    """A radiograph-like 8-bit PNG: a smooth ramp plus noise."""
    from PIL import Image

    yy, xx = np.mgrid[:side, :side]
    noise = np.random.default_rng(seed).integers(0, 40, (side, side))
    pixels = ((yy + xx) * 180 // (2 * side) + noise).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def near_limit_png(side: int) -> bytes:
    """A 16-bit PNG of ``side`` x ``side`` that compresses to little (a dark field with a few bright bars)."""
    from PIL import Image

    pixels = np.zeros((side, side), np.uint16)
    pixels[:, ::97] = 40000
    pixels[side // 3 : side // 2] += 9000
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def start_server(args: argparse.Namespace, port: int, log_path: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "xrad.cli.main", "serve", str(args.artefact), "--port", str(port)]
    command += list(args.serve_arg)
    log = log_path.open("w")
    cpus = {int(c) for c in args.server_cpus.split(",")} if args.server_cpus else None

    def pin() -> None:  # the clients' threads then do not compete with the server for its core
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ), preexec_fn=pin)
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited ({server.returncode}); see {log_path}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not answer /health within 120 s")


def stalled_upload(port: int, results: list[tuple[str, float]], hold_s: float) -> None:
    """Headers declaring 1 MB, 100 bytes, then nothing: record how the server ends it (or that it did not)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as raw:
        raw.sendall(b"POST /score HTTP/1.1\r\nHost: bench\r\nContent-Length: 1000000\r\n\r\n" + b"\x89PNG" + b"\0" * 96)
        raw.settimeout(hold_s)
        try:
            reply = raw.recv(200)
            status = reply.split(b" ", 2)[1].decode() if reply else "closed"
        except TimeoutError:
            status = "still open"
        except OSError:
            status = "reset"
    results.append((status, time.monotonic() - started))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artefact", type=Path, help="artefact folder to serve")
    parser.add_argument("--requests", type=int, default=300, help="normal uploads under load")
    parser.add_argument("--concurrency", type=int, default=50, help="clients sending them at once")
    parser.add_argument("--stalled", type=int, default=30, help="uploads that stall after their headers")
    parser.add_argument("--near-limit-px", type=int, default=7700, help="side of the near-limit 16-bit PNG (0: none)")
    parser.add_argument("--upload-px", type=int, default=512, help="side of a normal upload")
    parser.add_argument("--unloaded", type=int, default=15, help="normal uploads one at a time, first")
    parser.add_argument(
        "--max-backoff", type=float, default=5.0, help="longest pause of a client after a 503 (its Retry-After)"
    )
    parser.add_argument("--server-cpus", default="", help="cores for the server, e.g. 0 (default: as this process)")
    parser.add_argument("--client-cpus", default="", help="cores for this process's clients, e.g. 1")
    parser.add_argument("--serve-arg", action="append", default=[], help="option passed to xrad serve (repeat)")
    args = parser.parse_args()

    import httpx

    if args.client_cpus:
        os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="xrad-bench-")) / "server.log"
    server = start_server(args, port, log_path)
    url = f"http://127.0.0.1:{port}"
    uploads = [grey_png(args.upload_px, seed) for seed in range(8)]
    bomb = near_limit_png(args.near_limit_px) if args.near_limit_px else b""
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            for data in uploads[:2]:  # warm-up: first-call costs are not "unloaded latency"
                client.post("/score", content=data)
            unloaded = []
            for i in range(args.unloaded):
                tick = time.perf_counter()
                answer = client.post("/score", content=uploads[i % len(uploads)])
                unloaded.append(time.perf_counter() - tick)
                assert answer.status_code == 200, answer.text
        rss_unloaded = peak_rss_mib(server.pid)

        stop = threading.Event()
        health: list[float] = []
        health_failures: list[str] = []

        def poll_health() -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                while not stop.is_set():
                    tick = time.perf_counter()
                    try:
                        client.get("/health").raise_for_status()
                        health.append(time.perf_counter() - tick)
                    except httpx.HTTPError as exc:
                        health_failures.append(type(exc).__name__)
                    time.sleep(0.05)

        loaded: list[tuple[int, float]] = []
        todo = iter(range(args.requests))
        todo_lock = threading.Lock()

        def client_loop(seed: int) -> None:
            rng = np.random.default_rng(seed)
            with httpx.Client(base_url=url, timeout=120) as client:
                while True:
                    with todo_lock:
                        index = next(todo, None)
                    if index is None:
                        return
                    tick = time.perf_counter()
                    retry_after = 0.0
                    try:
                        answer = client.post("/score", content=uploads[index % len(uploads)])
                        status = answer.status_code
                        retry_after = float(answer.headers.get("Retry-After", 0))
                    except httpx.HTTPError:
                        status = -1
                    loaded.append((status, time.perf_counter() - tick))
                    if status == 503:  # a well-behaved client: back off for about the time the server asked
                        time.sleep(min(args.max_backoff, retry_after) * float(rng.uniform(0.5, 1.0)))

        near: list[tuple[int, float, str]] = []

        def send_near_limit() -> None:
            tick = time.perf_counter()
            with httpx.Client(base_url=url, timeout=300) as client:
                answer = client.post("/score", content=bomb)
            detail = answer.json().get("detail", "") if answer.status_code != 200 else "scored"
            near.append((answer.status_code, time.perf_counter() - tick, str(detail)[:100]))

        stalled: list[tuple[str, float]] = []
        threads = [threading.Thread(target=poll_health)]
        threads += [threading.Thread(target=stalled_upload, args=(port, stalled, 90.0)) for _ in range(args.stalled)]
        if bomb:
            threads.append(threading.Thread(target=send_near_limit))
        workers = [threading.Thread(target=client_loop, args=(seed,)) for seed in range(args.concurrency)]
        started = time.perf_counter()
        for thread in threads + workers:
            thread.start()
        for thread in workers:
            thread.join()
        load_seconds = time.perf_counter() - started
        for thread in threads[1:]:
            thread.join()
        stop.set()
        threads[0].join()
        rss_peak = peak_rss_mib(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    log_text = log_path.read_text(errors="replace")

    base = float(np.median(unloaded))
    answered = [seconds for status, seconds in loaded if status == 200]
    statuses: dict[int, int] = {}
    for status, _ in loaded:
        statuses[status] = statuses.get(status, 0) + 1
    within = sum(seconds <= 2 * base for seconds in answered)
    print(f"server: xrad serve {args.artefact} {' '.join(args.serve_arg)} (pid {server.pid}; log {log_path})")
    print(f"normal upload {args.upload_px}x{args.upload_px} PNG ({len(uploads[0]) / 1024:.0f} kB)")
    print(f"  unloaded ({args.unloaded}): median {1000 * base:.0f} ms, p95 {1000 * percentile(unloaded, 95):.0f} ms")
    print(
        f"  loaded ({args.requests} from {args.concurrency} clients in {load_seconds:.1f} s): statuses {statuses}; "
        f"200s median {1000 * percentile(answered, 50):.0f} ms, p95 {1000 * percentile(answered, 95):.0f} ms, "
        f"max {1000 * max(answered, default=float('nan')):.0f} ms; {within}/{len(answered)} within 2x unloaded"
    )
    print(
        f"/health under load ({len(health)} polls, {len(health_failures)} failed): "
        f"max {1000 * max(health, default=float('nan')):.0f} ms, p95 {1000 * percentile(health, 95):.0f} ms"
    )
    if bomb:
        status, seconds, detail = near[0]
        side = args.near_limit_px
        print(f"near-limit 16-bit PNG {side}x{side} ({len(bomb) / 1024:.0f} kB): {status} in {seconds:.2f} s: {detail}")
    if stalled:
        outcomes: dict[str, int] = {}
        for status, _ in stalled:
            outcomes[status] = outcomes.get(status, 0) + 1
        print(f"stalled uploads ({len(stalled)}): {outcomes}, ended after max {max(s for _, s in stalled):.1f} s")
    print(f"server peak RSS: {rss_unloaded:.0f} MiB after the unloaded phase, {rss_peak:.0f} MiB at the end")
    print(f"tracebacks in the server log: {log_text.count('Traceback')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
