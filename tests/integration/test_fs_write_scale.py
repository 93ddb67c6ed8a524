"""Sizes and counts through the mount, at the sizes issue 4 names: a 1 GiB file's sha256
through the mount and through its URL, and 1,000 small files copied with cp -r (default
mode; the write-back copy of 1,000 files is in test_fs_writeback_resume.py)."""
import hashlib
import os
import subprocess
import time

import requests

from fs_write_util import sha256_file, wait_asset, wait_no_staging
from procs import wait_for


def url_sha256(url):
    h = hashlib.sha256()
    with requests.get(url, stream=True, timeout=60) as r:
        r.raise_for_status()
        for chunk in r.iter_content(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def test_large_file(mount, db, tmp_path):
    src = tmp_path / "large.bin"
    with open(src, "wb") as f:
        for _ in range(1024):
            f.write(os.urandom(1 << 20))
    want = sha256_file(src)
    t0 = time.monotonic()
    subprocess.run(["cp", str(src), mount.p("large.bin")], check=True, timeout=300)
    print(f"cp 1 GiB: {time.monotonic() - t0:.1f} s")
    assert sha256_file(mount.p("large.bin")) == want
    a = wait_asset(db, "large.bin", timeout=120)
    assert a["size"] == 1 << 30
    assert url_sha256(a["url"]) == want
    wait_no_staging(mount, timeout=120)
    assert sha256_file(mount.p("large.bin")) == want
    rss = int([l for l in open(f"/proc/{mount.proc.pid}/status") if l.startswith("VmHWM")][0]
              .split()[1])
    print(f"assetfs peak RSS: {rss // 1024} MiB")
    if os.environ.get("ASSETFS_FS_ASAN") != "1":  # ASan's shadow memory inflates RSS
        assert rss < 512 * 1024  # staged data is on disk, not in memory


def test_many_small_files(mount, db, tmp_path):
    src = tmp_path / "many"
    src.mkdir()
    n = 1000
    for i in range(n):
        (src / f"f{i:04d}.txt").write_bytes(os.urandom(100 + 7 * i))
    t0 = time.monotonic()
    subprocess.run(["cp", "-r", str(src), mount.p("many")], check=True, timeout=900)
    print(f"cp -r {n} small files: {time.monotonic() - t0:.1f} s")
    assert len(os.listdir(mount.p("many"))) == n
    wait_for(lambda: db.CosyncAsset.count_documents({"status": "active"}) == n, 300,
             "every asset")
    for i in range(n):
        name = f"f{i:04d}.txt"
        assert open(mount.p("many", name), "rb").read() == (src / name).read_bytes(), name
    for i in range(0, n, 50):
        name = f"f{i:04d}.txt"
        a = wait_asset(db, f"many/{name}")
        assert url_sha256(a["url"]) == hashlib.sha256((src / name).read_bytes()).hexdigest()
