"""Failure paths of the write path: S3 stopped during a copy, broker down, files over
S3's single-PUT limit, unmount with uploads in flight. close() reports the failure
within close_timeout; the staged data is kept and uploaded once the service is back."""
import errno
import os
import signal
import subprocess
import time

import pymongo
import pytest

from conftest import REPO, _read_env
from fs_fixtures import is_mounted
from fs_write_util import http_get, sha256_bytes, wait_asset
from procs import wait_for


@pytest.fixture
def private_stack(tmp_path_factory):
    """A stack of our own, so that stopping its S3 disturbs no other test."""
    d = str(tmp_path_factory.mktemp("private-stack"))
    subprocess.run([os.path.join(REPO, "tests/stack/up"), d], check=True, timeout=600,
                   stdout=subprocess.DEVNULL)
    try:
        yield d, _read_env(os.path.join(d, "env"))
    finally:
        subprocess.run([os.path.join(REPO, "tests/stack/down"), d], check=False, timeout=60,
                       stdout=subprocess.DEVNULL)


def s3_pid(stack_dir):
    with open(os.path.join(stack_dir, "pids")) as f:
        for line in f:
            pid, name = line.split()
            if name == "versitygw":
                return int(pid)
    raise AssertionError("no versitygw in the stack")


def test_s3_stopped_during_copy(private_stack, start_broker, start_mount, procs, tmp_path):
    d, env = private_stack
    env = dict(env, ASSETFS_DATABASE="s3down")
    start_broker(env=env)
    m = start_mount("close_timeout=3", env=env)
    client = pymongo.MongoClient(env["ASSETFS_MONGO_URI"])
    db = client["s3down"]
    try:
        # stop S3, remembering how to start it again
        pid = s3_pid(d)
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[:-1]
        penv = dict(kv.split(b"=", 1) for kv in
                    open(f"/proc/{pid}/environ", "rb").read().split(b"\0") if b"=" in kv)
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                 open(f"/proc/{pid}/stat").read().split()[2] == "Z", 10, "S3 to stop")

        src = tmp_path / "data.bin"
        data = os.urandom(2 * 1024 * 1024)
        src.write_bytes(data)
        t0 = time.monotonic()
        r = subprocess.run(["cp", str(src), m.p("data.bin")], capture_output=True, text=True,
                           timeout=60)
        took = time.monotonic() - t0
        assert r.returncode != 0, "cp must report the failed upload"
        assert "Input/output error" in r.stderr
        assert took < 30
        # the data is kept and readable; the state says what is going on
        assert open(m.p("data.bin"), "rb").read() == data
        status = os.getxattr(m.p("data.bin"), "user.assetfs.status").decode()
        assert status.startswith("retrying"), status

        # S3 comes back: the background retry finishes the upload
        procs.spawn([a.decode() for a in argv],
                    env={k.decode(): v.decode() for k, v in penv.items()},
                    log_path=str(tmp_path / "versitygw-restarted.log"))
        a = wait_asset(db, "data.bin", timeout=90)
        assert sha256_bytes(http_get(a["url"])) == sha256_bytes(data)
        assert open(m.p("data.bin"), "rb").read() == data
    finally:
        client.close()


def test_broker_down_then_up(start_broker, start_mount, db):
    m = start_mount("close_timeout=2")
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        with open(m.p("wait.txt"), "wb") as f:
            f.write(b"waiting for the broker")
    assert e.value.errno == errno.EIO
    assert time.monotonic() - t0 < 15
    assert open(m.p("wait.txt"), "rb").read() == b"waiting for the broker"
    assert os.getxattr(m.p("wait.txt"), "user.assetfs.status").decode().startswith("retrying")
    assert "assetfs-broker running" in m.log()
    start_broker()
    a = wait_asset(db, "wait.txt", timeout=90)
    assert http_get(a["url"]) == b"waiting for the broker"


def test_over_5gib_is_efbig(broker, start_mount, db):
    """With multipart uploads turned off (multipart_threshold=0) a file is one PUT: S3's
    5 GiB limit for it is EFBIG (test_fs_multipart has the 5 TiB limit otherwise)."""
    mount = start_mount("multipart_threshold=0")
    fd = os.open(mount.p("huge.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with pytest.raises(OSError) as e:
            os.pwrite(fd, b"x", 5 * 1024 ** 3)
        assert e.value.errno == errno.EFBIG
        with pytest.raises(OSError) as e:
            os.ftruncate(fd, 6 * 1024 ** 3)
        assert e.value.errno == errno.EFBIG
        os.pwrite(fd, b"small", 0)
    finally:
        os.close(fd)
    assert "5 GiB" in mount.log()
    assert http_get(wait_asset(db, "huge.bin")["url"]) == b"small"


def test_unmount_waits_for_uploads_and_sigterm(broker, start_mount, db):
    m = start_mount()
    subprocess.run(["touch", m.p("late.txt")], check=True, timeout=30)  # uploaded at release
    with open(m.p("b.txt"), "wb") as f:
        f.write(b"b")
    assert m.unmount(timeout=90) == 0
    rec = db.CosyncAssetUpload.find_one({"filePath": "late.txt"})
    assert rec and rec["status"] in ("uploaded", "completed")
    wait_asset(db, "late.txt")
    # SIGTERM unmounts cleanly too
    m2 = start_mount()
    m2.proc.send_signal(signal.SIGTERM)
    assert m2.proc.wait(timeout=60) == 0
    assert not is_mounted(m2.path)
