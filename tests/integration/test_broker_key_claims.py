"""Keys keep names, and a key is never handed to two records: the broker claims every key
in AssetfsKeyClaim (_id = the key) and re-plans with the next timestamp when another
record holds one; ObjectIds from a clock far ahead are refused."""
import datetime
import hashlib
import os
import time
import uuid

import bson
import pytest

from cosync_client import (get, key_of, key_ts, mark_uploaded, new_upload, put, s3_exists,
                           wait_status)
from procs import wait_for

IMAGE_PARTS = [("writeUrl", "url"), ("writeUrlSmall", "urlSmall"),
               ("writeUrlMedium", "urlMedium"), ("writeUrlLarge", "urlLarge")]


def uid():
    return "u" + uuid.uuid4().hex[:16]


def same_ts_ids(n):
    """n ObjectIds of this second whose keys' first candidate timestamp is the same."""
    first = bson.ObjectId()
    want, out = key_ts(first), [first]
    while len(out) < n:
        cand = bson.ObjectId(first.binary[:4] + os.urandom(8))
        if cand not in out and key_ts(cand) == want:
            out.append(cand)
    return out


def upload_and_complete(db, rec, content_type="image/jpeg", parts=IMAGE_PARTS):
    bodies = {}
    for w, r in parts:
        bodies[r] = os.urandom(500) + rec["_id"].binary
        assert put(rec[w], bodies[r], content_type) == 200
    mark_uploaded(db, rec["_id"], size=len(bodies["url"]))
    wait_status(db, rec["_id"], "completed")
    return bodies


def keys_of(rec, bucket, parts=IMAGE_PARTS):
    return {key_of(rec[r], bucket) for _w, r in parts}


def test_same_path_same_second_distinct_keys(db, broker, s3, bucket):
    """Two records of one uid/filePath whose _ids share the second and even the key
    timestamp: both complete, each with its own keys and bytes (in two partitions, so
    that the second does not supersede the first)."""
    u = uid()
    a, b = same_ts_ids(2)
    new_upload(db, u, "写真/東京.jpg", "image/jpeg", _id=a, asset_partition="p1")
    ra = wait_status(db, a, "initialized")
    new_upload(db, u, "写真/東京.jpg", "image/jpeg", _id=b, asset_partition="p2")
    rb = wait_status(db, b, "initialized")
    assert ra["path"] == f"{u}/写真/東京-{key_ts(a)}.jpg"
    assert rb["path"] == f"{u}/写真/東京-{key_ts(a) + 1}.jpg"  # the next candidate
    assert not keys_of(ra, bucket) & keys_of(rb, bucket)
    ba, bb = upload_and_complete(db, ra), upload_and_complete(db, rb)
    for rec, bodies in ((ra, ba), (rb, bb)):
        asset = db.CosyncAsset.find_one({"_id": rec["_id"]})
        assert asset["status"] == "active" and asset["path"] == rec["path"]
        assert asset["filePath"] == "写真/東京.jpg"
        for _w, r in IMAGE_PARTS:
            assert get(asset[r]) == (200, bodies[r])
    # Every key is claimed by its record.
    for rec in (ra, rb):
        for k in keys_of(rec, bucket):
            assert db.AssetfsKeyClaim.find_one({"_id": k})["recordId"] == rec["_id"]
    # Initializing B again (a lost update put it back to pending) walks to its own keys.
    db.CosyncAssetUpload.update_one({"_id": b}, {"$set": {"status": "pending"},
                                                 "$unset": {"path": "", "brokerSeal": ""}})
    r2 = wait_status(db, b, "initialized")
    assert r2["path"] == rb["path"]


def test_names_alike_after_replacement(db, broker, bucket):
    """Names that differ only in characters the key rule replaces, NFC vs NFD, in one
    second with one key timestamp: all distinct keys; names kept where they can be."""
    u = uid()
    names = ["a/東京#.jpg", "a/東京%.jpg", "a/東京?.jpg", "a/東京.jpg",
             "a/Caf\u00e9.jpg", "a/Cafe\u0301.jpg"]
    ids = same_ts_ids(len(names))
    for _id, name in zip(ids, names):
        new_upload(db, u, name, "image/jpeg", _id=_id)
    recs = [wait_status(db, _id, "initialized") for _id in ids]
    paths = [r["path"] for r in recs]
    assert len(set(paths)) == len(paths), paths
    allkeys = [k for r in recs for k in keys_of(r, bucket)]
    assert len(set(allkeys)) == len(allkeys)
    ts = key_ts(ids[0])
    by_name = dict(zip(names, paths))
    # Kept as given: the two spellings of Café are two keys, neither normalized.
    assert by_name["a/Caf\u00e9.jpg"] == f"{u}/a/Caf\u00e9-{ts}.jpg"
    assert by_name["a/Cafe\u0301.jpg"] == f"{u}/a/Cafe\u0301-{ts}.jpg"
    assert all(p.startswith(f"{u}/a/東京") for p in paths[:4])


def test_unicode_keys_end_to_end(db, broker, s3, bucket):
    """A key with CJK, Cyrillic, emoji (ZWJ), combining marks, space, '+', '&', '=', '~'
    and '@': presigned PUT and GET, the broker's HEAD at completion and its DeleteObjects
    at purge all work on versitygw, and boto3 sees the same key."""
    u = uid()
    name = "旅行 2024/фото & 👨\u200d👩\u200d👧 e\u0301+x=1~@(копия).jpg"
    _id = new_upload(db, u, name, "image/jpeg")
    rec = wait_status(db, _id, "initialized")
    assert rec["path"] == f"{u}/{name[:-4]}-{key_ts(_id)}.jpg"
    assert "%E6%97%85%E8%A1%8C%202024/" in rec["writeUrl"]  # UTF-8 bytes, %XX uppercase
    bodies = upload_and_complete(db, rec)
    asset = db.CosyncAsset.find_one({"_id": _id})
    assert asset["status"] == "active"
    for _w, r in IMAGE_PARTS:
        key = key_of(asset[r], bucket)
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == bodies[r]
        assert get(asset[r]) == (200, bodies[r])
    db.CosyncAsset.update_one({"_id": _id}, {"$set": {"status": "deleted"}})
    wait_for(lambda: db.CosyncAsset.find_one({"_id": _id}) is None, 20, "the purge")
    for _w, r in IMAGE_PARTS:
        assert not s3_exists(s3, bucket, key_of(asset[r], bucket))
    # Deleting the objects released the claims.
    wait_for(lambda: db.AssetfsKeyClaim.count_documents({"recordId": _id}) == 0, 10,
             "the claims to go")


def test_legacy_object_without_claim_replans(db, broker, s3, bucket):
    """An object at the first candidate key that another record uses but nobody claims
    (a key from before claims): the new record is planned at the next key, and the old
    object stays."""
    u = uid()
    a, b = same_ts_ids(2)
    new_upload(db, u, "old/x.jpg", "image/jpeg", _id=a)
    ra = wait_status(db, a, "initialized")
    upload_and_complete(db, ra)
    db.AssetfsKeyClaim.delete_many({"recordId": a})  # as if made before claims
    new_upload(db, u, "old/x.jpg", "image/jpeg", _id=b)
    rb = wait_status(db, b, "initialized")
    assert rb["path"] != ra["path"] and not keys_of(ra, bucket) & keys_of(rb, bucket)
    assert s3.get_object(Bucket=bucket, Key=ra["path"])["Body"].read().endswith(a.binary)


def oid_at(dt):
    return bson.ObjectId.from_datetime(dt.replace(tzinfo=datetime.timezone.utc)).binary[:4]


def test_future_id_refused_past_id_accepted(db, broker):
    u = uid()
    future = bson.ObjectId(oid_at(datetime.datetime(2031, 1, 1)) + os.urandom(8))
    new_upload(db, u, "clock/ahead.jpg", "image/jpeg", _id=future)
    rec = wait_status(db, future, "error")
    assert "minutes ahead of the broker's clock" in rec["error"], rec["error"]
    assert "is the client's clock wrong?" in rec["error"]
    assert "writeUrl" not in rec and not rec.get("path")
    # A few minutes ahead (clock skew) is fine, and so is the past (a broker outage).
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)
    near = bson.ObjectId(oid_at(soon.replace(tzinfo=None)) + os.urandom(8))
    past = bson.ObjectId(oid_at(datetime.datetime(2020, 6, 1)) + os.urandom(8))
    new_upload(db, u, "clock/near.jpg", "image/jpeg", _id=near)
    new_upload(db, u, "clock/past.jpg", "image/jpeg", _id=past)
    assert wait_status(db, near, ["initialized", "error"])["status"] == "initialized"
    assert wait_status(db, past, ["initialized", "error"])["status"] == "initialized"
