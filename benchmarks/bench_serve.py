"""Benchmark the review server's API under 1, 4 and 16 concurrent clients, against detect.py's batch rate.

    python benchmarks/bench_serve.py --model EXPORT                  # NIH images (the dev copy, else the sample)
    python benchmarks/bench_serve.py --model EXPORT --images DIR --count 1000

It starts scripts/serve.py on a free loopback port (TFLite backend, defaults otherwise) and, once the
model and its explainer are loaded, posts the images' bytes (`POST /api/v1/detect`, raw body) from
1 client (--count requests), 4 clients (--count) and 16 clients (the rest of --total): each client
its own thread and connection, the images cycled. Per phase it prints throughput, p50/p95/p99
latency, errors (any answer but 200) and the server's peak RSS; and the server's RSS after its
1,000th and its --total-th request. Then detect.py runs over --count of the same images (linked
under distinct names), as its own process, and its batch rate is set beside the 16 clients'.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import NIH_DIR, REPO, SAMPLE_NIH_DIR

LAST_LINE = re.compile(r"(\d+) images in ([\d.]+) s = ([\d.]+) images/s; (\d+) errors")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RssSampler:
    """The server's resident memory every 50 ms, and its peak since the last `reset`."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.process, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> int:
        return self.process.memory_info().rss

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.now())

    def reset(self) -> None:
        self.peak = self.now()

    def stop(self) -> None:
        self._stop.set()


def start_server(model: Path, work: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    log = open(work / "serve.log", "wb")  # noqa: SIM115 - open for the server's whole life
    server = subprocess.Popen([sys.executable, str(REPO / "scripts" / "serve.py"), "--model", str(model), "--port",
                               str(port), "--feedback-dir", str(work / "feedback"), "--backend", "tflite", *extra],
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"{url}/health", timeout=2)
            if health.status_code == 200 and health.json().get("explain") != "loading":
                return server, url
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            sys.exit(f"the server exited: {(work / 'serve.log').read_text()[-2000:]}")
        time.sleep(0.2)
    sys.exit("the server did not start in 300 s")


def run_phase(url: str, images: list[bytes], clients: int, requests: int, offset: int) -> dict:
    """`requests` posts from `clients` threads; latencies in ms and the count of answers but 200."""
    import httpx

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120, headers={"Content-Type": "application/octet-stream"}) as http:
            for number in counter:
                data = images[(offset + number) % len(images)]
                started = time.perf_counter()
                try:
                    ok = http.post("/api/v1/detect", content=data).status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    latencies.append(elapsed)
                    errors[0] += not ok

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return {"clients": clients, "requests": len(latencies), "seconds": wall, "rate": len(latencies) / wall,
            "p50": quantiles[49], "p95": quantiles[94], "p99": quantiles[98], "errors": errors[0]}


def detect_rate(model: Path, sources: list[Path], count: int, work: Path) -> tuple[float, str]:
    inputs = work / "inputs"
    inputs.mkdir()
    for number in range(count):
        source = sources[number % len(sources)]
        (inputs / f"{number:04d}_{source.name}").symlink_to(source.resolve())
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "detect.py"), "--model", str(model), "--input",
                             str(inputs), "--output-dir", str(work / "detections"), "--backend", "tflite",
                             "--no-progress"], capture_output=True, text=True, check=True)
    line = next(m for m in map(LAST_LINE.search, result.stderr.splitlines()) if m)
    return float(line.group(3)), line.group(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="export directory (with model.tflite)")
    parser.add_argument("--images", type=Path, help="folder of PNGs (default: the NIH dev copy, else the sample)")
    parser.add_argument("--count", type=int, default=1000, help="requests of the 1- and 4-client phases")
    parser.add_argument("--total", type=int, default=5000, help="requests in all; the 16 clients post the rest")
    parser.add_argument("--server-args", default="", help="more scripts/serve.py flags, quoted")
    args = parser.parse_args()
    folder = args.images or next(f / "images" for f in (NIH_DIR, SAMPLE_NIH_DIR) if (f / "images").is_dir())
    sources = sorted(folder.glob("*.png"))
    images = [path.read_bytes() for path in sources]
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    server, url = start_server(args.model, work, args.server_args.split())
    rss = RssSampler(server.pid)
    phases, served, memory = [], 0, {}
    try:
        for clients, requests in ((1, args.count), (4, args.count), (16, args.total - 2 * args.count)):
            rss.reset()
            phase = run_phase(url, images, clients, requests, served)
            served += phase["requests"]
            phase["peak_rss_mb"] = rss.peak / 2**20
            phases.append(phase)
            if served == args.count:
                memory[served] = rss.now() / 2**20
        memory[served] = rss.now() / 2**20
    finally:
        rss.stop()
        server.terminate()
        server.wait(60)
    rate, line = detect_rate(args.model, sources, args.count, work)
    report(phases, memory, rate, line, len(sources), folder, args)


def report(phases: list[dict], memory: dict, detect: float, line: str, distinct: int, folder: Path,
           args: argparse.Namespace) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {distinct} distinct images from {folder}, "
          f"cycled; model {args.model} ({os.cpu_count()} CPUs)")
    print("| clients | requests | images/s | p50 ms | p95 ms | p99 ms | errors | peak RSS MB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for p in phases:
        print(f"| {p['clients']} | {p['requests']} | {p['rate']:.1f} | {p['p50']:.0f} | {p['p95']:.0f} | "
              f"{p['p99']:.0f} | {p['errors']} | {p['peak_rss_mb']:.0f} |")
    first, last = sorted(memory)
    print(f"server RSS after request {first}: {memory[first]:.0f} MB; after request {last}: {memory[last]:.0f} MB "
          f"({100 * (memory[last] / memory[first] - 1):+.1f}%)")
    print(f"detect.py --backend tflite over {args.count} of the same images: {line}")
    print(f"16 clients / detect.py batch rate: {phases[-1]['rate'] / detect:.2f}x")
    print(json.dumps({"phases": phases, "rss_mb": memory, "detect_rate": detect}))


if __name__ == "__main__":
    main()
