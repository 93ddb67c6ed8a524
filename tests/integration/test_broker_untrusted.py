"""Untrusted input: every client-written field can be wrong. Each bad record becomes
`error` with a reason (or is ignored when it cannot be attributed); the broker never
crashes, spins, or signs a key outside the uploader's prefix."""
import datetime
import os
import uuid

import bson
import pymongo
import pytest
from bson.raw_bson import RawBSONDocument

from cosync_client import call, key_ts, mark_uploaded, new_upload, put, utcnow, wait_status
from procs import wait_for

HUGE = "a/" + "x" * (4 * 1024 * 1024)


def uid():
    return "u" + uuid.uuid4().hex[:16]


def base(u, **over):
    d = {"_id": bson.ObjectId(), "_partition": f"user_id={u}", "uid": u, "sessionId": "s",
         "filePath": "ok/file.jpg", "contentType": "image/jpeg", "expirationHours": 24.0,
         "status": "pending", "createdAt": utcnow()}
    for k, v in over.items():
        if v is DROP:
            d.pop(k, None)
        else:
            d[k] = v
    return d


DROP = object()

CASES = [
    ("uid-int", {"uid": 42}, "uid must be a string"),
    ("uid-missing", {"uid": DROP}, "uid is missing"),
    ("uid-traversal", {"uid": "../victim"}, "uid contains a character"),
    ("uid-public", {"uid": "public"}, "reserved"),
    ("uid-huge", {"uid": "u" * 100000}, "uid is 100000 bytes"),
    ("path-dotdot", {"filePath": "../../victim/x.jpg"}, "'..' component"),
    ("path-dotdot-mid", {"filePath": "a/../../b.jpg"}, "'..' component"),
    ("path-absolute", {"filePath": "/etc/passwd"}, "absolute"),
    ("path-nul", {"filePath": "a\x00b.jpg"}, "NUL"),
    ("path-control", {"filePath": "a\nb.jpg"}, "control character"),
    ("path-empty", {"filePath": ""}, "filePath is missing"),
    ("path-missing", {"filePath": DROP}, "filePath is missing"),
    ("path-type", {"filePath": ["a"]}, "filePath must be a string"),
    ("path-huge", {"filePath": HUGE}, "filePath is"),
    ("path-component", {"filePath": "d/" + "n" * 300 + ".jpg"}, "component is"),
    ("path-double-slash", {"filePath": "a//b.jpg"}, "empty component"),
    ("hours-negative", {"expirationHours": -5.0}, "negative"),
    ("hours-string", {"expirationHours": "24"}, "expirationHours must be a number"),
    ("hours-nan", {"expirationHours": float("nan")}, "not a finite number"),
    ("hours-inf", {"expirationHours": float("inf")}, "not a finite number"),
    ("hours-absurd", {"expirationHours": 1e300}, "absurd"),
    ("ctype-crlf", {"contentType": "image/jpeg\r\nX-Evil: 1"}, "printable ASCII"),
    ("ctype-type", {"contentType": 7}, "contentType must be a string"),
    ("ctype-noslash", {"contentType": "jpeg"}, "type/subtype"),
    ("no-partition", {"_partition": DROP, "assetPartition": ""}, "neither _partition"),
    ("partition-type", {"_partition": {"x": 1}}, "_partition must be a string"),
    ("session-type", {"sessionId": 5}, "sessionId must be a string"),
]


def test_bad_uploads_become_errors(db, broker, s3, bucket):
    u = uid()
    ids = {}
    for name, over, _why in CASES:
        if name.startswith("uid-"):
            over = dict(over)
        d = base(u, **over)
        try:
            db.CosyncAssetUpload.insert_one(d)
        except pymongo.errors.PyMongoError:
            # FerretDB refuses some values itself (NaN): nothing for the broker to see.
            continue
        ids[name] = d["_id"]
    # invalid UTF-8 cannot be written through a Python str: patch raw BSON bytes.
    d = base(u, filePath="caf\u00e9X.jpg")
    raw = bson.encode(d).replace(b"caf\xc3\xa9X", b"caf\xc3X\xa9")
    db.CosyncAssetUpload.insert_one(RawBSONDocument(raw))
    ids["path-utf8"] = d["_id"]
    # A valid record among them still goes through.
    good = new_upload(db, u, "fine/ok.jpg", "image/jpeg")
    wait_status(db, good, "initialized", timeout=60)
    expect = {name: why for name, _o, why in CASES}
    expect["path-utf8"] = "not valid UTF-8"
    # FerretDB replaces invalid UTF-8 with U+FFFD when it stores a string (MongoDB keeps
    # the bytes; the unit test test_records covers the broker's own check). Either way no
    # invalid bytes reach a key.
    rec = wait_status(db, ids.pop("path-utf8"), ["initialized", "error"])
    assert ("not valid UTF-8" in rec.get("error", "")) or rec["path"].startswith(
        f"{u}/caf\ufffdX")
    for name, _id in ids.items():
        rec = wait_status(db, _id, "error", timeout=60)
        assert expect[name] in rec["error"], (name, rec["error"])
        assert len(rec["error"]) < 600
        assert "writeUrl" not in rec and not rec.get("path"), name
    assert broker.proc.poll() is None
    # Nothing was signed outside the uploader's prefix.
    for rec in db.CosyncAssetUpload.find({"path": {"$exists": True, "$ne": ""}}):
        assert rec["path"].startswith(f"{rec['uid']}/") or rec["path"].startswith("public/")


def test_unattributable_records_are_ignored(db, broker):
    u = uid()
    db.CosyncAssetUpload.insert_many([
        {"_id": bson.ObjectId(), "status": 5, "uid": u},
        {"_id": bson.ObjectId(), "status": ["pending"], "uid": u},
        {"_id": bson.ObjectId(), "status": "weird", "uid": u},
    ])
    db.CosyncFunctionCall.insert_one({"_id": bson.ObjectId(), "status": {"x": 1}})
    good = new_upload(db, u, "fine/ok.jpg", "image/jpeg")
    wait_status(db, good, "initialized", timeout=60)
    assert db.CosyncAssetUpload.count_documents({"status": "error"}) == 0
    assert broker.proc.poll() is None


def test_string_ids_and_odd_but_valid_values(db, broker):
    u = uid()
    _id = new_upload(db, u, "ünïcødé/ファイル name+%.jpg", "image/jpeg", hours=1000,
                     _id="client-chosen-id")
    rec = wait_status(db, _id, "initialized")
    assert rec["path"].startswith(f"{u}/")
    # expirationHours above the cap: URLs last at most 168 h (S3's limit).
    assert "X-Amz-Expires=604800" in rec["url"]
    assert put(rec["writeUrl"], b"data", "image/jpeg") == 200
    mark_uploaded(db, _id)
    wait_status(db, _id, "completed")
    assert db.CosyncAsset.find_one({"_id": "client-chosen-id"})["filePath"] == \
        "ünïcødé/ファイル name+%.jpg"


def test_fields_changed_after_initialization_are_refused(db, broker, s3, bucket):
    victim, attacker = uid(), uid()
    # The victim's object.
    vid = new_upload(db, victim, "private/secret.jpg", "image/jpeg")
    vrec = wait_status(db, vid, "initialized")
    assert put(vrec["writeUrl"], b"victim data", "image/jpeg") == 200
    # The attacker points its upload at the victim's key, then says uploaded.
    aid = new_upload(db, attacker, "mine.jpg", "image/jpeg")
    wait_status(db, aid, "initialized")
    db.CosyncAssetUpload.update_one({"_id": aid}, {"$set": {"path": vrec["path"],
                                                            "status": "uploaded"}})
    rec = wait_status(db, aid, "error")
    assert "changed after the broker initialized" in rec["error"]
    assert db.CosyncAsset.find_one({"_id": aid}) is None
    # Or completes honestly, then retargets its asset and deletes it.
    aid2 = new_upload(db, attacker, "mine2.jpg", "image/jpeg")
    rec2 = wait_status(db, aid2, "initialized")
    assert put(rec2["writeUrl"], b"attacker", "image/jpeg") == 200
    mark_uploaded(db, aid2)
    wait_status(db, aid2, "completed")
    db.CosyncAsset.update_one({"_id": aid2}, {"$set": {"path": vrec["path"],
                                                       "status": "deleted"}})
    wait_for(lambda: db.CosyncAsset.find_one({"_id": aid2}) is None, 10, "the record to go")
    assert s3.get_object(Bucket=bucket, Key=vrec["path"])["Body"].read() == b"victim data"
    # Uploaded without ever being initialized.
    nid = new_upload(db, attacker, "x.jpg", "image/jpeg", status="uploaded",
                     path=vrec["path"])
    rec = wait_status(db, nid, "error")
    # The broker plans the record itself (keys under the attacker's own prefix) and
    # finds nothing there; the path the client wrote is never looked at.
    assert "original was not uploaded" in rec["error"] and f"{attacker}/" in rec["error"]
    assert s3.get_object(Bucket=bucket, Key=vrec["path"])["Body"].read() == b"victim data"


@pytest.mark.parametrize("name,args,why", [
    ("CosyncNope", ["x"], "unknown function"),
    (5, ["x"], "name must be a string"),
    ("CosyncRefreshAsset", None, "args is missing"),
    ("CosyncRefreshAsset", [], "args is empty"),
    ("CosyncRefreshAsset", [{"a": 1}], "must be a string or an ObjectId"),
    ("CosyncRefreshAsset", [",,,"], "no asset id"),
    ("CosyncRefreshAsset", [",".join(["x"] * 200)], "more than 100"),
    ("CosyncRemoveAsset", ["a,b"], "takes one asset id"),
    ("CosyncRemoveAsset", ["000000000000000000000000"], "not found"),
    ("CosyncArchiveAsset", ["y" * 1000], "invalid asset id"),
])
def test_bad_function_calls(db, broker, name, args, why):
    doc = {"_id": bson.ObjectId(), "name": name, "uid": "u1", "status": "pending",
           "createdAt": utcnow()}
    if args is not None:
        doc["args"] = args
    db.CosyncFunctionCall.insert_one(doc)
    rec = wait_status(db, doc["_id"], ["done", "error"], coll="CosyncFunctionCall")
    assert rec["status"] == "error" and why in rec["error"], rec
    assert broker.proc.poll() is None


def test_refresh_refuses_retargeted_asset(db, broker):
    victim, attacker = uid(), uid()
    vid = new_upload(db, victim, "private/secret.jpg", "image/jpeg")
    vrec = wait_status(db, vid, "initialized")
    aid = new_upload(db, attacker, "mine.jpg", "image/jpeg")
    rec = wait_status(db, aid, "initialized")
    assert put(rec["writeUrl"], b"attacker", "image/jpeg") == 200
    mark_uploaded(db, aid)
    wait_status(db, aid, "completed")
    db.CosyncAsset.update_one({"_id": aid}, {"$set": {"path": vrec["path"]}})
    res = call(db, "CosyncRefreshAsset", [str(aid)], attacker)
    assert res["status"] == "error" and "refusing to sign" in res["error"]
    # Changing uid as well does not help: the seal covers both.
    db.CosyncAsset.update_one({"_id": aid}, {"$set": {"uid": victim}})
    res = call(db, "CosyncRefreshAsset", [str(aid)], victim)
    assert res["status"] == "error" and "refusing to sign" in res["error"]


def spoof_id(oid):
    """Another ObjectId whose keys carry the same timestamp as oid's."""
    want = key_ts(oid)
    while True:
        cand = bson.ObjectId(oid.binary[:4] + os.urandom(8))
        if cand != oid and key_ts(cand) == want:
            return cand


def victim_asset(db, u, file_path="private/secret.jpg"):
    vid = new_upload(db, u, file_path, "image/jpeg")
    rec = wait_status(db, vid, "initialized")
    assert put(rec["writeUrl"], b"victim data", "image/jpeg") == 200
    assert put(rec["writeUrlSmall"], b"victim small", "image/jpeg") == 200
    mark_uploaded(db, vid)
    wait_status(db, vid, "completed")
    return vid, rec


def victim_intact(s3, bucket, rec):
    from cosync_client import key_of
    assert s3.get_object(Bucket=bucket, Key=rec["path"])["Body"].read() == b"victim data"
    small = key_of(rec["urlSmall"], bucket)
    assert s3.get_object(Bucket=bucket, Key=small)["Body"].read() == b"victim small"


def test_no_put_url_for_an_existing_key(db, broker, s3, bucket):
    """A client that copies the victim's uid and filePath and picks an _id with the same
    key timestamp never gets a PUT URL over the victim's object: the victim's key claims
    move it to other keys. The same when the victim's keys predate claims (the HEAD
    finds its object and MongoDB says whose)."""
    from cosync_client import key_of
    victim = uid()
    vid, vrec = victim_asset(db, victim)
    vkeys = {key_of(vrec[f], bucket) for f in ("url", "urlSmall", "urlMedium", "urlLarge")}

    def spoof(file_path):
        sid = spoof_id(vid)
        new_upload(db, victim, file_path, "image/jpeg", _id=sid)
        rec = wait_status(db, sid, ["initialized", "error"])
        assert rec["status"] == "initialized", rec
        keys = {key_of(rec[f], bucket) for f in ("writeUrl", "writeUrlSmall", "writeUrlMedium",
                                                   "writeUrlLarge")}
        assert not keys & vkeys, (keys, vkeys)
        assert rec["path"] != vrec["path"]
        return rec

    spoof("private/secret.jpg")
    # Aimed at a cut's key instead ("<stem>-small-<ts>.jpg" is also the original key of
    # "<stem>-small.jpg").
    spoof("private/secret-small.jpg")
    db.AssetfsKeyClaim.delete_many({"recordId": vid})  # as if made before claims
    spoof("private/secret.jpg")
    spoof("private/secret-small.jpg")
    victim_intact(s3, bucket, vrec)
    assert broker.proc.poll() is None


def test_reinitialization_after_upload_still_works(db, broker):
    """A record we initialized that comes back "pending" (lost update) after its client
    uploaded keeps its keys: the object there is its own."""
    u = uid()
    _id = new_upload(db, u, "again/mine.jpg", "image/jpeg")
    r1 = wait_status(db, _id, "initialized")
    assert put(r1["writeUrl"], b"mine", "image/jpeg") == 200
    db.CosyncAssetUpload.update_one({"_id": _id}, {"$set": {"status": "pending"}})
    wait_for(lambda: db.CosyncAssetUpload.find_one({"_id": _id})["updatedAt"] != r1["updatedAt"],
             15, "re-initialization")
    r2 = db.CosyncAssetUpload.find_one({"_id": _id})
    assert r2["status"] == "initialized" and r2["path"] == r1["path"], r2
    mark_uploaded(db, _id)
    wait_status(db, _id, "completed")
    # The whole initialization lost (FerretDB on SQLite: a claim that read the record
    # before it was initialized writes it back), after the client uploaded: the object
    # at the key is no other record's, so the record is initialized again.
    _id = new_upload(db, u, "again/lost.jpg", "image/jpeg")
    r1 = wait_status(db, _id, "initialized")
    assert put(r1["writeUrl"], b"mine", "image/jpeg") == 200
    db.CosyncAssetUpload.update_one({"_id": _id}, {
        "$set": {"status": "pending"},
        "$unset": {k: "" for k in ("path", "brokerSeal", "writeUrl", "url", "expiration")}})
    r2 = wait_status(db, _id, ["initialized", "error"])
    assert r2["status"] == "initialized" and r2["path"] == r1["path"], r2


def test_uninitialized_completion_aimed_at_another_asset(db, broker, s3, bucket):
    """Said "uploaded" without ever being initialized, with a spoofed _id: the planned
    key is another asset's; the broker neither adopts nor deletes it."""
    victim = uid()
    vid, vrec = victim_asset(db, victim)
    sid = spoof_id(vid)
    new_upload(db, victim, "private/secret.jpg", "image/jpeg", _id=sid, status="uploaded")
    rec = wait_status(db, sid, "error")
    # Planned past the victim's claimed key (or, for a key from before claims, refused
    # as someone else's): it finds no object of its own and adopts nothing.
    assert ("another asset already uses" in rec["error"]
            or "was not uploaded" in rec["error"]), rec["error"]
    assert rec.get("path", "") != vrec["path"]
    assert db.CosyncAsset.find_one({"_id": sid}) is None
    victim_intact(s3, bucket, vrec)


def test_stale_record_sharing_a_key_keeps_the_objects(db, start_broker, s3, bucket):
    """An unsealed (Cosync-made) record under the victim's prefix that points at the
    victim's key and goes stale: it becomes an error, the victim's objects stay."""
    start_broker("--set", "stale_upload_seconds=2")
    victim = uid()
    vid, vrec = victim_asset(db, victim)
    old = utcnow() - datetime.timedelta(hours=1)
    sid = bson.ObjectId()
    db.CosyncAssetUpload.insert_one(base(victim, _id=sid, status="initialized",
                                         path=vrec["path"], createdAt=old,
                                         urlSmall=vrec["urlSmall"]))
    rec = wait_status(db, sid, "error", timeout=20)
    assert "abandoned" in rec["error"]
    victim_intact(s3, bucket, vrec)
