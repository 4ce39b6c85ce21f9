"""Chaos test: kill -9 every kind of writer at random moments, then check that nothing broke.

Unit tests stop a writer at the points someone thought of; this script stops real
processes at points nobody chose. On a few hundred real photos (Caltech-101, copied into
a temp folder), each run

  1. mutates the folder a little (deletes, re-adds, touches, renames, copies and rewrites
     files), so that indexing has real work to do;
  2. starts ``retrieve index`` (the real CLI), a tag/metadata writer on the Python API
     (``Engine.tag``, ``Engine.set_metadata``, now and then ``Engine.remove``), sometimes
     ``retrieve reindex --backend hnsw|ivf|flat|annoy``, ``retrieve remove`` and
     ``retrieve query``, at random offsets, and kills -9 the indexer, the re-indexer and
     the writer each at a random moment within its expected duration;
  3. runs ``retrieve index`` once to completion, as a user would after a crash;
  4. checks the invariants.

A reader process queries the bundle through the API for the whole session (vectors, ids,
filters, dedup, recommendations; a fresh Engine every few queries, so saved index files
are loaded too) and logs every result with its start time.

Invariants, and the counter a breach adds to:

  lost        a file in the folder with no ok row, an ok row without its vector, a vector
              whose own search does not rank it first (a byte- or vector-identical copy may
              tie), a live image missing from a reader's search with its own vector, or a
              committed tag/metadata write that is gone;
  duplicated  a row whose file is gone (a renamed file listed twice), two rows for one
              path, or one id twice in one result list;
  stale       a removed id returned by a query that started after the removal committed
              (seen by the reader in the catalog's tombstones, or known from a finished
              ``retrieve remove`` / ``Engine.remove``);
  errors      "internal error" or a traceback on any CLI's stderr, a CLI exit status of 1,
              a reader/writer exception that is not a RetrievalError, a hung command;
  busy        (not a failure) IndexBusyError: a writer waited too long for the lock.

Progress goes to stderr; stdout gets one line (or JSON with --json), and the exit status
is 1 if lost, duplicated, stale or errors is not zero:

    .venv/bin/python scripts/chaos.py                         # 20 runs on 300 photos
    .venv/bin/python scripts/chaos.py --runs 3 --images 60    # a quick look
    runs 20, kills 49, lost 0, duplicated 0, stale 0, errors 0, busy 0

The temp folder (photos, bundle, every process's log) is deleted at the end unless
--keep is given or a breach was found.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "caltech101"
CLI = [sys.executable, "-m", "retrieval.cli"]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
ENV.pop("RETRIEVE_INDEX_DIR", None)

# IVF gets parameters that make it train on a few hundred vectors (at its defaults it keeps
# them all in its exact buffer), Annoy few trees. HNSW keeps its defaults: at M=8 FAISS
# leaves about one image in a thousand unreachable in the graph, which is a recall limit,
# not the damage a crash does that this script looks for.
BACKENDS: dict[str, list[str]] = {
    "flat": [], "hnsw": [], "ivf": ["train_min=40", "nlist=8", "nprobe=2"], "annoy": ["n_trees=8"],
}
INTERNAL_ERROR = ("internal error", "Traceback (most recent call last)")
BUSY = "being written by another process"  # IndexBusyError's message, as the CLI prints it
HUNG_S = 600.0  # a command not asked to die that runs this long is hung
SAME_VECTOR = 1 - 1e-5  # cosine at which two stored vectors are the same picture


def say(message: str) -> None:
    """Progress and findings: stderr, so that stdout holds only the result line."""
    print(f"[chaos] {message}", file=sys.stderr, flush=True)


@dataclass
class Tally:
    """The counters of the result line; every breach is also described on stderr."""

    runs: int = 0
    kills: int = 0
    lost: int = 0
    duplicated: int = 0
    stale: int = 0
    errors: int = 0
    busy: int = 0

    def flag(self, counter: str, message: str) -> None:
        setattr(self, counter, getattr(self, counter) + 1)
        say(f"{counter.upper()}: {message}")

    @property
    def failed(self) -> bool:
        return bool(self.lost or self.duplicated or self.stale or self.errors)

    def line(self) -> str:
        return ", ".join(f"{name} {value}" for name, value in asdict(self).items())


# ---------------------------------------------------------------------- reading the catalog


def peek(catalog: Path, *queries: str) -> list[list[tuple[Any, ...]]] | None:
    """Rows of each query, read in one snapshot, straight from SQLite (read-only).

    The harness reads the catalog beside the engine, not through it: what it checks the
    engine against must not share the engine's bugs. None while the catalog does not
    exist or its creation has not made the tables yet.
    """
    if not catalog.is_file():
        return None
    conn = sqlite3.connect(f"file:{quote(str(catalog))}?mode=ro", uri=True, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN")
        return [conn.execute(q).fetchall() for q in queries]
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()


OK_IDS = "SELECT id FROM images WHERE status = 'ok'"
TOMBSTONES = "SELECT image_id FROM tombstones"


# ---------------------------------------------------------------------- the reader process


def reader(bundle: Path, log: Path, stop: Path, device: str, seed: int) -> None:
    """Query until `stop` exists; one JSON line per attempt in `log`.

    Before each query it snapshots the removed ids (tombstones, plus ok ids that have
    disappeared: ids are never reused) and the ok ids; a result holding an id removed
    before the query started is stale. A search with a live image's own vector must
    return it, unless the image was removed or re-embedded meanwhile.
    """
    from retrieval import Engine, EngineOptions, IndexBusyError, RetrievalError

    rng = random.Random(seed)
    catalog = bundle / "catalog.sqlite"
    removed: set[int] = set()
    ever_ok: set[int] = set()
    engine: Any = None
    queries = 0
    with open(log, "a", buffering=1) as out:
        while not stop.exists():
            time.sleep(0.1)
            seen = peek(catalog, OK_IDS, TOMBSTONES)
            if seen is None or not seen[0]:
                time.sleep(0.5)
                continue
            ok = {r[0] for r in seen[0]}
            removed |= {r[0] for r in seen[1]} | (ever_ok - ok)
            ever_ok |= ok
            t0 = time.time()
            record: dict[str, Any] = {"t0": t0}
            try:
                if engine is None or queries % 10 == 0:  # a fresh Engine loads the saved index file
                    if engine is not None:
                        engine.close()
                    engine = None
                    engine = Engine.open(bundle, options=EngineOptions(device=device))
                queries += 1
                record.update(_one_query(engine, rng, sorted(ok), catalog))
            except IndexBusyError as e:
                record.update(busy=str(e))
            except RetrievalError as e:
                record.update(refused=f"{type(e).__name__}: {e}")
            except Exception:
                record.update(error=traceback.format_exc())
            if "ids" in record:
                record["stale"] = sorted(set(record["ids"]) & removed)
            out.write(json.dumps(record) + "\n")


def _one_query(engine: Any, rng: random.Random, ok: list[int], catalog: Path) -> dict[str, Any]:
    """One query of a random kind about a random live image: its kind, the ids returned,
    whether one id came twice, and, for a plain search, a live image its own vector missed."""
    x = rng.choice(ok)
    vec = engine.vectors([x])[0]
    kind = rng.choices(["search", "similar", "filter", "dedup", "recommend"], [4, 1, 1, 1, 1])[0]
    if kind == "search":
        hits = engine.search(vec, k=rng.choice([1, 5, 20]))
    elif kind == "similar":
        hits = engine.similar(x, k=10)
    elif kind == "filter":
        hits = engine.search(vec, k=10, where={"rating": rng.randrange(5)})
    elif kind == "dedup":
        hits = engine.search(vec, k=10, dedup=0.95)
    else:
        hits = engine.recommend([x, rng.choice(ok)], k=10)
    ids = [h.id for h in hits]
    result: dict[str, Any] = {"kind": kind, "ids": ids, "dup": len(set(ids)) != len(ids)}
    if kind == "search" and x not in ids and not any(h.score >= SAME_VECTOR for h in hits):
        after = peek(catalog, OK_IDS)
        still_same = engine.catalog.vectors([x]).get(x)
        if after is not None and (x,) in after[0] and still_same is not None and (still_same == vec).all():
            result["missing"] = x
    return result


# ---------------------------------------------------------------------- the writer process


def writer(bundle: Path, log: Path, run: int, device: str, seed: int) -> None:
    """Tag, untag, rate and now and then remove random live images until killed.

    Each operation is logged before ("begin") and after it returns ("done", or how it
    failed), so the checker knows which writes committed and which one the kill may
    have cut. Tags are unique per operation; a rating is written as the image's whole
    metadata with one key changed (set_metadata replaces it), which only this process
    does, so what it read is what it keeps.
    """
    from retrieval import Engine, EngineOptions, IndexBusyError, RetrievalError

    rng = random.Random(seed)
    tagged: list[tuple[int, str]] = []
    engine: Any = None
    n = 0
    with open(log, "a", buffering=1) as out:
        def emit(**record: Any) -> None:
            out.write(json.dumps({**record, "t": time.time()}) + "\n")

        while True:
            time.sleep(rng.uniform(0.0, 0.1))
            n += 1
            op: dict[str, Any] = {}
            try:
                if engine is None:
                    engine = Engine.open(bundle, options=EngineOptions(device=device))
                ok = [int(i) for i in engine.catalog.ids_matching([])]
                if not ok:
                    continue
                kind = rng.choices(["tag", "untag", "rate", "remove"], [45, 15, 35, 5])[0]
                if kind == "untag" and tagged:
                    image_id, value = tagged.pop(rng.randrange(len(tagged)))
                    op = {"op": "untag", "id": image_id, "value": value}
                elif kind == "rate":
                    op = {"op": "rate", "id": rng.choice(ok), "value": n % 5}
                elif kind == "remove":
                    op = {"op": "remove", "id": rng.choice(ok)}
                else:
                    op = {"op": "tag", "id": rng.choice(ok), "value": f"r{run}w{n}"}
                emit(phase="begin", **op)
                _write(engine, op)
                emit(phase="done", **op)
                if op["op"] == "tag":
                    tagged.append((op["id"], op["value"]))
            except IndexBusyError as e:
                emit(phase="busy", message=str(e), **op)
            except RetrievalError as e:
                emit(phase="refused", message=f"{type(e).__name__}: {e}", **op)
                if engine is None:
                    time.sleep(0.5)  # no bundle yet
            except Exception:
                emit(phase="error", message=traceback.format_exc(), **op)


def _write(engine: Any, op: dict[str, Any]) -> None:
    """Carry out one writer operation through the public API."""
    image_id = op["id"]
    if op["op"] == "tag":
        engine.tag([image_id], add=[op["value"]])
    elif op["op"] == "untag":
        engine.tag([image_id], remove=[op["value"]])
    elif op["op"] == "rate":
        row = engine.catalog.rows_by_id([image_id]).get(image_id)
        engine.set_metadata(image_id, {**(row.meta if row is not None else {}), "rating": op["value"]})
    else:
        engine.remove([image_id])


# ---------------------------------------------------------------------- the photo folder


class Photos:
    """The folder under test, and which Caltech file each of its files holds the bytes of
    (so a re-added file can come back at its old path, and content changes are real)."""

    def __init__(self, root: Path, sources: list[Path], count: int, rng: random.Random) -> None:
        self.root, self.rng = root, rng
        self.sources = sources  # every photo this session may use; `count` of them start in the folder
        self.files: dict[Path, Path] = {}
        for src in sources[:count]:
            self._copy(src, self._home(src))

    def _home(self, src: Path) -> Path:
        return self.root / src.parent.name / src.name

    def _copy(self, src: Path, dst: Path) -> None:
        """Write `src`'s bytes (a source or a file in the folder) to `dst`, with a fresh
        mtime, as a download or an export makes."""
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        self.files[dst] = self.files.get(src, src)

    def _unused(self) -> list[Path]:
        used = set(self.files.values())
        return [s for s in self.sources if s not in used]

    def mutate(self, run: int) -> str:
        """Delete 1-3 files, add 1-3 back, touch one, rename one, and sometimes copy one
        to a second name or give one another photo's bytes. Returns what it did."""
        rng = self.rng
        deleted = rng.sample(sorted(self.files), rng.randint(1, 3))
        for path in deleted:
            path.unlink()
            del self.files[path]
        added = rng.sample(self._unused(), min(rng.randint(1, 3), len(self._unused())))
        for src in added:
            dst = self._home(src)
            self._copy(src, dst if dst not in self.files else dst.with_name(f"{dst.stem}-r{run}{dst.suffix}"))
        now = time.time_ns()
        os.utime(rng.choice(sorted(self.files)), ns=(now, now))
        old = rng.choice(sorted(self.files))
        new = rng.choice(sorted({p.parent for p in self.files})) / f"{old.stem}-mv{run}{old.suffix}"
        os.rename(old, new)
        self.files[new] = self.files.pop(old)
        done = f"deleted {len(deleted)}, added {len(added)}, touched 1, renamed 1"
        if rng.random() < 0.3:
            original = rng.choice(sorted(self.files))
            self._copy(original, original.with_name(f"{original.stem}-copy{run}{original.suffix}"))
            done += ", copied 1"
        unused = self._unused()
        if unused and rng.random() < 0.3:
            self._copy(rng.choice(unused), rng.choice(sorted(self.files)))
            done += ", rewrote 1"
        return done

    def paths(self) -> set[str]:
        """Every file in the folder, as the absolute path the catalog stores."""
        return {os.path.abspath(p) for p in self.root.rglob("*") if p.is_file()}


def pick_photos(count: int, rng: random.Random) -> list[Path]:
    """`count` Caltech photos in a seeded random order (from both splits)."""
    names = sorted({line.strip() for split in ("train.txt", "test.txt")
                    for line in (DATA / split).read_text().splitlines() if line.strip()})
    if count > len(names):
        raise SystemExit(f"only {len(names)} photos in {DATA}")
    return [DATA / "images" / name for name in rng.sample(names, count)]


# ---------------------------------------------------------------------- child processes


@dataclass
class Job:
    """A child process this script started, in its own process group, so a kill takes
    any workers it spawned with it."""

    name: str
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    started: float = field(default_factory=time.monotonic)
    wall_started: float = field(default_factory=time.time)
    kill_after: float | None = None  # seconds after its start; None: let it finish
    killed: bool = False
    ended: float | None = None  # wall time its end was seen (within run_jobs' poll interval)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> bool:
        """SIGKILL its group; True if it was still running (a kill that counted)."""
        if not self.running:
            return False
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.killed = True
        return True

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


def spawn(name: str, argv: list[str], logs: Path, kill_after: float | None = None) -> Job:
    """Start `argv` with its stdout and stderr in files (a pipe nobody reads could block it)."""
    out, err = logs / f"{name}.out", logs / f"{name}.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(argv, stdout=o, stderr=e, stdin=subprocess.DEVNULL, env=ENV, cwd=ROOT,
                                start_new_session=True)
    return Job(name, proc, out, err, kill_after=kill_after)


def judge(job: Job, tally: Tally) -> str:
    """Count what a finished job's exit and stderr show; returns its outcome in a word or two.

    Exit 2 with a one-line message is a user error, the designed answer to a request the
    bundle's state refuses (no index yet, an id removed meanwhile): not a failure.
    """
    err = job.stderr()
    if any(s in err for s in INTERNAL_ERROR):
        tally.flag("errors", f"{job.name} printed an internal error (exit {job.proc.returncode}): {err[-1500:]}")
        return "internal error"
    if job.killed:
        return "killed"
    rc = job.proc.returncode
    if rc == 0:
        return "done"
    if rc == 2 and BUSY in err:
        tally.busy += 1
        return "busy"
    if rc == 2:
        return f"refused ({err.strip().splitlines()[-1][:100] if err.strip() else 'no message'})"
    tally.flag("errors", f"{job.name} exited with {rc}: {err[-1500:]}")
    return f"exit {rc}"


def run_jobs(jobs: list[tuple[float, Callable[[], Job]]], tally: Tally) -> list[Job]:
    """Start each job at its offset (seconds), kill those with a kill time when it comes,
    and return once every job has ended. A job not meant to be killed that outlives
    HUNG_S is killed and counted as an error."""
    pending = sorted(jobs, key=lambda j: j[0])
    started: list[Job] = []
    t0 = time.monotonic()
    try:
        while pending or any(j.ended is None for j in started):
            now = time.monotonic()
            while pending and pending[0][0] <= now - t0:
                started.append(pending.pop(0)[1]())
            for job in started:
                age = now - job.started
                if job.kill_after is not None and age >= job.kill_after and not job.killed:
                    tally.kills += job.kill()  # a no-op once it has ended: judge() then reads its exit
                elif job.kill_after is None and age > HUNG_S and job.kill():
                    tally.flag("errors", f"{job.name} hung: killed after {HUNG_S:.0f} s")
                if job.ended is None and not job.running:
                    job.ended = time.time()
            time.sleep(0.05)
    except BaseException:  # interrupted: leave no index or writer running behind us
        for job in started:
            job.kill()
        raise
    return started


# ---------------------------------------------------------------------- the session


@dataclass
class Estimates:
    """How long commands take here, learned from each recovery and writer, so that kills
    land in the work (planning, embedding, commits, saving the index) and not mostly in
    the interpreter's start or after the end."""

    startup_s: float = 8.0  # `retrieve index`'s start: interpreter, imports, opening the bundle, the plan
    writer_startup_s: float = 5.0  # until the writer's first write
    images_per_s: float = 10.0  # model load included
    reindex_s: float = 2.0  # a whole `retrieve reindex` (it loads no model)

    def index_s(self, pending: int) -> float:
        return self.startup_s + pending / self.images_per_s

    def index_kill(self, rng: random.Random, pending: int) -> float:
        return rng.uniform(0.8 * self.startup_s, self.index_s(pending))

    def reindex_kill(self, rng: random.Random) -> float:
        """A little past the expected end, so that some finish and keep the estimate true."""
        return rng.uniform(0.1, 1.2 * self.reindex_s)


class Session:
    """One chaos session: the temp folder, the long-lived reader, what the logs have told
    so far, and the counters."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.rng = random.Random(args.seed)
        self.logs = work / "logs"
        self.logs.mkdir()
        self.bundle = work / "bundle"
        self.catalog = self.bundle / "catalog.sqlite"
        reserve = max(10, args.images // 10)
        self.photos = Photos(work / "photos", pick_photos(args.images + reserve, self.rng), args.images, self.rng)
        self.tally = Tally()
        self.est = Estimates()
        self.backend_flag = _backend_flag()
        self.removed_at: dict[int, float] = {}  # id -> wall time its removal was known committed
        self.expected: dict[tuple[int, str], set[Any]] = {}  # (id, "tag:T" | "rating") -> allowed values
        self.reader_log, self.reader_stop = self.logs / "reader.jsonl", work / "reader.stop"
        self.reader_seen, self.reader_job = 0, self._start_reader()

    # ---------------------------------------------------------------- commands

    def _retrieve(self, *args: str) -> list[str]:
        return [*CLI, *args, "-i", str(self.bundle)]

    def _index_argv(self) -> list[str]:
        return self._retrieve("index", str(self.photos.root), "--json", "--quiet", "--device", self.args.device,
                              "--workers", "0", "--batch-size", str(self.args.batch_size))

    def _start_reader(self) -> Job:
        return spawn(f"reader-{self.tally.runs}", [sys.executable, __file__, "--role", "reader", "--bundle",
                                                   str(self.bundle), "--log", str(self.reader_log), "--stop",
                                                   str(self.reader_stop), "--device", self.args.device,
                                                   "--seed", str(self.args.seed)], self.logs)

    # ---------------------------------------------------------------- one run

    def run(self, number: int) -> None:
        """Mutate, start and kill, recover, check."""
        rng, est, name = self.rng, self.est, f"r{number:02d}"
        changes = self.photos.mutate(number) if number > 1 else "a new folder"
        pending = self._pending()
        span = est.index_s(pending)
        writer_argv = [sys.executable, __file__, "--role", "writer", "--bundle", str(self.bundle),
                       "--log", str(self.logs / f"{name}-writer.jsonl"), "--run", str(number),
                       "--device", self.args.device, "--seed", str(self.args.seed * 1000 + number)]
        jobs = [(0.0, self._job(f"{name}-index", self._index_argv(), est.index_kill(rng, pending))),
                (0.0, self._job(f"{name}-writer", writer_argv, est.writer_startup_s + rng.uniform(0, span)))]
        if rng.random() < 0.5:
            backend = rng.choice(sorted(BACKENDS))
            params = [a for p in BACKENDS[backend] for a in ("--param", p)]
            jobs.append((rng.uniform(0, span), self._job(
                f"{name}-reindex-{backend}", self._retrieve("reindex", self.backend_flag, backend, *params, "--json"),
                est.reindex_kill(rng))))
        ok = [r[0] for r in (peek(self.catalog, OK_IDS) or [[]])[0]]
        removing = rng.sample(ok, min(len(ok), rng.randint(1, 2))) if ok and rng.random() < 0.5 else []
        if removing:
            jobs.append((rng.uniform(0, span), self._job(
                f"{name}-remove", self._retrieve("remove", *map(str, removing), "--json"))))
        removed_before_query: set[int] = set()
        if ok and rng.random() < 0.3:
            make_query = self._job(f"{name}-query", self._retrieve("query", "--id", str(rng.choice(ok)), "-k", "10",
                                                                   "--json", "--device", self.args.device))

            def query() -> Job:
                removed_before_query.update(self._removed_now())
                return make_query()
            jobs.append((rng.uniform(0, span), query))

        say(f"run {number}/{self.args.runs}: {changes}; {pending} to embed, expected {span:.0f} s")
        outcomes, finished = [], run_jobs(jobs, self.tally)
        for job in finished:
            outcome = judge(job, self.tally)
            when = f" at {job.kill_after:.1f} s" if job.killed else ""
            outcomes.append(f"{job.name.split('-', 1)[1]} {outcome}{when}")
            if job.name.endswith("-remove") and outcome == "done":
                for i in removing:
                    self.removed_at.setdefault(i, job.ended or time.time())
            elif "-reindex-" in job.name and outcome == "done":
                est.reindex_s = (job.ended or time.time()) - job.wall_started
            elif job.name.endswith("-query") and outcome == "done":
                ids = [h["id"] for h in json.loads(job.stdout())["results"]]
                self._judge_query({"t0": job.wall_started, "kind": "cli", "ids": ids,
                                   "dup": len(ids) != len(set(ids)), "stale": sorted(set(ids) & removed_before_query)},
                                  job.name)
        writer_job = next(j for j in finished if j.name.endswith("-writer"))
        writes = self._read_writer_log(self.logs / f"{name}-writer.jsonl", writer_job.wall_started)
        say(f"  {', '.join(outcomes)}; {writes} writes committed")
        self.tally.runs += 1
        recovered = self._recover(name)
        self._read_reader_log()
        if recovered:
            self._check()

    def _job(self, name: str, argv: list[str], kill_after: float | None = None) -> Callable[[], Job]:
        """A job to start later; its kill time is drawn now, so a seed gives the same session."""
        return lambda: spawn(name, argv, self.logs, kill_after)

    def _pending(self) -> int:
        """Files the next index must embed: those not in the catalog with this size and mtime."""
        rows = peek(self.catalog, "SELECT path, size, mtime_ns FROM images WHERE status = 'ok'")
        known = set(rows[0]) if rows else set()
        return sum((p, (st := os.stat(p)).st_size, st.st_mtime_ns) not in known for p in self.photos.paths())

    def _removed_now(self) -> set[int]:
        """Ids removed so far, as the catalog's tombstones say."""
        rows = peek(self.catalog, TOMBSTONES)
        return {r[0] for r in rows[0]} if rows else set()

    def _recover(self, name: str) -> bool:
        """`retrieve index` to completion, as a user would after a crash (again if busy);
        False if it did not finish (counted as an error: the invariants then cannot hold)."""
        for attempt in range(3):
            job = run_jobs([(0.0, self._job(f"{name}-recover{attempt}", self._index_argv()))], self.tally)[0]
            outcome = judge(job, self.tally)
            if outcome == "done":
                report = json.loads(job.stdout())
                wall = time.monotonic() - job.started
                self.est.startup_s = max(1.0, wall - report["seconds"])
                if report["embedded"] >= 5:
                    self.est.images_per_s = report["embedded"] / max(report["seconds"], 0.1)
                say(f"  recovery: added {report['added']}, updated {report['updated']}, moved {report['moved']}, "
                    f"copies {report['duplicates']}, removed {report['removed']}, failed {report['failed']}, "
                    f"{report['embedded']} embedded in {wall:.1f} s")
                return True
            if outcome.startswith("refused"):
                self.tally.flag("errors", f"recovery index {outcome}")
            if outcome != "busy":
                return False  # an internal error or exit status is counted by judge()
        self.tally.flag("errors", "recovery index busy three times")
        return False

    # ---------------------------------------------------------------- the logs

    def _read_writer_log(self, log: Path, started: float) -> int:
        """Learn which writes committed (and which the kill may have cut) and which ids
        the writer removed, and count its errors; returns how many writes committed."""
        pending: dict[str, Any] | None = None
        done = 0
        records = list(_jsonl(log))
        if records:
            self.est.writer_startup_s = records[0]["t"] - started
        for record in records:
            phase = record["phase"]
            if phase == "begin":
                pending = record
                continue
            pending = None
            if phase == "done":
                self._expect(record, certain=True)
                done += 1
            elif phase == "busy":
                self.tally.busy += 1
            elif phase == "error":
                self.tally.flag("errors", f"writer: {record['message']}")
                if "op" in record:
                    self._expect(record, certain=False)
        if pending is not None:  # killed between begin and done: it may or may not have committed
            self._expect(pending, certain=False)
        return done

    def _expect(self, op: dict[str, Any], certain: bool) -> None:
        """Fold one writer operation into the allowed final values of what it wrote."""
        image_id = op["id"]
        if op["op"] == "remove":
            if certain:
                self.removed_at.setdefault(image_id, op["t"])
            return
        key, value = {"tag": (f"tag:{op.get('value')}", True), "untag": (f"tag:{op.get('value')}", False),
                      "rate": ("rating", op.get("value"))}[op["op"]]
        initial = {False} if key.startswith("tag:") else {None}
        allowed = self.expected.setdefault((image_id, key), initial)
        if certain:
            allowed.clear()
        allowed.add(value)

    def _read_reader_log(self) -> None:
        """Judge the reader's new records; restart the reader if it died."""
        records = list(_jsonl(self.reader_log))
        for record in records[self.reader_seen:]:
            self._judge_query(record, "reader")
        self.reader_seen = len(records)
        if not self.reader_job.running and not self.reader_stop.exists():
            self.tally.flag("errors", f"the reader died (exit {self.reader_job.proc.returncode}): "
                                      f"{self.reader_job.stderr()[-1500:]}")
            self.reader_job = self._start_reader()

    def _judge_query(self, record: dict[str, Any], who: str) -> None:
        """Count one query's breaches: its own findings, plus ids whose removal was known
        committed (by a finished remove) before it started."""
        if "error" in record:
            self.tally.flag("errors", f"{who}: {record['error']}")
        elif "busy" in record:
            self.tally.busy += 1
        if "ids" not in record:
            return
        stale = set(record["stale"]) | {i for i in record["ids"] if self.removed_at.get(i, float("inf")) < record["t0"]}
        for i in sorted(stale):
            self.tally.flag("stale", f"{who}: {record['kind']} query at {record['t0']:.3f} returned removed id {i}")
        if record["dup"]:
            self.tally.flag("duplicated", f"{who}: {record['kind']} query returned an id twice: {record['ids']}")
        if "missing" in record:
            self.tally.flag("lost", f"{who}: searching id {record['missing']}'s own vector did not return it, "
                                    "though it was live before and after the query")

    # ---------------------------------------------------------------- the invariants

    def _check(self) -> None:
        """After a completed index: the catalog matches the folder, every vector finds
        itself, and every committed write is still there."""
        from retrieval import Engine, EngineOptions

        files = self.photos.paths()
        counts = peek(self.catalog, "SELECT path, count(*) FROM images GROUP BY path HAVING count(*) > 1")
        for path, n in (counts or [[]])[0]:
            self.tally.flag("duplicated", f"{n} rows for {path}")
        with Engine.open(self.bundle, options=EngineOptions(device=self.args.device)) as engine:
            every_id = [i for (i,) in (peek(self.catalog, "SELECT id FROM images") or [[]])[0]]
            rows = {r.path: r for r in engine.catalog.rows_by_id(every_id).values()}
            for path in sorted(files - set(rows)):
                self.tally.flag("lost", f"{path} is in the folder but not in the catalog")
            for path in sorted(set(rows) - files):
                self.tally.flag("duplicated", f"row {rows[path].id} for {path}, which is no longer in the folder")
            for path in sorted(files & set(rows)):
                if rows[path].status != "ok":
                    self.tally.flag("lost", f"{path} failed: {rows[path].error}")
            ok = {r.id: r for r in rows.values() if r.status == "ok"}
            vectors = engine.catalog.vectors(list(ok))
            for i in sorted(set(ok) - set(vectors)):
                self.tally.flag("lost", f"id {i} ({ok[i].path}) has no stored vector")
            for i, vec in sorted(vectors.items()):
                hits = engine.search(vec, k=1)
                top = hits[0].id if hits else None
                if top != i and not (top in vectors and (ok[top].content_hash == ok[i].content_hash or
                                                        float(vectors[top] @ vec) >= SAME_VECTOR)):
                    self.tally.flag("lost", f"id {i} ({ok[i].path}): its own vector's top hit is {top}")
            for (image_id, key), allowed in sorted(self.expected.items(), key=str):
                if image_id not in ok:
                    continue
                meta = ok[image_id].meta or {}
                value = key[4:] in meta.get("tags", []) if key.startswith("tag:") else meta.get("rating")
                if value not in allowed:
                    self.tally.flag("lost", f"id {image_id}: {key} is {value!r}, a committed write left {allowed}")
        say(f"  check: {len(files)} files, {len(ok)} ok rows, {len(vectors)} vectors searched; {self.tally.line()}")

    def close(self) -> None:
        """Stop the reader (it finishes its query first) and judge its last records."""
        self.reader_stop.touch()
        try:
            self.reader_job.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.reader_job.kill()
        self._read_reader_log()
        records = list(_jsonl(self.reader_log))
        answered = sum("ids" in r for r in records)
        refused = sum("refused" in r for r in records)
        say(f"reader: {len(records)} queries, {answered} answered, {refused} refused (a user error such as "
            "an id removed meanwhile, or no index yet)")


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The complete JSON lines of a log (a kill can cut the last one short)."""
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue


def _backend_flag() -> str:
    """`--backend`, or `--index` on builds before the CLI's rework."""
    help_text = subprocess.run([*CLI, "reindex", "--help"], capture_output=True, text=True, env=ENV, cwd=ROOT).stdout
    return "--backend" if "--backend" in help_text else "--index"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of mutate, start, kill, recover, check (20)")
    parser.add_argument("--images", type=int, default=300, help="photos in the folder (300)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the photos, mutations and kill times (0)")
    parser.add_argument("--device", default="cpu", help="device of every process (cpu)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images per forward pass (8: small batches commit often, so kills land between them)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (kept anyway after a breach)")
    parser.add_argument("--json", action="store_true", help="print the counters as JSON")
    for hidden in ("--role", "--bundle", "--log", "--stop"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--run", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "reader":
        reader(Path(args.bundle), Path(args.log), Path(args.stop), args.device, args.seed)
        return 0
    if args.role == "writer":
        writer(Path(args.bundle), Path(args.log), args.run, args.device, args.seed)
        return 0

    work = Path(tempfile.mkdtemp(prefix="retrieve-chaos-"))
    start = time.monotonic()
    say(f"{args.runs} runs on {args.images} photos in {work}, seed {args.seed}")
    session = Session(args, work)
    try:
        for number in range(1, args.runs + 1):
            session.run(number)
    finally:
        session.close()
    tally = session.tally
    say(f"{time.monotonic() - start:.0f} s, load average {os.getloadavg()[0]:.1f}")
    if args.keep or tally.failed:
        say(f"kept {work}")
    else:
        shutil.rmtree(work)
    print(json.dumps(asdict(tally)) if args.json else tally.line())
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
