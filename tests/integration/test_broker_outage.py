"""MongoDB or S3 unavailable for a while: the broker logs, backs off and resumes; no
upload is lost or turned into an error. Runs on a private stack (tests/stack/up into
tmp_path) so stopping its servers disturbs no other test."""
import os
import signal
import subprocess
import time
import uuid

import pymongo
import pytest

from conftest import REPO, _read_env
from cosync_client import mark_uploaded, new_upload, put, wait_status
from procs import wait_for


class PrivateStack:
    def __init__(self, d):
        self.dir = d
        self.env = _read_env(os.path.join(d, "env"))

    def _pids(self):
        with open(os.path.join(self.dir, "pids")) as f:
            return {name: int(pid) for pid, name in (line.split() for line in f if line.strip())}

    def stop(self, name):
        """Stops server `name`; returns what is needed to start it again."""
        pid = self._pids()[name]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode() for a in f.read().split(b"\0") if a]
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(kv.decode().split("=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                 open(f"/proc/{pid}/stat").read().split()[2] == "Z", 15, f"{name} to stop")
        return argv, env

    def start(self, name, saved):
        argv, env = saved
        log = open(os.path.join(self.dir, "log", f"{name}.log"), "ab")
        p = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        pids = self._pids()
        pids[name] = p.pid
        with open(os.path.join(self.dir, "pids"), "w") as f:
            for n, pid in pids.items():
                f.write(f"{pid} {n}\n")
        return p


@pytest.fixture
def private_stack(tmp_path):
    d = str(tmp_path / "stack")
    subprocess.run([os.path.join(REPO, "tests/stack/up"), d], check=True, timeout=600,
                   stdout=subprocess.DEVNULL)
    try:
        yield PrivateStack(d)
    finally:
        subprocess.run([os.path.join(REPO, "tests/stack/down"), d], check=False, timeout=60)


@pytest.fixture
def pdb(private_stack):
    c = pymongo.MongoClient(private_stack.env["ASSETFS_MONGO_URI"], serverSelectionTimeoutMS=20000)
    yield c["outage"]
    c.close()


def test_mongodb_down_then_back(private_stack, pdb, start_broker):
    b = start_broker(env={**private_stack.env, "ASSETFS_DATABASE": "outage"})
    u = "u" + uuid.uuid4().hex[:10]
    ids = [new_upload(pdb, u, f"m/{i}.bin", "application/octet-stream") for i in range(20)]
    saved = private_stack.stop("ferretdb")
    wait_for(lambda: "backing off" in b.log(), 30, "the broker to notice MongoDB is down")
    time.sleep(1)
    assert b.proc.poll() is None
    private_stack.start("ferretdb", saved)
    recs = [wait_status(pdb, i, "initialized", timeout=60) for i in ids]
    # The records may have been initialized before FerretDB stopped; the dispatcher says
    # so only after its backoff sleep ends.
    wait_for(lambda: "MongoDB reachable again" in b.log(), 30, "the broker to reconnect")
    for r in recs:
        assert put(r["writeUrl"], b"x" * 10, "application/octet-stream") == 200
    for i in ids:
        mark_uploaded(pdb, i)
    saved = private_stack.stop("ferretdb")
    time.sleep(2)
    private_stack.start("ferretdb", saved)
    for i in ids:
        wait_status(pdb, i, "completed", timeout=60)
    assert pdb.CosyncAsset.count_documents({}) == len(ids)
    assert pdb.CosyncAssetUpload.count_documents({"status": "error"}) == 0


def test_s3_down_then_back(private_stack, pdb, start_broker):
    b = start_broker(env={**private_stack.env, "ASSETFS_DATABASE": "outage"})
    u = "u" + uuid.uuid4().hex[:10]
    ids = [new_upload(pdb, u, f"s/{i}.jpg", "image/jpeg") for i in range(10)]
    recs = [wait_status(pdb, i, "initialized") for i in ids]
    for r in recs:
        assert put(r["writeUrl"], b"jpeg", "image/jpeg") == 200
    saved = private_stack.stop("versitygw")
    for i in ids:
        mark_uploaded(pdb, i)
    wait_for(lambda: "will retry" in b.log(), 30, "the broker to meet the S3 outage")
    time.sleep(2)
    # Nothing was given up while S3 was away.
    assert pdb.CosyncAssetUpload.count_documents({"status": "error"}) == 0
    assert pdb.CosyncAssetUpload.count_documents({"status": "completed"}) == 0
    private_stack.start("versitygw", saved)
    for i in ids:
        wait_status(pdb, i, "completed", timeout=60)
    assert pdb.CosyncAsset.count_documents({"status": "active"}) == len(ids)
    assert b.proc.poll() is None
