"""A file renamed while the broker completes its upload (the filesystem updates filePath
on the CosyncAssetUpload, and on the CosyncAsset once that exists, by _id).

The broker is paused at fixed points with the test-only ASSETFS_BROKER_TEST_PAUSE hook
(it logs "test pause: <point> <id>" and sleeps), so each interleaving is provoked
deterministically: the test renames inside the window, then checks that the asset ends
at the newest filePath the client wrote and that no live asset was superseded because of
a path the completed one no longer holds. Each scenario is looped."""
import uuid

import bson
import pytest

from cosync_client import mark_uploaded, new_upload, put, s3_exists, utcnow, wait_status
from procs import wait_for

LOOPS = 4
PAUSE_MS = 700


def uid():
    return "u" + uuid.uuid4().hex[:12]


def live_asset(db, s3, bucket, u, file_path, _id=None):
    """An active asset (with its object) that another client already has at file_path;
    its _id is older than any upload made after it, so supersede would pick it."""
    _id = _id or bson.ObjectId()
    key = f"{u}/live-{_id}.bin"
    s3.put_object(Bucket=bucket, Key=key, Body=b"live bytes")
    db.CosyncAsset.insert_one({"_id": _id, "_partition": "shared", "uid": u, "path": key,
                               "filePath": file_path, "status": "active",
                               "contentType": "application/octet-stream",
                               "createdAt": utcnow(), "updatedAt": utcnow()})
    return _id, key


def uploaded(db, u, file_path):
    _id = new_upload(db, u, file_path, "application/octet-stream", asset_partition="shared")
    rec = wait_status(db, _id, "initialized")
    assert put(rec["writeUrl"], b"new bytes", "application/octet-stream") == 200
    return _id


def wait_pause(b, point, _id, seen):
    line = f"test pause: {point} {_id}"
    wait_for(lambda: b.log().count(line) > seen.get(line, 0), 20, line)
    seen[line] = b.log().count(line)


def rename_upload(db, _id, fp):
    db.CosyncAssetUpload.update_one({"_id": _id}, {"$set": {"filePath": fp,
                                                            "updatedAt": utcnow()}})


def rename_asset(db, _id, fp):
    db.CosyncAsset.update_one({"_id": _id}, {"$set": {"filePath": fp, "updatedAt": utcnow()}})


def check_end(db, s3, bucket, x, want_fp, lives):
    wait_status(db, x, "completed")
    a = db.CosyncAsset.find_one({"_id": x})
    assert a["status"] == "active" and a["filePath"] == want_fp, a
    for lid, key, fp in lives:
        la = db.CosyncAsset.find_one({"_id": lid})
        assert la is not None and la["status"] == "active" and la["filePath"] == fp, la
        assert s3_exists(s3, bucket, key)
    assert db.CosyncAsset.count_documents({"_partition": "shared", "filePath": want_fp,
                                           "status": "active"}) == 1


@pytest.mark.parametrize("fs_like", [True, False], ids=["upload+asset", "upload-only"])
def test_rename_between_claim_and_upsert(db, start_broker, s3, bucket, fs_like):
    """The bug: the broker wrote the claimed (old) name into the asset and superseded at
    it, deleting the asset another rename had just moved there."""
    b = start_broker(env={"ASSETFS_BROKER_TEST_PAUSE": f"complete_claimed={PAUSE_MS}"})
    u, seen = uid(), {}
    for i in range(LOOPS):
        ly, ky = live_asset(db, s3, bucket, u, f"d{i}/y.bin")
        x = uploaded(db, u, f"d{i}/x.tmp")
        mark_uploaded(db, x)
        wait_pause(b, "complete_claimed", x, seen)
        rename_upload(db, x, f"d{i}/x.bin")
        if fs_like:
            rename_asset(db, x, f"d{i}/x.bin")  # no asset yet: matches nothing
        rename_asset(db, ly, f"d{i}/x.tmp")     # another file takes the old name
        check_end(db, s3, bucket, x, f"d{i}/x.bin", [(ly, ky, f"d{i}/x.tmp")])


@pytest.mark.parametrize("fs_like", [True, False], ids=["upload+asset", "upload-only"])
def test_rename_after_upsert(db, start_broker, s3, bucket, fs_like):
    b = start_broker(env={"ASSETFS_BROKER_TEST_PAUSE": f"complete_upserted={PAUSE_MS}"})
    u, seen = uid(), {}
    for i in range(LOOPS):
        ly, ky = live_asset(db, s3, bucket, u, f"d{i}/y.bin")
        x = uploaded(db, u, f"d{i}/x.tmp")
        mark_uploaded(db, x)
        wait_pause(b, "complete_upserted", x, seen)
        assert db.CosyncAsset.find_one({"_id": x})["filePath"] == f"d{i}/x.tmp"
        rename_upload(db, x, f"d{i}/x.bin")
        if fs_like:
            rename_asset(db, x, f"d{i}/x.bin")
        rename_asset(db, ly, f"d{i}/x.tmp")
        check_end(db, s3, bucket, x, f"d{i}/x.bin", [(ly, ky, f"d{i}/x.tmp")])


def test_renamed_twice_while_completing(db, start_broker, s3, bucket):
    """Renamed once before the upsert and again after it (upload and asset, as the
    filesystem does); a third file moved to the middle name stays."""
    b = start_broker(env={"ASSETFS_BROKER_TEST_PAUSE":
                          f"complete_claimed={PAUSE_MS},complete_upserted={PAUSE_MS}"})
    u, seen = uid(), {}
    for i in range(LOOPS):
        ly, ky = live_asset(db, s3, bucket, u, f"d{i}/y.bin")
        x = uploaded(db, u, f"d{i}/x.tmp")
        mark_uploaded(db, x)
        wait_pause(b, "complete_claimed", x, seen)
        rename_upload(db, x, f"d{i}/x1.bin")
        wait_pause(b, "complete_upserted", x, seen)
        rename_upload(db, x, f"d{i}/x2.bin")
        rename_asset(db, x, f"d{i}/x2.bin")
        rename_asset(db, ly, f"d{i}/x1.bin")
        check_end(db, s3, bucket, x, f"d{i}/x2.bin", [(ly, ky, f"d{i}/x1.bin")])


def test_rename_before_claim_and_after_completion(db, broker, s3, bucket):
    u = uid()
    for i in range(LOOPS):
        ly, ky = live_asset(db, s3, bucket, u, f"d{i}/y.bin")
        x = uploaded(db, u, f"d{i}/x.tmp")
        # Renamed in the same write that says uploaded: the claim reads the new name.
        mark_uploaded(db, x, filePath=f"d{i}/x.bin")
        rename_asset(db, ly, f"d{i}/x.tmp")
        check_end(db, s3, bucket, x, f"d{i}/x.bin", [(ly, ky, f"d{i}/x.tmp")])
        # After completion the client renames the asset itself.
        rename_upload(db, x, f"d{i}/x-final.bin")
        rename_asset(db, x, f"d{i}/x-final.bin")
        assert db.CosyncAsset.find_one({"_id": x})["filePath"] == f"d{i}/x-final.bin"


def test_same_name_rewrite_still_superseded(db, start_broker, s3, bucket):
    """The ordinary case is unchanged: a newer upload at the same filePath replaces the
    live asset there, even with the pauses in place."""
    start_broker(env={"ASSETFS_BROKER_TEST_PAUSE": "complete_upserted=200"})
    u = uid()
    ly, ky = live_asset(db, s3, bucket, u, "same/name.bin")
    x = uploaded(db, u, "same/name.bin")
    mark_uploaded(db, x)
    wait_status(db, x, "completed")
    wait_for(lambda: db.CosyncAsset.find_one({"_id": ly}) is None, 15,
             "the old version to be deleted")
    assert not s3_exists(s3, bucket, ky)
    assert db.CosyncAsset.find_one({"_id": x})["filePath"] == "same/name.bin"
