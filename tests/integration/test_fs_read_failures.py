"""Errors a reader can meet, with the real stack: the asset deleted while open (ESTALE or
EIO, no crash), S3 down (EIO after bounded retries, then reads work again), MongoDB down
(cached entries served, others EIO), broker down (an expired URL cannot be refreshed:
EIO and a log line that says why). S3 and MongoDB are taken down for one process only,
through a TCP proxy (tcp_proxy.py)."""
import errno
import os
import time
from urllib.parse import urlparse

import pytest

from fs_read_util import cosync_put
from procs import wait_for
from tcp_proxy import TcpProxy


def _read_at(path, off, n):
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(n)


def test_asset_deleted_while_open(broker, start_mount, db):
    data = os.urandom(48 * 1024 * 1024)
    _id = cosync_put(db, "app1", "gone.bin", data, partition="shared")
    m = start_mount()
    path = m.p("gone.bin", partition="shared")
    f = open(path, "rb")
    f.seek(1024 * 1024)  # read-ahead from here does not reach 40 MiB
    assert f.read(4096) == data[1024 * 1024:1024 * 1024 + 4096]
    db.CosyncAsset.update_one({"_id": _id}, {"$set": {"status": "deleted"}})
    wait_for(lambda: db.CosyncAsset.find_one({"_id": _id}) is None, 30,
             "the broker to remove the asset")
    f.seek(40 * 1024 * 1024)
    with pytest.raises(OSError) as e:
        f.read(64 * 1024)
    assert e.value.errno in (errno.ESTALE, errno.EIO)
    f.close()
    # the mount is fine, and the file is gone from it within the TTL
    wait_for(lambda: not os.path.exists(path), 6, "the file to vanish")
    assert m.proc.poll() is None


@pytest.fixture
def s3_proxy(stack):
    u = urlparse(stack["ASSETFS_S3_ENDPOINT"])
    p = TcpProxy(u.hostname, u.port).start()
    yield p
    p.close()


def test_s3_down_gives_eio_then_recovers(start_broker, start_mount, db, s3_proxy):
    # The broker signs URLs for the proxy's address, so the mount reads through it.
    start_broker(env={"ASSETFS_S3_ENDPOINT": f"http://127.0.0.1:{s3_proxy.port}"})
    data = os.urandom(48 * 1024 * 1024)
    cosync_put(db, "app1", "s3down.bin", data, partition="shared")
    m = start_mount()
    path = m.p("s3down.bin", partition="shared")
    assert _read_at(path, 0, 4096) == data[:4096]
    s3_proxy.cut()
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        _read_at(path, 40 * 1024 * 1024, 4096)
    took = time.monotonic() - t0
    print(f"S3 down: {os.strerror(e.value.errno)} after {took:.1f} s")
    assert e.value.errno == errno.EIO
    assert took < 20
    assert "retry" in m.log()
    s3_proxy.restore()
    assert _read_at(path, 40 << 20, 4096) == data[40 << 20:(40 << 20) + 4096]


@pytest.fixture
def mongo_proxy(stack):
    u = urlparse(stack["ASSETFS_MONGO_URI"])
    p = TcpProxy(u.hostname, u.port).start()
    yield p
    p.close()


def test_mongodb_down_serves_cached_entries(broker, start_mount, db, stack, mongo_proxy):
    data = os.urandom(300_000)
    cosync_put(db, "app1", "dir/cached.bin", data, partition="shared")
    cosync_put(db, "app1", "other/uncached.bin", b"x" * 10, partition="shared")
    uri = stack["ASSETFS_MONGO_URI"].replace(
        f":{urlparse(stack['ASSETFS_MONGO_URI']).port}/", f":{mongo_proxy.port}/")
    m = start_mount("attr_ttl=0.5", "list_ttl=0.5", env={"ASSETFS_MONGO_URI": uri})
    base = m.p(partition="shared")
    assert os.listdir(os.path.join(base, "dir")) == ["cached.bin"]
    assert os.stat(os.path.join(base, "dir", "cached.bin")).st_size == len(data)
    mongo_proxy.cut()
    time.sleep(1.0)  # every TTL has run out: only the stale cache is left
    assert os.stat(os.path.join(base, "dir", "cached.bin")).st_size == len(data)
    assert os.listdir(os.path.join(base, "dir")) == ["cached.bin"]
    with open(os.path.join(base, "dir", "cached.bin"), "rb") as f:
        assert f.read() == data  # S3 still works through the cached URL
    # never seen by the mount: cannot be answered without MongoDB
    cosync_put(db, "app1", "other/late.bin", b"y" * 10, partition="shared")
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        os.stat(os.path.join(base, "other", "late.bin"))
    print(f"uncached lookup with MongoDB down: EIO after {time.monotonic() - t0:.1f} s")
    assert e.value.errno == errno.EIO
    mongo_proxy.restore()
    wait_for(lambda: os.path.exists(os.path.join(base, "other", "late.bin")), 20,
             "MongoDB to be back")
    assert m.proc.poll() is None


def test_broker_down_expired_url_gives_eio_with_reason(start_broker, start_mount, db, procs):
    b = start_broker()
    data = os.urandom(2 * 1024 * 1024)
    _id = cosync_put(db, "app1", "expiring.bin", data, hours=0.001, partition="shared")  # 3.6 s
    m = start_mount()
    path = m.p("expiring.bin", partition="shared")
    assert os.stat(path).st_size == len(data)
    procs.stop(b.proc)
    exp = db.CosyncAsset.find_one({"_id": _id})["expiration"].timestamp()
    time.sleep(max(0.0, exp - time.time()) + 0.5)
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        _read_at(path, 0, 4096)
    took = time.monotonic() - t0
    assert e.value.errno == errno.EIO
    assert took < 30
    assert "did not answer CosyncRefreshAsset" in m.log()
    assert m.proc.poll() is None
