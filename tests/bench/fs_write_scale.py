"""Write-path scale runs (not in tests/run; minutes on a loaded machine):
copy 1 GiB and 1,000 small files through the mount and report times and peak RSS.

  ASSETFS_STACK_DIR=... ASSETFS_BUILD_DIR=... \
      /usr/bin/python3 -m pytest -s -p no:cacheprovider tests/bench/fs_write_scale.py
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))

from conftest import bucket, build_dir, db, dbname, mongo_client, s3, stack  # noqa: E402,F401
from fs_write_util import sha256_file, wait_asset  # noqa: E402
from procs import wait_for  # noqa: E402
from test_fs_write_scale import url_sha256  # noqa: E402


pytest_plugins = ["procs", "broker_fixtures", "fs_fixtures"]


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int([l for l in f if l.startswith("VmHWM")][0].split()[1]) // 1024


def test_copy_1gib(mount, db, tmp_path):
    src = tmp_path / "1g.bin"
    with open(src, "wb") as f:
        for _ in range(1024):
            f.write(os.urandom(1 << 20))
    want = sha256_file(src)
    t0 = time.monotonic()
    subprocess.run(["cp", str(src), mount.p("1g.bin")], check=True, timeout=1800)
    t = time.monotonic() - t0
    a = wait_asset(db, "1g.bin", timeout=300)
    assert url_sha256(a["url"]) == want
    assert sha256_file(mount.p("1g.bin")) == want
    print(f"\nBENCH cp 1 GiB: {t:.1f} s ({1024 / t:.0f} MiB/s); "
          f"assetfs peak RSS {peak_rss_mib(mount.proc.pid)} MiB")


def test_copy_1000_small_files(mount, db, tmp_path):
    src = tmp_path / "small"
    src.mkdir()
    for i in range(1000):
        (src / f"f{i:04d}.txt").write_bytes(os.urandom(1000))
    t0 = time.monotonic()
    subprocess.run(["cp", "-r", str(src), mount.p("small")], check=True, timeout=3600)
    t = time.monotonic() - t0
    wait_for(lambda: db.CosyncAsset.count_documents({"status": "active"}) == 1000, 600,
             "every asset")
    print(f"\nBENCH cp -r 1000 files of 1 kB: {t:.1f} s ({1000 / t:.1f} files/s); "
          f"assetfs peak RSS {peak_rss_mib(mount.proc.pid)} MiB")
