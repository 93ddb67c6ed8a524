"""The seven workloads of issue 7. Each returns one or more result tables (dicts that
report.py formats). Every target gets the same runs, interleaved (run 1 on every target,
then run 2, ...) so that background load hits all of them alike. A target that fails a
run is marked n/a with the reason and skipped for the rest of that workload."""
import hashlib
import json
import os
import re
import subprocess
import sys
import time

from . import data
from .procs import OpFailed, read_status_kib, run_timed

HERE = os.path.dirname(os.path.abspath(__file__))
LIMIT = "limit (curl, presigned URL)"
PLIMIT = "parallel limit (boto3 multipart, 8 MiB × 8)"
LOCAL = "local file (reference)"


class Table:
    def __init__(self, wid, title, columns, ratio_keys, nbytes=None, notes=None):
        self.wid, self.title, self.columns = wid, title, columns
        self.ratio_keys, self.nbytes, self.notes = ratio_keys, nbytes, list(notes or [])
        self.rows = {}   # label -> {"values": {key: [samples]}, "na": reason, "extra": set}

    def row(self, label):
        return self.rows.setdefault(label, {"values": {}, "na": None, "extra": []})

    def add(self, label, **vals):
        r = self.row(label)
        for k, v in vals.items():
            r["values"].setdefault(k, []).extend(v if isinstance(v, list) else [v])

    def fail(self, label, reason):
        r = self.row(label)
        if not r["na"]:
            r["na"] = str(reason)

    def failed(self, label):
        return label in self.rows and self.rows[label]["na"] is not None

    def note_row(self, label, text):
        r = self.row(label)
        if text not in r["extra"]:
            r["extra"].append(text)

    def to_json(self):
        return {"id": self.wid, "title": self.title, "columns": self.columns,
                "ratio_keys": self.ratio_keys, "bytes": self.nbytes, "notes": self.notes,
                "rows": self.rows}


SAME_AS_OFF = "not measured: reads and lists exactly as rclone (off), see below"
SAME_AS_OFF_NOTE = ("rclone (writes) is not measured on read-only workloads: with "
                    "--vfs-cache-mode writes, rclone reads files opened read-only straight "
                    "from the remote, as in mode off (rclone docs), and lists the same way; "
                    "`--all-cells` measures it anyway.")


def _readers(bench, targets, tables):
    """Targets for a read-only workload: rclone (writes) only with --all-cells."""
    if bench.args.all_cells:
        return [tg for tg in targets if not getattr(tg, "write_only", False)]
    out = []
    for tg in targets:
        if getattr(tg, "write_only", False):
            continue  # assetfs's write-back mode reads exactly as its default mode
        if getattr(tg, "mode", None) == "writes":
            for tb in tables:
                tb.fail(tg.label, SAME_AS_OFF)
                tb.notes.append(SAME_AS_OFF_NOTE)
        else:
            out.append(tg)
    return out


def _attempt(table, label, fn):
    """Runs one measured run; failures mark the row n/a."""
    if table.failed(label):
        return
    try:
        fn()
    except OpFailed as e:
        table.fail(label, e)
    except Exception as e:  # a bug or an unexpected error is still an honest n/a
        table.fail(label, f"{type(e).__name__}: {e}"[:300])


def _dd(path, timeout):
    """Reads path sequentially with dd bs=1M; returns (seconds, bytes)."""
    dt, _, err = run_timed(["dd", f"if={path}", "of=/dev/null", "bs=1M"], timeout)
    m = re.search(rb"^(\d+) bytes", err or b"", re.M)
    return dt, int(m.group(1)) if m else -1


def _sha256(path, timeout):
    dt, out, _ = run_timed(["sha256sum", path], timeout, stdout=subprocess.PIPE)
    return out.split()[0].decode()


def _curl(bench, argv, timeout):
    return run_timed(["curl", "-sS", "--fail"] + argv, timeout, env=bench.child_env,
                     stdout=subprocess.PIPE)


# ---------------------------------------------------------------------------- 1 write
def _parallel_put(bench, src, key, timeout):
    """The parallel limit: boto3's multipart upload with assetfs's part size and its
    default multipart_parallel, straight to S3 with the credentials."""
    from boto3.s3.transfer import TransferConfig
    cfg = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20,
                         max_concurrency=8, use_threads=True)
    t0 = time.perf_counter()
    bench.s3.upload_file(src, bench.bucket, key, Config=cfg)
    return time.perf_counter() - t0


def w1_write(bench, targets):
    tables = [_w1_write(bench, targets, bench.args.size_mib, "1", all_targets=True)]
    big = getattr(bench.args, "big_write_mib", 0)
    if big and big != bench.args.size_mib:
        # The big row: assetfs (both modes) against the two limits; the peers would take
        # most of the bench's time budget at this size.
        mine = [tg for tg in targets if tg.slug.startswith("assetfs")]
        tables.append(_w1_write(bench, mine, big, "1b", all_targets=False))
    return tables


def _w1_write(bench, targets, mib, wid, all_targets):
    size = mib << 20
    src, _ = bench.sources.local_file(mib)
    t = Table(wid, f"Copy a {mib} MiB file in (`cp`), until durable",
              [("durable", "until durable (s)", "s"), ("close", "close returned (s)", "s")],
              ["durable"], nbytes=size,
              notes=["until durable: assetfs = its CosyncAsset record is `active` (broker "
                     "completed the upload); peers = close returned AND the whole object is "
                     "in S3 (HEAD right after close; for s3fs and rclone (off) that is close "
                     "itself, rclone (writes) uploads after close, default --vfs-write-back 5s).",
                     "limit = one `curl -T` PUT of the same file on a presigned URL; "
                     "parallel limit = boto3's multipart upload, 8 MiB parts, 8 at once "
                     "(assetfs's defaults).",
                     "MiB/s is computed from the median of the first column."])
    tmo = bench.op_timeout(mib)
    for run in range(bench.runs("1") if all_targets else 1):
        for tg in targets:
            def one():
                rel = f"w1/run{run}.bin"
                with tg.mount() as m:
                    dst = tg.write_path(m.path, rel)
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    t0 = time.perf_counter()
                    close, _, _ = run_timed(["cp", src, dst], tmo)
                    durable = _durable(lambda to: tg.durable_file(rel, size, to), close, t0, tmo)
                    t.add(tg.label, durable=durable, close=close)
                tg.cleanup_written(rel)
            _attempt(t, tg.label, one)

        def lim():
            key = f"limit/w1-run{run}.bin"
            url = bench.presign("put_object", key, 3600)
            dt, out, _ = _curl(bench, ["-o", "/dev/null", "-w", "%{http_code}", "-T", src, url], tmo)
            if out.strip() != b"200":
                raise OpFailed(f"PUT answered {out.strip().decode()}")
            if bench.s3.head_object(Bucket=bench.bucket, Key=key)["ContentLength"] != size:
                raise OpFailed("PUT object has the wrong size")
            t.add(LIMIT, durable=dt, close=dt)
            bench.delete_prefix(key)
        _attempt(t, LIMIT, lim)

        def plim():
            key = f"limit/w1p-run{run}.bin"
            dt = _parallel_put(bench, src, key, tmo)
            if bench.s3.head_object(Bucket=bench.bucket, Key=key)["ContentLength"] != size:
                raise OpFailed("multipart object has the wrong size")
            t.add(PLIMIT, durable=dt, close=dt)
            bench.delete_prefix(key)
        _attempt(t, PLIMIT, plim)
    return t


def _durable(wait, close, t0, timeout):
    """Seconds from t0 until durable; close itself when already durable at close."""
    try:
        wait(0)
        return close
    except OpFailed as e:
        if "timed out" not in str(e):
            raise
    wait(timeout)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------- 2 read
def w2_read(bench, targets):
    mib = bench.args.size_mib
    size = mib << 20
    _, sha = bench.sources.big_source(mib)
    cold = Table("2a", f"Read a {mib} MiB file cold (fresh mount, page cache dropped)",
                 [("time", "time (s)", "s")], ["time"], nbytes=size,
                 notes=["`dd bs=1M` to /dev/null; byte count checked; for assetfs also the "
                        "sha256 of the whole file, once (untimed).", "limit = `curl` GET on a presigned URL after "
                        "dropping the page cache."])
    warm = Table("2b", f"Read the same {mib} MiB file again, warm (same mount)",
                 [("time", "time (s)", "s")], ["time"], nbytes=size,
                 notes=["Second `dd` right after the cold one, same mount: whatever the "
                        "filesystem (and the kernel page cache, if the filesystem keeps it) "
                        "holds. limit = a second curl GET (server's page cache warm)."])
    targets = _readers(bench, targets, [cold, warm])
    tmo = bench.op_timeout(mib)
    checked = set()
    for run in range(bench.runs("2")):
        for tg in targets:
            def one():
                with tg.mount() as m:
                    p = tg.data_path(m.path, data.big_key(0))
                    bench.drop_caches(m.pid)
                    dt, n = _dd(p, tmo)
                    if n != size:
                        raise OpFailed(f"cold read returned {n} bytes, not {size}")
                    dt2, n2 = _dd(p, tmo)
                    if n2 != size:
                        raise OpFailed(f"warm read returned {n2} bytes, not {size}")
                    # The full-file check costs a third read; the peers are
                    # established, assetfs is the one under test.
                    if tg.slug == "assetfs" and tg.label not in checked:
                        if _sha256(p, tmo) != sha:
                            raise OpFailed("read data differs from the object (sha256)")
                        checked.add(tg.label)
                    cold.add(tg.label, time=dt)
                    warm.add(tg.label, time=dt2)

            def guarded():
                try:
                    one()
                except Exception as e:
                    warm.fail(tg.label, e)
                    raise
            if not warm.failed(tg.label):
                _attempt(cold, tg.label, guarded)

        def lim():
            url = bench.presign("get_object", data.big_key(0), 3600)
            bench.drop_caches()
            res = []
            for _ in range(2):
                dt, out, _ = _curl(bench, ["-o", "/dev/null", "-w", "%{size_download}", url], tmo)
                if int(out) != size:
                    raise OpFailed(f"GET returned {int(out)} bytes")
                res.append(dt)
            cold.add(LIMIT, time=res[0])
            warm.add(LIMIT, time=res[1])
        _attempt(cold, LIMIT, lim)
    return [cold, warm]


# ---------------------------------------------------------------------------- 3 tree
def w3_tree(bench, targets):
    n = bench.args.tree_files
    src, total = bench.sources.tree(n)
    t = Table("3", f"`cp -r` a tree of {n} files of 1-300 KiB ({total / 2**20:.0f} MiB in 10 "
              "folders), until durable",
              [("durable", "until durable (s)", "s"), ("close", "cp returned (s)", "s")],
              ["durable"], nbytes=total,
              notes=["until durable: assetfs = every file's CosyncAsset `active`; peers = "
                     "`cp -r` returned and all objects listed in S3 (rclone (writes) uploads "
                     "after close)."])
    tmo = 60 + n * 0.12   # 1,000 files: 180 s, 6x the slowest peer here; else n/a
    for run in range(bench.runs("3")):
        for tg in targets:
            def one():
                rel = f"w3/run{run}"
                with tg.mount() as m:
                    dst = tg.write_path(m.path, rel)
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    t0 = time.perf_counter()
                    try:
                        close, _, _ = run_timed(["cp", "-r", src, dst], tmo)
                        durable = _durable(lambda to: tg.durable_tree(rel, n, to), close, t0,
                                           max(10, tmo - (time.perf_counter() - t0)))
                    except OpFailed as e:
                        raise OpFailed(f"{e}; {tg.durable_count(rel)} of {n} files durable "
                                       f"after {time.perf_counter() - t0:.0f} s") from None
                    t.add(tg.label, durable=durable, close=close)
                tg.cleanup_written(rel)
            _attempt(t, tg.label, one)
    return [t]


# ---------------------------------------------------------------------------- 4 listing
def w4_list(bench, targets):
    n = bench.args.list_entries
    bench.sources.listing(n)
    ls = Table("4a", f"`ls -l` of a directory with {n} entries (fresh mount)",
               [("time", "time (s)", "s")], ["time"],
               notes=["Entries created directly in S3 (boto3) for the peers, and as "
                      "CosyncAsset records pointing at the same objects for assetfs (in a "
                      "partition of their own, `user_id=bench-list`)."])
    fd = Table("4b", f"`find` of the same directory (fresh mount)",
               [("time", "time (s)", "s")], ["time"])
    targets = _readers(bench, targets, [ls, fd])
    tmo = 60 + n * 0.012   # 10,000 entries: 180 s, 6x the slowest peer here; else n/a
    for run in range(bench.runs("4")):
        for tg in targets:
            def do(table, argv, expect):
                def one():
                    with tg.mount() as m:
                        d = tg.data_path(m.path, data.LIST_DIR + "/x")
                        d = os.path.dirname(d)
                        dt, out, _ = run_timed(argv + [d], tmo, stdout=subprocess.PIPE)
                        got = out.count(b"\n") - 1
                        if got != expect:
                            raise OpFailed(f"listed {got} entries, not {expect}")
                        table.add(tg.label, time=dt)
                _attempt(table, tg.label, one)
            do(ls, ["ls", "-l"], n)
            do(fd, ["find"], n)
    return [ls, fd]


# ---------------------------------------------------------------------------- 5 random
def w5_random(bench, targets):
    mib = bench.args.size_mib
    count = 200
    src, _ = bench.sources.big_source(mib)
    t = Table("5", f"{count} random 4 KiB reads in a {mib} MiB file (fresh mount, page cache "
              "dropped, O_DIRECT)",
              [("median", "median (ms)", "ms"), ("p99", "p99 (ms)", "ms"),
               ("total", "total (s)", "s")], ["median", "p99"],
              notes=[f"Latencies pooled over all runs ({count} per run, different offsets "
                     "per run, same offsets for every target); every block compared with "
                     "the local copy (untimed).",
                     "limit = one curl process, one ranged GET per read (versitygw answers "
                     "range requests with `Connection: close`, so each is a new connection)."])
    targets = _readers(bench, targets, [t])
    tmo = 60 + count * 2
    for run in range(bench.runs("5")):
        seed = 1000 + run
        for tg in targets:
            def one():
                with tg.mount() as m:
                    p = tg.data_path(m.path, data.big_key(0))
                    bench.drop_caches(m.pid)
                    _, out, _ = run_timed([sys.executable, os.path.join(HERE, "randread.py"),
                                           p, str(seed), str(count), src], tmo,
                                          stdout=subprocess.PIPE)
                    res = json.loads(out)
                    if res["mode"] != "O_DIRECT":
                        t.note_row(tg.label, f"no O_DIRECT: {res['mode']}")
                    lat = [x * 1000 for x in res["lat"]]
                    t.add(tg.label, median=lat, p99=lat, total=sum(lat) / 1000)
            _attempt(t, tg.label, one)

        def lim():
            sys.path.insert(0, HERE)
            import randread
            url = bench.presign("get_object", data.big_key(0), 3600)
            cfg = os.path.join(bench.dir, "curl-ranges.cfg")
            with open(cfg, "w") as f:
                for i, off in enumerate(randread.offsets(mib << 20, seed, count)):
                    if i:
                        f.write("next\n")
                    f.write(f'url = "{url}"\nrange = "{off}-{off + 4095}"\n'
                            'output = "/dev/null"\nsilent\nfail\n'
                            'write-out = "%{http_code} %{size_download} %{time_total}\\n"\n')
            bench.drop_caches()
            _, out, _ = run_timed(["curl", "-K", cfg], tmo, env=bench.child_env,
                                  stdout=subprocess.PIPE)
            lat = []
            for line in out.decode().split("\n"):
                if line.strip():
                    code, got, tt = line.split()
                    if code != "206" or got != "4096":
                        raise OpFailed(f"ranged GET answered {code} with {got} bytes")
                    lat.append(float(tt) * 1000)
            if len(lat) != count:
                raise OpFailed(f"{len(lat)} of {count} ranged GETs answered")
            t.add(LIMIT, median=lat, p99=lat, total=sum(lat) / 1000)
        _attempt(t, LIMIT, lim)
    return [t]


# ---------------------------------------------------------------------------- 6 media
def w6_media(bench, targets):
    mib = max(16, bench.args.size_mib // 4)
    local, size, duration = bench.sources.video(mib)
    mid = duration / 2
    probe = Table("6a", f"`ffprobe` of a {size / 2**20:.0f} MiB MPEG-4 video "
                  f"({duration:.0f} s, moov at the end; fresh mount, page cache dropped)",
                  [("time", "time (s)", "s")], ["time"],
                  notes=["`ffprobe -v error -show_format -show_streams FILE`."])
    seek = Table("6b", f"`ffmpeg -ss {mid:.0f}` to the middle of the same video, decode one "
                 "frame (fresh mount, page cache dropped)",
                 [("time", "time (s)", "s")], ["time"],
                 notes=[f"`ffmpeg -ss {mid:.1f} -i FILE -frames:v 1 -f null -`."])
    targets = _readers(bench, targets, [probe, seek])
    tmo = 120
    cmds = [(probe, ["ffprobe", "-v", "error", "-show_format", "-show_streams"], []),
            (seek, ["ffmpeg", "-v", "error", "-nostdin", "-ss", f"{mid:.1f}", "-i"],
             ["-frames:v", "1", "-f", "null", "-"])]
    for run in range(bench.runs("6")):
        for tg in targets:
            for table, pre, post in cmds:
                def one():
                    with tg.mount() as m:
                        p = tg.data_path(m.path, data.VIDEO_KEY)
                        bench.drop_caches(m.pid)
                        dt, _, _ = run_timed(pre + [p] + post, tmo)
                        table.add(tg.label, time=dt)
                _attempt(table, tg.label, one)
        for table, pre, post in cmds:
            def loc():
                bench.drop_caches()
                dt, _, _ = run_timed(pre + [local] + post, tmo)
                table.add(LOCAL, time=dt)
            _attempt(table, LOCAL, loc)
    return [probe, seek]


# ---------------------------------------------------------------------------- 7 memory
def w7_memory(bench, targets):
    mib = bench.args.size_mib
    files = 8
    window = bench.args.rss_seconds
    bench.sources.big_files(files, mib)
    t = Table("7", f"Peak RSS of the filesystem process while {files} files of {mib} MiB are "
              f"read at once (fresh mount, page cache dropped, at most {window:.0f} s)",
              [("hwm", "peak RSS (MiB, VmHWM)", "mib"), ("rss", "max sampled VmRSS (MiB)", "mib"),
               ("rss0", "RSS at mount (MiB)", "mib"),
               ("rate", "aggregate read (MiB/s)", "mib"), ("done", "files read to the end", "int")],
              ["hwm"],
              notes=[f"{files} concurrent sequential readers (1 MiB reads), each stopped at EOF "
                     f"or after {window:.0f} s (--rss-seconds), whichever comes first; VmRSS "
                     "sampled every 50 ms, VmHWM read at the end (peak since the mount). "
                     "For assetfs only the `assetfs` process is counted (the broker moves no "
                     "data); its configured read-cache budget is `cache_mb` (default 256 MiB)."])
    targets = _readers(bench, targets, [t])
    for run in range(bench.runs("7")):
        for tg in targets:
            def one():
                with tg.mount() as m:
                    paths = [tg.data_path(m.path, data.big_key(i)) for i in range(files)]
                    bench.drop_caches(m.pid)
                    rss0 = read_status_kib(m.pid, "VmRSS") or 0
                    t0 = time.perf_counter()
                    ps = [subprocess.Popen([sys.executable, os.path.join(HERE, "seqread.py"),
                                            p, str(window)], stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE) for p in paths]
                    peak = read_status_kib(m.pid, "VmRSS") or 0
                    try:
                        while any(p.poll() is None for p in ps):
                            if time.perf_counter() - t0 > window + 60:
                                raise OpFailed(f"a read did not return within {window + 60:.0f} s")
                            peak = max(peak, read_status_kib(m.pid, "VmRSS") or 0)
                            time.sleep(0.05)
                    finally:
                        for p in ps:
                            if p.poll() is None:
                                p.kill()
                                p.wait(timeout=30)
                    hwm = read_status_kib(m.pid, "VmHWM")
                    if hwm is None:
                        raise OpFailed("filesystem process exited during the reads")
                    total, done, longest = 0, 0, 0.0
                    for p in ps:
                        out, err = p.communicate()
                        if p.returncode != 0:
                            msg = err.decode(errors="replace").strip().splitlines()
                            raise OpFailed("a read failed: " + (msg[-1][:200] if msg else "?"))
                        r = json.loads(out)
                        if r["eof"] and r["bytes"] != mib << 20:
                            raise OpFailed(f"a reader got {r['bytes']} bytes, not {mib << 20}")
                        total += r["bytes"]
                        done += r["eof"]
                        longest = max(longest, r["seconds"])
                    t.add(tg.label, hwm=hwm / 1024, rss=peak / 1024, rss0=rss0 / 1024,
                          rate=total / 2**20 / longest, done=done)
            _attempt(t, tg.label, one)
    return [t]


ALL = {"1": w1_write, "2": w2_read, "3": w3_tree, "4": w4_list, "5": w5_random,
       "6": w6_media, "7": w7_memory}
