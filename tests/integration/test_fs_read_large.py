"""Large reads and big directories through the mount, with numbers printed for the
notes: a 1 GiB asset's sha256 through the mount (cold and warm throughput, next to curl
on the same URL), `ls -l` of a 10,000-file directory, and (with ASSETFS_READ_BENCH=1)
the peak RSS of assetfs while 8 files of 1 GiB are read at once."""
import os
import subprocess
import threading
import time

import bson
import pytest

from fs_read_util import (cosync_put, insert_assets, make_big_file, peak_rss_kb, sha256_path,
                          timed)

GIB = 1 << 30


@pytest.fixture
def big_asset(broker, db, tmp_path):
    src = tmp_path / "big.bin"
    digest = make_big_file(src, GIB)
    t0 = time.monotonic()
    _id = cosync_put(db, "app1", "big/one.bin", str(src), partition="shared", timeout=300)
    print(f"\n1 GiB uploaded by the Cosync client in {time.monotonic() - t0:.1f} s")
    os.unlink(src)
    return _id, digest


def _curl_seconds(url, tmp_path):
    t0 = time.monotonic()
    subprocess.run(["curl", "-sS", "-o", "/dev/null", "--fail", url], check=True, timeout=300)
    return time.monotonic() - t0


def test_one_gib_sha256_cold_and_warm(big_asset, start_mount, db, tmp_path):
    _id, digest = big_asset
    m = start_mount()
    path = m.p("big", "one.bin", partition="shared")
    assert os.stat(path).st_size == GIB
    got, cold = timed(lambda: sha256_path(path))
    assert got == digest
    got, warm = timed(lambda: sha256_path(path))
    assert got == digest
    url = db.CosyncAsset.find_one({"_id": _id})["url"]
    limit = _curl_seconds(url, tmp_path)
    print(f"1 GiB read: cold {cold:.2f} s ({1024 / cold:.0f} MiB/s), warm {warm:.2f} s "
          f"({1024 / warm:.0f} MiB/s); curl on the URL {limit:.2f} s ({1024 / limit:.0f} MiB/s);"
          f" peak RSS {peak_rss_kb(m.proc.pid) // 1024} MiB")
    assert m.proc.poll() is None


def test_ls_l_of_ten_thousand_files(broker, start_mount, db):
    _, ins = timed(lambda: insert_assets(db, "big", 10_000))
    m = start_mount()
    d = m.p(partition="big")
    run = lambda: subprocess.run(["ls", "-l", d], capture_output=True, text=True, check=True,
                                 timeout=300).stdout
    out, cold = timed(run)
    lines = [x for x in out.split("\n") if x.endswith(".txt")]
    assert len(lines) == 10_000
    assert all(" 1234 " in x for x in lines[:100])
    _, warm = timed(run)
    time.sleep(3.5)  # listing TTL over: asks MongoDB again
    _, again = timed(run)
    _, find = timed(lambda: subprocess.run(["find", d], capture_output=True, check=True,
                                           timeout=300))
    print(f"\nls -l of 10,000 files: first {cold:.2f} s, cached {warm:.2f} s, after the TTL "
          f"{again:.2f} s; find {find:.2f} s (records inserted in {ins:.1f} s)")
    assert cold < 60


@pytest.mark.skipif(os.environ.get("ASSETFS_READ_BENCH") != "1",
                    reason="benchmark; set ASSETFS_READ_BENCH=1")
def test_peak_rss_eight_gib_files_at_once(big_asset, start_mount, db):
    _id, digest = big_asset
    rec = db.CosyncAsset.find_one({"_id": _id})
    # Seven more assets on the same object: separate files (and cache keys) for the mount.
    for i in range(2, 9):
        d = dict(rec, _id=bson.ObjectId(), filePath=f"big/f{i}.bin")
        db.CosyncAsset.insert_one(d)
    m = start_mount()
    names = ["one.bin"] + [f"f{i}.bin" for i in range(2, 9)]
    res = {}

    def rd(n):
        res[n] = sha256_path(m.p("big", n, partition="shared"))

    t0 = time.monotonic()
    ts = [threading.Thread(target=rd, args=(n,)) for n in names]
    for t in ts:
        t.start()
    for t in ts:
        t.join(600)
    took = time.monotonic() - t0
    rss = peak_rss_kb(m.proc.pid) // 1024
    print(f"\n8 x 1 GiB read at once in {took:.1f} s ({8 * 1024 / took:.0f} MiB/s total); "
          f"assetfs peak RSS {rss} MiB (read cache budget 256 MiB)")
    assert all(v == digest for v in res.values()) and len(res) == 8
    assert rss <= 256  # cache_mb bounds the process, not only its blocks


def test_cache_mb_bounds_the_process_rss(broker, start_mount, db, tmp_path):
    # cache_mb is the mount's memory budget: blocks get what the process does not hold
    # already, so 4 files of 192 MiB read at once stay within it.
    src = tmp_path / "mid.bin"
    digest = make_big_file(src, 192 << 20)
    _id = cosync_put(db, "app1", "mid/one.bin", str(src), partition="shared", timeout=300)
    os.unlink(src)
    rec = db.CosyncAsset.find_one({"_id": _id})
    for i in range(2, 5):
        db.CosyncAsset.insert_one(dict(rec, _id=bson.ObjectId(), filePath=f"mid/f{i}.bin"))
    m = start_mount("cache_mb=128")
    names = ["one.bin", "f2.bin", "f3.bin", "f4.bin"]
    res = {}
    ts = [threading.Thread(target=lambda n=n: res.__setitem__(
        n, sha256_path(m.p("mid", n, partition="shared")))) for n in names]
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    rss = peak_rss_kb(m.proc.pid) // 1024
    print(f"\n4 x 192 MiB at once with cache_mb=128: peak RSS {rss} MiB")
    assert len(res) == 4 and all(v == digest for v in res.values())
    assert rss <= 128, m.log()[-2000:]
