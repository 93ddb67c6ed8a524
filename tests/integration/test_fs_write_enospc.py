"""Bounded staging: cache_max refuses writes with ENOSPC when nothing can be drained in
time, and a full cache_dir disk comes back as ENOSPC from write() or close(), never as
data silently lost."""
import errno
import os
import subprocess
import time

import pytest

from fs_write_util import http_get, wait_asset
from procs import wait_for


def test_cache_max_refuses_with_enospc_then_recovers(start_broker, start_mount, db):
    m = start_mount("writeback", "cache_max=2M", "close_timeout=1")
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        with open(m.p("big.bin"), "wb") as f:
            for _ in range(3):
                f.write(os.urandom(1 << 20))
                f.flush()
    assert e.value.errno == errno.ENOSPC
    assert time.monotonic() - t0 < 20
    assert "cache_max" in m.log()
    # Once the broker uploads what is staged, there is room again.
    start_broker()
    wait_asset(db, "big.bin", timeout=60)
    data = os.urandom(1 << 20)
    with open(m.p("after.bin"), "wb") as f:
        f.write(data)
    a = wait_asset(db, "after.bin", timeout=60)
    assert http_get(a["url"]) == data


def test_writes_past_cache_max_wait_for_uploads_to_drain(broker, start_mount, db):
    """Back-pressure: with a broker draining staging, a copy bigger than cache_max waits
    at write() (woken as completed files leave staging) and loses nothing."""
    m = start_mount("writeback", "cache_max=2M", "close_timeout=10")
    files = {f"bp{i}.bin": os.urandom(768 << 10) for i in range(8)}  # 6 MiB in all
    t0 = time.monotonic()
    for name, data in files.items():
        with open(m.p(name), "wb") as f:
            f.write(data)
    took = time.monotonic() - t0
    print(f"6 MiB through a 2 MiB cache_max: {took:.2f} s")
    assert "refused with ENOSPC" not in m.log()
    for name, data in files.items():
        a = wait_asset(db, name, timeout=60)
        assert http_get(a["url"]) == data


@pytest.fixture
def small_disk(tmp_path):
    d = tmp_path / "tiny-cache"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    yield str(d)
    if subprocess.run(["umount", str(d)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(d)], check=False)


@pytest.mark.parametrize("mode", ["writeback", "default"])
def test_full_cache_disk_is_enospc(broker, start_mount, db, small_disk, mode):
    opts = [f"cache_dir={small_disk}", "cache_max=1G"] + (["writeback"] if mode == "writeback"
                                                          else [])
    m = start_mount(*opts)
    try:
        with pytest.raises(OSError) as e:
            with open(m.p("toolarge.bin"), "wb") as f:
                for _ in range(6):
                    f.write(os.urandom(1 << 20))
                    f.flush()
        assert e.value.errno == errno.ENOSPC
        assert "cache_dir is full" in m.log()
        # The mount goes on working once the space is back (as soon as no upload reads
        # the removed file any more).
        os.unlink(m.p("toolarge.bin"))
        data = os.urandom(100_000)

        def write_fits():
            try:
                with open(m.p("fits.bin"), "wb") as f:
                    f.write(data)
                return True
            except OSError as e:
                assert e.errno == errno.ENOSPC
                return False
        wait_for(write_fits, 30, "space in cache_dir after the unlink")
        # (a failed attempt above may have completed as an empty asset first)
        a = wait_for(lambda: db.CosyncAsset.find_one({"filePath": "fits.bin", "status": "active",
                                                      "size": len(data)}), 60, "fits.bin")
        assert http_get(a["url"]) == data
    finally:
        m.unmount(timeout=90)
