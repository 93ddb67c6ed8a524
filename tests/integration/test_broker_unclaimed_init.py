"""Pending uploads are initialized without a claim: the dispatcher reads them whole and a
worker finishes each with one update conditional on the record still being pending and
unleased. These tests pin what that must keep: a live lease (another broker's, or the
stale-upload janitor's) wins over an unclaimed initialization, whether it was there
before the poll or taken between the poll and the finish; two brokers initializing the
same records still give one asset per upload; S2 (no PUT over another record's object)
holds on this path; and an initialization costs the workers exactly one command."""
import concurrent.futures
import datetime
import re
import time
import uuid

import bson

from cosync_client import mark_uploaded, new_upload, put, utcnow, wait_status
from procs import wait_for

PAUSE_MS = 1500


def uid():
    return "u" + uuid.uuid4().hex[:16]


def lease(db, _id, seconds, owner="other-broker:1"):
    until = utcnow() + datetime.timedelta(seconds=seconds)
    db.CosyncAssetUpload.update_one({"_id": _id}, {"$set": {"leaseOwner": owner,
                                                            "leaseUntil": until}})


def test_live_lease_is_respected(db, broker):
    """A pending record under another broker's live lease is not initialized until the
    lease has passed."""
    u = uid()
    _id = bson.ObjectId()
    new_upload(db, u, "held/a.jpg", "image/jpeg", _id=_id,
               leaseOwner="other-broker:1", leaseUntil=utcnow() + datetime.timedelta(seconds=3))
    other = new_upload(db, u, "free/b.jpg", "image/jpeg")
    wait_status(db, other, "initialized")
    assert db.CosyncAssetUpload.find_one({"_id": _id})["status"] == "pending"
    rec = wait_status(db, _id, "initialized", timeout=20)
    assert rec["writeUrl"] and rec["path"].startswith(f"{u}/")
    assert broker.proc.poll() is None


def test_lease_taken_between_read_and_finish(db, start_broker):
    """Another broker claims the record after our poll read it (the broker is paused
    between the two): our finish must not apply; once that lease is given up, the record
    is initialized normally."""
    b = start_broker(env={"ASSETFS_BROKER_TEST_PAUSE": f"init_claimed={PAUSE_MS}"})
    u = uid()
    _id = new_upload(db, u, "race/a.jpg", "image/jpeg")
    wait_for(lambda: f"test pause: init_claimed {_id}" in b.log(), 15, "the pause")
    lease(db, _id, 30)
    wait_for(lambda: "held by another broker, when its initialization finished" in b.log(),
             15, "the finish to be refused")
    d = db.CosyncAssetUpload.find_one({"_id": _id})
    assert d["status"] == "pending" and "writeUrl" not in d and d["leaseOwner"] == "other-broker:1"
    # The other broker gives it back: it is initialized then.
    db.CosyncAssetUpload.update_one({"_id": _id}, {"$unset": {"leaseOwner": "", "leaseUntil": ""}})
    rec = wait_status(db, _id, "initialized", timeout=20)
    assert rec["writeUrl"] and "leaseOwner" not in rec


def test_spoofed_key_refused_on_the_unclaimed_path(db, start_broker, s3, bucket):
    """S2 with two brokers reading the same pending records: a record aimed at another
    upload's object never gets a PUT URL over it, from whichever broker finishes (its
    keys are claimed by the victim: it is planned at other keys), also when the victim's
    keys predate claims (found by the HEAD)."""
    from cosync_client import key_of
    from test_broker_untrusted import spoof_id, victim_asset, victim_intact
    brokers = [start_broker(name=f"b{i}") for i in range(2)]
    victim = uid()
    vid, vrec = victim_asset(db, victim)
    vkeys = {key_of(vrec[f], bucket) for f in ("url", "urlSmall", "urlMedium", "urlLarge")}
    sids = [spoof_id(vid) for _ in range(3)]
    for i, sid in enumerate(sids):
        if i == 2:
            db.AssetfsKeyClaim.delete_many({"recordId": vid})  # as if made before claims
        new_upload(db, victim, "private/secret.jpg", "image/jpeg", _id=sid)
        rec = wait_status(db, sid, ["initialized", "error"])
        assert rec["status"] == "initialized", rec
        assert not {key_of(rec[f], bucket) for f in ("writeUrl", "writeUrlSmall")} & vkeys
    paths = {db.CosyncAssetUpload.find_one({"_id": s})["path"] for s in sids}
    assert len(paths) == 3 and vrec["path"] not in paths
    victim_intact(s3, bucket, vrec)
    assert all(b.proc.poll() is None for b in brokers)


def test_two_brokers_one_asset_per_upload(db, start_broker):
    """Two brokers poll the same burst of pending records (both may initialize one):
    every upload ends completed with exactly one asset, same keys as initialized."""
    n = 60
    brokers = [start_broker("--workers", "8", name=f"b{i}") for i in range(2)]
    u = uid()
    ids = [bson.ObjectId() for _ in range(n)]
    db.CosyncAssetUpload.insert_many([{
        "_id": oid, "_partition": f"user_id={u}", "uid": u, "sessionId": "two",
        "filePath": f"two/{i:03d}.bin", "contentType": "application/octet-stream",
        "expirationHours": 24.0, "status": "pending", "createdAt": utcnow()}
        for i, oid in enumerate(ids)])

    def one(oid):
        rec = wait_status(db, oid, "initialized", timeout=60)
        assert put(rec["writeUrl"], oid.binary * 10, "application/octet-stream") == 200
        mark_uploaded(db, oid)
        return rec["path"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        paths = dict(zip(ids, pool.map(one, ids)))
    marked = {oid: time.monotonic() for oid in ids}
    healed = []

    def completed(oid):
        # The test stack's FerretDB applies an update as a read-modify-write of the whole
        # document, so the other broker's initialization, read before our `uploaded`, can
        # put the record back at `initialized` (MongoDB cannot). A client then marks it
        # uploaded again, as the mount does (upload_poll.c, record_regressed); the keys
        # and the one-asset rule below must hold either way.
        d = db.CosyncAssetUpload.find_one({"_id": oid})
        if d and d["status"] == "initialized" and time.monotonic() - marked[oid] > 2:
            healed.append(oid)
            mark_uploaded(db, oid)
            marked[oid] = time.monotonic()
        return d if d and d["status"] == "completed" else None

    for oid in ids:
        wait_for(lambda: completed(oid), 60, f"upload {oid} to complete")
    print(f"{len(healed)} of {n} uploads marked uploaded again after a lost update")
    assets = list(db.CosyncAsset.find({"uid": u}))
    assert len(assets) == n and {a["_id"] for a in assets} == set(ids)
    assert all(a["status"] == "active" and a["path"] == paths[a["_id"]] for a in assets)
    assert db.CosyncAssetUpload.count_documents({"leaseOwner": {"$exists": True}}) == 0
    assert all(b.proc.poll() is None for b in brokers)


def test_initialization_is_one_command(db, start_broker):
    """N uploads one after another: each initialization is one key-claim insert (one
    insertMany of its keys) and one worker update (no lease claim); a completion is the
    asset upsert, the supersede query and the finish, plus a claim that the dispatcher
    or a worker sends."""
    b = start_broker("--log-level", "debug")
    u = uid()
    n = 20
    for i in range(n):
        _id = new_upload(db, u, f"one/{i}.bin", "application/octet-stream")
        rec = wait_status(db, _id, "initialized")
        assert put(rec["writeUrl"], b"x" * 100, "application/octet-stream") == 200
        mark_uploaded(db, _id)
        wait_status(db, _id, "completed")
    b.proc.terminate()
    assert b.proc.wait(timeout=20) == 0
    log = b.log()
    assert len(re.findall(r"init: .*\(unclaimed\)", log)) == n
    m = re.search(r"sent by the workers: (\d+) \(find (\d+), getMore \d+, update (\d+), "
                  r"findAndModify (\d+), delete \d+, aggregate \d+, insert (\d+)", log)
    total, find, update, fam, insert = (int(g) for g in m.groups())
    assert update == 2 * n, log[-2000:]  # initialization finish + asset upsert
    assert find == n                     # supersede query
    assert n <= fam <= 2 * n             # completion finish (+ claims of busy polls)
    assert insert == n                   # key claims
    assert total == find + update + fam + insert
