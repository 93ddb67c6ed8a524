"""Several brokers on one database: 3 brokers, many uploads, one broker SIGKILLed in the
middle -> every upload completed exactly once, no asset duplicated, none missing.

The issue asks for 500 uploads: run with ASSETFS_SCALE_UPLOADS=500. The suite's default
is 200 because FerretDB 1.24's SQLite backend pushes down no filter but a bare _id, so
every claim and conditional update scans the whole collection and the run time grows
with the square of the count (200: ~2 min, 500: ~10 min on a loaded 2-core machine)."""
import concurrent.futures
import hashlib
import os
import signal
import time
import uuid

import bson
import requests

from cosync_client import utcnow
from procs import wait_for

N = int(os.environ.get("ASSETFS_SCALE_UPLOADS", "200"))


def body_for(i):
    return hashlib.sha256(str(i).encode()).digest() * 8


def test_three_brokers_one_killed(db, start_broker):
    brokers = [start_broker("--set", "lease_seconds=20", "--workers", "4", "--batch", "8", name=f"b{i}")
               for i in range(3)]
    u = "u" + uuid.uuid4().hex[:12]
    ids = [bson.ObjectId() for _ in range(N)]
    index = {oid: i for i, oid in enumerate(ids)}
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=16, pool_maxsize=16)
    session.mount("http://", adapter)
    t0 = time.monotonic()
    for start in range(0, N, 50):
        db.CosyncAssetUpload.insert_many([{
            "_id": oid, "_partition": f"user_id={u}", "uid": u, "sessionId": "bulk",
            "assetPartition": "shared", "filePath": f"bulk/{index[oid]:04d}.bin",
            "contentType": "application/octet-stream", "expirationHours": 24.0,
            "status": "pending", "createdAt": utcnow()} for oid in ids[start:start + 50]])

    def upload(rec):
        i = index[rec["_id"]]
        r = session.put(rec["writeUrl"], data=body_for(i),
                        headers={"Content-Type": "application/octet-stream"}, timeout=30)
        assert r.status_code == 200, r.text
        return rec["_id"]

    killed = False
    put_done = set()
    deadline = time.monotonic() + max(240, N * 2.0)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        while True:
            assert time.monotonic() < deadline, "uploads did not finish in time"
            ready = list(db.CosyncAssetUpload.find(
                {"status": "initialized"},
                {"writeUrl": 1}).limit(100))
            if ready:
                done = list(pool.map(upload, ready))
                put_done.update(done)
                db.CosyncAssetUpload.update_many({"_id": {"$in": done}},
                                                 {"$set": {"status": "uploaded",
                                                           "updatedAt": utcnow()}})
            completed = db.CosyncAssetUpload.count_documents({"status": "completed"})
            if not killed and completed >= N // 4:
                brokers[1].proc.send_signal(signal.SIGKILL)
                brokers[1].proc.wait(timeout=10)
                killed = True
            if completed == N:
                break
            if not ready:
                time.sleep(0.5)  # every client query is a collection scan on FerretDB
    elapsed = time.monotonic() - t0
    print(f"\n{N} uploads through 3 brokers (one SIGKILLed) in {elapsed:.1f} s")
    assert killed
    assert db.CosyncAssetUpload.count_documents({"status": {"$ne": "completed"}}) == 0
    assets = list(db.CosyncAsset.find({}, {"filePath": 1, "status": 1, "url": 1, "size": 1}))
    assert len(assets) == N
    assert {a["_id"] for a in assets} == set(ids)
    assert len({a["filePath"] for a in assets}) == N
    assert all(a["status"] == "active" for a in assets)
    assert db.CosyncAssetUpload.count_documents({"leaseOwner": {"$exists": True}}) == 0

    def check(a):
        r = session.get(a["url"], timeout=30)
        return r.status_code == 200 and r.content == body_for(index[a["_id"]])
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(check, assets))
    for i in (0, 2):
        assert brokers[i].proc.poll() is None


LAT_N = int(os.environ.get("ASSETFS_LATENCY_UPLOADS", "100"))


def test_round_trips_and_latency(db, start_broker):
    """~100 uploads by a pymongo client that starts one every ~30 ms (8 in flight): the
    pending->initialized and uploaded->completed latencies (broker's updatedAt minus the
    client's timestamp, one clock) and the MongoDB commands the broker sent per upload,
    from its own count (logged at stop)."""
    import random
    import re
    b = start_broker()
    u = "u" + uuid.uuid4().hex[:12]
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=8, pool_maxsize=8))
    init_lat, done_lat = [], []

    def poll(_id, status, step):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            d = db.CosyncAssetUpload.find_one({"_id": _id})
            if d["status"] == status:
                return d
            assert d["status"] not in ("error", "completed") or d["status"] == status, d
            time.sleep(step)
        raise AssertionError(f"{_id} stuck before {status}")

    def one(i):
        _id = bson.ObjectId()
        db.CosyncAssetUpload.insert_one({
            "_id": _id, "_partition": f"user_id={u}", "uid": u, "sessionId": "lat",
            "filePath": f"lat/{i:04d}.bin", "contentType": "application/octet-stream",
            "expirationHours": 24.0, "status": "pending", "createdAt": utcnow()})
        rec = poll(_id, "initialized", 0.01)
        init_lat.append((rec["updatedAt"] - rec["createdAt"]).total_seconds() * 1000)
        r = session.put(rec["writeUrl"], data=body_for(i),
                        headers={"Content-Type": "application/octet-stream"}, timeout=30)
        assert r.status_code == 200
        t = utcnow()
        db.CosyncAssetUpload.update_one({"_id": _id}, {"$set": {"status": "uploaded",
                                                               "updatedAt": t}})
        rec = poll(_id, "completed", 0.01)
        done_lat.append((rec["updatedAt"] - t).total_seconds() * 1000)

    rng = random.Random(7)
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futs = []
        for i in range(LAT_N):
            futs.append(pool.submit(one, i))
            time.sleep(rng.uniform(0.0, 0.06))
        for f in futs:
            f.result()
    elapsed = time.monotonic() - t0
    b.proc.terminate()
    assert b.proc.wait(timeout=20) == 0
    counts = dict(re.findall(r"MongoDB commands sent by the (\w+): (\d+)", b.log()))
    claims = re.search(r"claims: (\d+) commands for (\d+) records; (\d+) commands in (\d+) "
                       r"polls", b.log())
    ccmds, crecs, ecmds, epolls = (int(g) for g in claims.groups())

    def pct(v, p):
        v = sorted(v)
        return v[min(len(v) - 1, int(len(v) * p))]
    print(f"\n{LAT_N} uploads in {elapsed:.1f} s; pending->initialized p50 "
          f"{pct(init_lat, .5):.0f} ms p99 {pct(init_lat, .99):.0f} ms; uploaded->completed "
          f"p50 {pct(done_lat, .5):.0f} ms p99 {pct(done_lat, .99):.0f} ms; MongoDB commands "
          f"per upload: workers {int(counts['workers']) / LAT_N:.2f}, claims "
          f"{ccmds / LAT_N:.2f} ({crecs} records claimed), plus {ecmds} in {epolls} empty "
          f"polls ({ecmds / elapsed:.0f}/s)")
    assert db.CosyncAsset.count_documents({"status": "active"}) == LAT_N
    assert pct(init_lat, .5) < 1500  # a bound, not a target: FerretDB on SQLite is slow
