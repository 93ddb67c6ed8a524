"""Sizes and counts through the mount (kept small enough for the suite; the 1 GiB and
1,000-file runs are in tests/bench/fs_write_scale.py): a large file's sha256 through the
mount and through its URL, and many small files copied with cp -r."""
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
        for _ in range(256):
            f.write(os.urandom(1 << 20))
    want = sha256_file(src)
    t0 = time.monotonic()
    subprocess.run(["cp", str(src), mount.p("large.bin")], check=True, timeout=300)
    print(f"cp 256 MiB: {time.monotonic() - t0:.1f} s")
    assert sha256_file(mount.p("large.bin")) == want
    a = wait_asset(db, "large.bin", timeout=60)
    assert a["size"] == 256 << 20
    assert url_sha256(a["url"]) == want
    wait_no_staging(mount, timeout=60)
    assert sha256_file(mount.p("large.bin")) == want
    rss = int([l for l in open(f"/proc/{mount.proc.pid}/status") if l.startswith("VmHWM")][0]
              .split()[1])
    print(f"assetfs peak RSS: {rss // 1024} MiB")
    if os.environ.get("ASSETFS_FS_ASAN") != "1":  # ASan's shadow memory inflates RSS
        assert rss < 512 * 1024  # staged data is on disk, not in memory


def test_many_small_files(mount, db, tmp_path):
    src = tmp_path / "many"
    src.mkdir()
    n = 100
    for i in range(n):
        (src / f"f{i:04d}.txt").write_bytes(os.urandom(100 + i))
    t0 = time.monotonic()
    subprocess.run(["cp", "-r", str(src), mount.p("many")], check=True, timeout=600)
    print(f"cp -r {n} small files: {time.monotonic() - t0:.1f} s")
    assert len(os.listdir(mount.p("many"))) == n
    wait_for(lambda: db.CosyncAsset.count_documents({"status": "active"}) == n, 120,
             "every asset")
    for i in (0, n // 2, n - 1):
        name = f"f{i:04d}.txt"
        assert open(mount.p("many", name), "rb").read() == (src / name).read_bytes()
