"""Versions of one file through a real mount: which save wins is the broker's to say, and
a file moved over an upload still in flight is never lost.

- A CosyncAsset whose _id carries a far-future time (a laptop with a wrong clock) used
  to outrank every later save of the same path: the save was superseded and purged.
  Versions are now ordered by the broker's clock (`versionAt`).
- `cp new a; mv c a` (or `rm a; mv c a`) before the broker completed `a`: the completion
  superseded at `a` (taking `c`, just moved there) and orphan clean-up then removed `a`'s
  own asset, so both were gone. The mount now marks the replaced upload `abandoned`
  before it moves anything, and the broker makes no active asset of it and supersedes
  nothing with it. The completion is held back with the broker's test pause hook, at
  the claim (the mark is seen when the lease is renewed) and after the upsert (seen when
  the upload is read again before superseding).
"""
import datetime
import os
import shutil
import time

import bson
import pytest

from cosync_client import utcnow
from fs_write_util import active_asset, http_get, wait_asset
from procs import wait_for

PAUSE_MS = 2500


def far_future_id():
    t = datetime.datetime(2031, 6, 1, tzinfo=datetime.timezone.utc)
    raw = bson.ObjectId.from_datetime(t).binary[:4] + os.urandom(8)
    return bson.ObjectId(raw)


def test_far_future_asset_does_not_outrank_a_later_save(db, s3, bucket, broker, start_mount):
    future = far_future_id()
    key = f"tester/report-{future}.txt"
    s3.put_object(Bucket=bucket, Key=key, Body=b"written by a laptop in 2031")
    db.CosyncAsset.insert_one({"_id": future, "_partition": "shared", "uid": "tester",
                               "path": key, "filePath": "report.txt", "status": "active",
                               "contentType": "text/plain", "size": 27,
                               "createdAt": utcnow(), "updatedAt": utcnow()})
    m = start_mount()
    path = m.p("report.txt", partition="shared")
    wait_for(lambda: os.path.exists(path), 15, "the 2031 asset in the listing")
    with open(path, "wb") as f:
        f.write(b"saved today")

    def ours():
        a = active_asset(db, "report.txt", "shared")
        return a if a and a["_id"] != future else None
    a = wait_for(ours, 30, "the save to complete")
    assert "versionAt" in a and "completedAt" in a, a
    # The 2031 record lost (superseded), the save stays, now and after the broker's
    # next passes, and reads back through the mount and its URL.
    wait_for(lambda: (db.CosyncAsset.find_one({"_id": future}) or {}).get("status")
             != "active", 15, "the 2031 version to be superseded")
    actives = list(db.CosyncAsset.find({"_partition": "shared", "filePath": "report.txt",
                                        "status": "active"}))
    assert [x["_id"] for x in actives] == [a["_id"]], actives
    assert http_get(a["url"]) == b"saved today"
    with open(path, "rb") as f:
        assert f.read() == b"saved today"


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def wait_pause(b, point, n_before):
    wait_for(lambda: b.log().count(f"test pause: {point}") > n_before, 20,
             f"the broker to pause at {point}")


@pytest.mark.parametrize("point", ["complete_claimed", "complete_upserted"])
@pytest.mark.parametrize("how", ["cp-then-mv", "rm-then-mv"])
def test_move_over_an_upload_in_flight_keeps_the_moved_file(db, start_broker, start_mount,
                                                            point, how):
    b = start_broker(env={"ASSETFS_BROKER_TEST_PAUSE": f"{point}={PAUSE_MS}"})
    m = start_mount()
    d = m.p("inflight")
    os.makedirs(d)
    a, c = os.path.join(d, "a.bin"), os.path.join(d, "c.bin")
    write(a, b"old a")
    write(c, b"the file moved in")
    ca = wait_asset(db, "inflight/c.bin", m.upload_partition, timeout=30)
    old = wait_asset(db, "inflight/a.bin", m.upload_partition, timeout=30)
    for x in (ca, old):
        wait_for(lambda: (db.CosyncAssetUpload.find_one({"_id": x["_id"]}) or {}).get(
            "status") == "completed", 30, "the first uploads to complete")
    n = b.log().count(f"test pause: {point}")
    # The new save of a returns at `uploaded` (default mode); its completion is held.
    write(a, b"new a")
    wait_pause(b, point, n)
    new_id = bson.ObjectId(b.log().split(f"test pause: {point} ")[-1].split()[0])
    assert new_id not in (ca["_id"], old["_id"])
    if how == "rm-then-mv":
        os.unlink(a)
    shutil.move(c, a)
    # The held completion ends: the upload completed (or, when the janitor already purged
    # the asset the mount removed, its record is gone with it) and it is marked abandoned.
    def ended():
        u = db.CosyncAssetUpload.find_one({"_id": new_id})
        return u is None or u["status"] in ("completed", "error")
    wait_for(ended, 30, "the held completion to end")
    # The moved-in file is the one at a, through the database and through the mount,
    # and stays so after the broker's later passes (janitor, orphan clean-up).
    for _ in range(2):
        moved = db.CosyncAsset.find_one({"_id": ca["_id"]})
        assert moved["status"] == "active" and moved["filePath"] == "inflight/a.bin", moved
        actives = list(db.CosyncAsset.find({"filePath": "inflight/a.bin", "status": "active"}))
        assert [x["_id"] for x in actives] == [ca["_id"]], actives
        assert http_get(moved["url"]) == b"the file moved in"
        wait_for(lambda: open(a, "rb").read() == b"the file moved in", 10,
                 "the mount to show the moved file at a")
        assert not os.path.exists(c)
        wait_for(lambda: (db.CosyncAsset.find_one({"_id": new_id}) or {}).get("status")
                 != "active", 10, "the abandoned upload's asset to be removed")
        time.sleep(1.5)
    u = db.CosyncAssetUpload.find_one({"_id": new_id})
    assert u is None or (u["status"] == "completed" and u.get("abandoned") is True), u
