"""Load test of `retrieve serve` on the loopback interface: batched against one at a time.

Indexes a folder of photos into a temporary bundle, then for each mode starts a real
server process (`retrieve serve`) on 127.0.0.1 and runs the same bounded load against
it: N client threads, each on its own keep-alive connection, uploading real photos to
/search/image back to back for S seconds. Reported per mode: requests answered per
second (QPS), p50 and p99 latency seen by the clients, errors (any answer but a 200
with k results, or a failed connection), and the mean number of searches per forward
pass (from the server's /metrics). Both modes run in one invocation, one after the
other, on the same machine and data: compare them as a ratio.

    .venv/bin/python scripts/bench_serve.py --clients 8 --seconds 30
    .venv/bin/python scripts/bench_serve.py --index ../shared/data/caltech101/images --limit 1000
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "scripts" / "sample"
MODES = {"one at a time": ["--max-batch", "1", "--batch-window-ms", "0"],
         "batched": ["--max-batch", "32", "--batch-window-ms", "5"]}


@dataclass
class Load:
    """What the clients saw in one mode."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, latency: float | None) -> None:
        with self.lock:
            if latency is None:
                self.errors += 1
            else:
                self.latencies.append(latency)


def photos_in(folder: Path, limit: int) -> list[Path]:
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not found:
        sys.exit(f"no photos below {folder}")
    return found[:limit]


def build_bundle(bundle: Path, photos: list[Path]) -> None:
    """Index `photos` (through a folder of links, so a --limit subset is what gets indexed)."""
    staging = bundle.parent / "photos"
    staging.mkdir()
    for n, p in enumerate(photos):
        (staging / f"{n:06d}{p.suffix.lower()}").symlink_to(p.resolve())
    subprocess.run([sys.executable, "-m", "retrieval.cli", "index", str(staging), "-i", str(bundle), "-q",
                    "--follow-links"], check=True, cwd=ROOT)


def multipart(data: bytes, name: str, k: int) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\n{k}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def client(port: int, uploads: list[tuple[bytes, str]], k: int, start: int, deadline: float, load: Load | None) -> None:
    """Upload photos back to back until `deadline`; record each answer in `load` (None: warm-up)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for body, content_type in itertools.islice(itertools.cycle(uploads), start, None):
        if time.monotonic() >= deadline:
            break
        began = time.perf_counter()
        try:
            conn.request("POST", "/search/image", body, {"Content-Type": content_type})
            response = conn.getresponse()
            answer = response.read()
            ok = response.status == 200 and len(json.loads(answer)["results"]) == k
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            ok = False
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        if load is not None:
            load.record(time.perf_counter() - began if ok else None)
    conn.close()


def run_clients(port: int, uploads: list[tuple[bytes, str]], k: int, clients: int, seconds: float,
                load: Load | None) -> None:
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=client, args=(port, uploads, k, i * 7, deadline, load)) for i in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if load is not None:
        load.seconds = time.perf_counter() - began


def get(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def wait_until_up(port: int, server: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server exited with {server.returncode}")
        try:
            if json.loads(get(port, "/health")).get("status") == "ok":
                return
        except (OSError, ValueError):
            time.sleep(0.5)
    sys.exit("the server did not come up")


def batch_totals(metrics: str) -> tuple[float, float]:
    """(searches, forward passes) so far, from the server's batch-size histogram."""
    values = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
              if line.startswith(("retrieve_search_batch_size_sum", "retrieve_search_batch_size_count"))}
    return values.get("retrieve_search_batch_size_sum", 0.0), values.get("retrieve_search_batch_size_count", 0.0)


@dataclass
class Mode:
    """One server under test and what its clients saw, summed over the rounds."""

    name: str
    flags: list[str]
    port: int
    load: Load = field(default_factory=Load)
    searches: float = 0.0
    passes: float = 0.0
    loads: list[float] = field(default_factory=list)  # 1-minute load average after each round

    @property
    def qps(self) -> float:
        return len(self.load.latencies) / self.load.seconds if self.load.seconds else 0.0

    def row(self) -> dict[str, object]:
        lat = sorted(self.load.latencies)
        return {"mode": self.name, "requests": len(lat), "errors": self.load.errors, "qps": round(self.qps, 2),
                "p50_ms": round(1000 * statistics.median(lat), 1) if lat else None,
                "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1) if lat else None,
                "searches_per_pass": round(self.searches / self.passes, 2) if self.passes else 0.0,
                "load_avg": [round(x, 2) for x in self.loads]}


def measure(mode: Mode, uploads: list[tuple[bytes, str]], args: argparse.Namespace, seconds: float) -> None:
    """One measured round against `mode`'s server, added to its totals."""
    before = batch_totals(get(mode.port, "/metrics"))
    round_load = Load()
    run_clients(mode.port, uploads, args.k, args.clients, seconds, round_load)
    after = batch_totals(get(mode.port, "/metrics"))
    mode.load.latencies += round_load.latencies
    mode.load.errors += round_load.errors
    mode.load.seconds += round_load.seconds
    mode.searches += after[0] - before[0]
    mode.passes += after[1] - before[1]
    mode.loads.append(os.getloadavg()[0])


def bench(bundle: Path, uploads: list[tuple[bytes, str]], args: argparse.Namespace) -> list[Mode]:
    """Both servers up (an idle one costs nothing), warmed, then measured in alternating
    rounds, so a change in the machine's other load falls on both modes alike."""
    modes = [Mode(name, flags, args.port + n) for n, (name, flags) in enumerate(MODES.items())]
    servers = [subprocess.Popen([sys.executable, "-m", "retrieval.cli", "serve", "-i", str(bundle),
                                 "--port", str(m.port), "--runtime", args.runtime, *m.flags], cwd=ROOT) for m in modes]
    try:
        for mode, server in zip(modes, servers):
            wait_until_up(mode.port, server)
            run_clients(mode.port, uploads, args.k, args.clients, args.warmup, None)
        for _ in range(args.rounds):
            for mode in modes:
                measure(mode, uploads, args, args.seconds / args.rounds)
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(30)
    return modes


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--index", type=Path, default=SAMPLE, help="Folder of photos to index (default: the sample).")
    parser.add_argument("--queries", type=Path, default=SAMPLE, help="Folder of photos to upload as queries.")
    parser.add_argument("--limit", type=int, default=2000, help="At most this many photos indexed.")
    parser.add_argument("--clients", type=int, default=8, choices=range(1, 65), metavar="1..64")
    parser.add_argument("--seconds", type=float, default=30.0, help="Measured load per mode (at most 600).")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds the seconds are split into.")
    parser.add_argument("--warmup", type=float, default=5.0, help="Unmeasured load before the measurements.")
    parser.add_argument("-k", dest="k", type=int, default=10)
    parser.add_argument("--port", type=int, default=18731, help="The first server's port; the second uses the next.")
    parser.add_argument("--runtime", default="auto", help="What runs the network in both servers (retrieve serve --runtime).")
    parser.add_argument("--json", action="store_true", help="Print the results as JSON.")
    args = parser.parse_args()
    args.seconds, args.rounds = min(args.seconds, 600.0), max(1, args.rounds)
    uploads = [multipart(p.read_bytes(), p.name, args.k) for p in photos_in(args.queries, 200)]
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        bundle = work / "bundle"
        indexed = photos_in(args.index, args.limit)
        build_bundle(bundle, indexed)
        modes = bench(bundle, uploads, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [m.row() for m in modes]
    ratio = modes[1].qps / modes[0].qps if modes[0].qps else float("inf")
    if args.json:
        print(json.dumps({"indexed": len(indexed), "clients": args.clients, "seconds": args.seconds, "runtime": args.runtime,
                          "rounds": args.rounds, "modes": rows, "batched_over_one_at_a_time": round(ratio, 2)}))
        return
    print(f"{len(indexed)} images indexed, {len(uploads)} query photos, {args.clients} clients, "
          f"{args.seconds:.0f} s per mode in {args.rounds} alternating rounds, k={args.k}, runtime {args.runtime}, "
          f"{os.cpu_count()} CPUs")
    print("| mode | requests | QPS | p50 ms | p99 ms | errors | searches per pass | load avg after each round |")
    print("|---|---|---|---|---|---|---|---|")
    for m, r in zip(modes, rows):
        print(f"| {r['mode']} | {r['requests']} | {r['qps']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} | "
              f"{r['searches_per_pass']} | {', '.join(f'{x:.2f}' for x in m.loads)} |")
    print(f"batched / one at a time: {ratio:.2f}x QPS")


if __name__ == "__main__":
    main()
