"""assetfs-broker against the real stack, driven by a Cosync-style client (pymongo +
HTTP): every field a Cosync app reads, and the bytes behind every URL."""
import datetime
import json
import os
import time
import urllib.parse
import uuid

import bson
import pytest

from cosync_client import (call, get, key_of, mark_uploaded, new_upload, put, s3_exists, utcnow,
                           wait_status)
from procs import wait_for

IMAGE_PARTS = [("writeUrl", "url", ""), ("writeUrlSmall", "urlSmall", "-small-"),
               ("writeUrlMedium", "urlMedium", "-medium-"), ("writeUrlLarge", "urlLarge", "-large-")]


def uid():
    return "u" + uuid.uuid4().hex[:16]


def near(dt, seconds, slack=120):
    target = utcnow() + datetime.timedelta(seconds=seconds)
    return abs((dt - target).total_seconds()) < slack


def complete_image(db, u, file_path="photos/Beach Day.jpg", hours=24.0, asset_partition="public",
                   parts=None, content_type="image/jpeg", **meta):
    _id = new_upload(db, u, file_path, content_type, hours=hours, asset_partition=asset_partition)
    rec = wait_status(db, _id, "initialized")
    bodies = {}
    for w, r, _tag in IMAGE_PARTS if parts is None else parts:
        bodies[r] = os.urandom(1000 + len(w) * 37)
        assert put(rec[w], bodies[r], content_type) == 200
    mark_uploaded(db, _id, **meta)
    wait_status(db, _id, "completed")
    return _id, rec, bodies


def test_image_upload_three_cuts(db, broker, s3, bucket):
    u = uid()
    _id = new_upload(db, u, "photos/Beach Day.jpg", "image/jpeg", hours=24.0,
                     asset_partition="public", extra="ph-local-id")
    rec = wait_status(db, _id, "initialized")
    # What the broker sets on the upload (Cosync Version B).
    # The name is kept in the key (include/assetfs/naming.h).
    assert rec["path"].startswith(f"{u}/photos/Beach Day-") and rec["path"].endswith(".jpg")
    ts = rec["path"][len(f"{u}/photos/Beach Day-"):-4]
    assert ts.isdigit() and len(ts) == 13
    for w, r, tag in IMAGE_PARTS:
        assert rec[w].startswith("http") and "X-Amz-Signature=" in rec[w]
        assert "X-Amz-Signature=" in rec[r]
        assert key_of(rec[w], bucket) == f"{u}/photos/Beach Day{tag or '-'}{ts}.jpg"
        assert key_of(rec[r], bucket) == key_of(rec[w], bucket)
    assert "writeUrlVideoPreview" not in rec and "urlVideoPreview" not in rec
    assert near(rec["expiration"], 24 * 3600)
    assert "error" not in rec

    # The write URLs sign Content-Type: another type is refused, as is a GET.
    assert put(rec["writeUrl"], b"x", "text/plain") == 403
    bodies = {}
    for w, r, _tag in IMAGE_PARTS:
        bodies[r] = os.urandom(2000 + len(w))
        assert put(rec[w], bodies[r], "image/jpeg") == 200
    mark_uploaded(db, _id, size=len(bodies["url"]), color="#336699", xRes=4000, yRes=3000,
                  caption="at the beach", mtime=datetime.datetime(2024, 5, 1, 12, 0, 0))
    done = wait_status(db, _id, "completed")
    assert done["path"] == rec["path"]

    a = db.CosyncAsset.find_one({"_id": _id})
    assert a is not None
    assert a["_partition"] == "public"
    assert a["uid"] == u and a["sessionId"] == "device-1"
    assert a["path"] == rec["path"] and a["filePath"] == "photos/Beach Day.jpg"
    assert a["contentType"] == "image/jpeg" and a["expirationHours"] == 24.0
    assert a["status"] == "active"
    assert a["size"] == len(bodies["url"]) and len(a["etag"]) >= 32
    assert a["color"] == "#336699" and a["xRes"] == 4000 and a["yRes"] == 3000
    assert a["caption"] == "at the beach" and a["extra"] == "ph-local-id"
    assert a["mtime"] == datetime.datetime(2024, 5, 1, 12, 0, 0)
    assert near(a["expiration"], 24 * 3600)
    assert isinstance(a["createdAt"], datetime.datetime) and isinstance(a["updatedAt"], datetime.datetime)
    for _w, r, _tag in IMAGE_PARTS:
        status, body = get(a[r])
        assert status == 200 and body == bodies[r], r
        assert s3.head_object(Bucket=bucket, Key=key_of(a[r], bucket))["ContentType"] == "image/jpeg"
    # A second asset record never appears; the upload record stays, completed.
    assert db.CosyncAsset.count_documents({}) == 1


def test_video_preview_and_cuts(db, broker, s3, bucket):
    u = uid()
    _id = new_upload(db, u, "videos/IMG_0002.MOV", "video/quicktime", hours=48)
    rec = wait_status(db, _id, "initialized")
    stem = rec["path"][:-len(".MOV")]
    assert rec["path"].startswith(f"{u}/videos/IMG_0002-")
    ts = stem.rsplit("-", 1)[1]
    want = {"writeUrl": rec["path"],
            "writeUrlVideoPreview": f"{u}/videos/IMG_0002-videopreview-{ts}.png",
            "writeUrlSmall": f"{u}/videos/IMG_0002-small-{ts}.png",
            "writeUrlMedium": f"{u}/videos/IMG_0002-medium-{ts}.png",
            "writeUrlLarge": f"{u}/videos/IMG_0002-large-{ts}.png"}
    for w, k in want.items():
        assert key_of(rec[w], bucket) == k
    assert near(rec["expiration"], 48 * 3600)
    video = os.urandom(50000)
    assert put(rec["writeUrl"], video, "video/quicktime") == 200
    # Preview and its cuts are PNGs, presigned as image/png (not the video's type).
    assert put(rec["writeUrlSmall"], b"png", "video/quicktime") == 403
    pngs = {}
    for w in ("writeUrlVideoPreview", "writeUrlSmall", "writeUrlMedium", "writeUrlLarge"):
        pngs[w] = b"\x89PNG" + os.urandom(300)
        assert put(rec[w], pngs[w], "image/png") == 200
    mark_uploaded(db, _id, duration=12.5, xRes=1920, yRes=1080)
    wait_status(db, _id, "completed")
    a = db.CosyncAsset.find_one({"_id": _id})
    assert a["_partition"] == f"user_id={u}"  # no assetPartition: the upload's partition
    assert a["duration"] == 12.5 and a["xRes"] == 1920 and a["size"] == len(video)
    assert get(a["url"]) == (200, video)
    for w, r in (("writeUrlVideoPreview", "urlVideoPreview"), ("writeUrlSmall", "urlSmall"),
                 ("writeUrlMedium", "urlMedium"), ("writeUrlLarge", "urlLarge")):
        assert get(a[r]) == (200, pngs[w])
        assert s3.head_object(Bucket=bucket, Key=key_of(a[r], bucket))["ContentType"] == "image/png"


def test_document_has_no_cuts(db, broker):
    u = uid()
    _id = new_upload(db, u, "docs/report.pdf", "application/pdf")
    rec = wait_status(db, _id, "initialized")
    assert "writeUrlSmall" not in rec and "writeUrlVideoPreview" not in rec
    assert put(rec["writeUrl"], b"%PDF-1.4", "application/pdf") == 200
    mark_uploaded(db, _id)
    wait_status(db, _id, "completed")
    a = db.CosyncAsset.find_one({"_id": _id})
    assert get(a["url"]) == (200, b"%PDF-1.4") and "urlSmall" not in a


@pytest.fixture
def public_read_policy(s3, bucket):
    """Public assets need the bucket to allow anonymous GET under public/ (Cosync never
    set that up either; operators do, see docs/assetfs-broker.1)."""
    pol = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject"],
        "Resource": [f"arn:aws:s3:::{bucket}/public/*"]}]}
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(pol))


def test_public_asset(db, broker, s3, bucket, public_read_policy):
    u = uid()
    _id, rec, bodies = complete_image(db, u, "pub/logo.png", hours=0, content_type="image/png")
    assert rec["path"].startswith(f"public/{u}/pub/logo-")
    assert "expiration" not in rec
    for _w, r, _tag in IMAGE_PARTS:
        assert "X-Amz-" not in rec[r] and key_of(rec[r], bucket).startswith(f"public/{u}/")
    a = db.CosyncAsset.find_one({"_id": _id})
    assert a["expirationHours"] == 0 and "expiration" not in a
    for _w, r, _tag in IMAGE_PARTS:
        assert "X-Amz-" not in a[r]
        assert get(a[r]) == (200, bodies[r])
    # Refresh leaves a public asset as it is.
    res = call(db, "CosyncRefreshAsset", [str(_id)], u)
    assert res["status"] == "done" and res["result"]["url"] == a["url"]


def test_public_base_url(db, start_broker):
    start_broker("--set", "public_base_url=https://cdn.example.com/media")
    u = uid()
    _id = new_upload(db, u, "a/b c.jpg", "image/jpeg", hours=0)
    rec = wait_status(db, _id, "initialized")
    assert rec["url"] == f"https://cdn.example.com/media/{urllib.parse.quote(rec['path'])}"
    assert "X-Amz-Signature" in rec["writeUrl"]


def test_expiring_asset_refreshed_after_expiry(db, broker):
    u = uid()
    hours = 2.0 / 3600  # two seconds
    _id, rec, bodies = complete_image(db, u, "tmp/short.jpg", hours=hours)
    a = db.CosyncAsset.find_one({"_id": _id})
    assert get(a["url"])[0] == 200
    wait_for(lambda: get(a["url"])[0] == 403, 10, "the read URL to expire")
    assert get(a["urlSmall"])[0] == 403
    res = call(db, "CosyncRefreshAsset", [str(_id)], u)
    assert res["status"] == "done", res
    b = db.CosyncAsset.find_one({"_id": _id})
    assert b["expiration"] > a["expiration"]
    assert res["result"]["url"] == b["url"] and str(res["result"]["_id"]) == str(_id)
    for _w, r, _tag in IMAGE_PARTS:
        assert b[r] != a[r]
        assert get(b[r]) == (200, bodies[r]), r
    # A comma-separated list (Cosync's later API) refreshes each; unknown ids are left out.
    _id2, _rec2, _b2 = complete_image(db, u, "tmp/second.jpg", hours=1)
    res = call(db, "CosyncRefreshAsset", [f"{_id}, {_id2},{bson.ObjectId()}"], u)
    assert res["status"] == "done"
    assert sorted(str(x["_id"]) for x in res["result"]) == sorted([str(_id), str(_id2)])
    res = call(db, "CosyncRefreshAsset", [str(bson.ObjectId())], u)
    assert res["status"] == "error" and "not found" in res["error"]


def test_remove_by_owner_and_refused_for_another_uid(db, broker, s3, bucket):
    u = uid()
    _id, rec, bodies = complete_image(db, u)
    keys = [key_of(rec[w], bucket) for w, _r, _t in IMAGE_PARTS]
    res = call(db, "CosyncRemoveAsset", [str(_id)], "intruder")
    assert res["status"] == "error" and "owner" in res["error"], res
    assert db.CosyncAsset.find_one({"_id": _id})["status"] == "active"
    assert all(s3_exists(s3, bucket, k) for k in keys)
    res = call(db, "CosyncRemoveAsset", [str(_id)], u)
    assert res["status"] == "done" and res["result"] == str(_id)
    wait_for(lambda: db.CosyncAsset.find_one({"_id": _id}) is None, 10, "the asset to go")
    assert not any(s3_exists(s3, bucket, k) for k in keys)
    assert db.CosyncAssetUpload.find_one({"_id": _id}) is None
    res = call(db, "CosyncRemoveAsset", [str(_id)], u)
    assert res["status"] == "error" and "not found" in res["error"]


def test_archive(db, broker, s3, bucket):
    u = uid()
    _id, rec, _bodies = complete_image(db, u)
    res = call(db, "CosyncArchiveAsset", [str(_id)], "someone-else")
    assert res["status"] == "error" and "owner" in res["error"]
    res = call(db, "CosyncArchiveAsset", [str(_id)], u)
    assert res["status"] == "done" and res["result"] is True
    a = db.CosyncAsset.find_one({"_id": _id})
    assert a["status"] == "archived"
    assert s3_exists(s3, bucket, rec["path"])


def test_status_deleted_removes_objects_then_record(db, broker, s3, bucket):
    u = uid()
    _id, rec, _bodies = complete_image(db, u)
    db.CosyncAsset.update_one({"_id": _id}, {"$set": {"status": "deleted"}})
    wait_for(lambda: db.CosyncAsset.find_one({"_id": _id}) is None, 10, "the asset to go")
    for w, _r, _t in IMAGE_PARTS:
        assert not s3_exists(s3, bucket, key_of(rec[w], bucket))


@pytest.mark.parametrize("keep", [False, True])
def test_supersede(db, start_broker, s3, bucket, keep):
    start_broker("--set", f"keep_versions={'yes' if keep else 'no'}")
    u = uid()
    old, rec_old, _ = complete_image(db, u, "same/name.jpg")
    new, rec_new, bodies = complete_image(db, u, "same/name.jpg")
    assert rec_old["path"] != rec_new["path"]
    if keep:
        wait_for(lambda: db.CosyncAsset.find_one({"_id": old})["status"] == "archived", 10,
                 "the old version to be archived")
        assert s3_exists(s3, bucket, rec_old["path"])
    else:
        wait_for(lambda: db.CosyncAsset.find_one({"_id": old}) is None, 10,
                 "the old version to be deleted")
        assert not s3_exists(s3, bucket, rec_old["path"])
    a = db.CosyncAsset.find_one({"_id": new})
    assert a["status"] == "active" and get(a["url"]) == (200, bodies["url"])
    assert db.CosyncAsset.count_documents({"filePath": "same/name.jpg", "status": "active"}) == 1


def test_missing_original_and_missing_cut(db, broker, s3, bucket):
    u = uid()
    # Nothing uploaded: error with a reason, no asset.
    _id = new_upload(db, u, "x/never.jpg", "image/jpeg")
    wait_status(db, _id, "initialized")
    mark_uploaded(db, _id)
    rec = wait_status(db, _id, "error")
    assert "original was not uploaded" in rec["error"]
    assert db.CosyncAsset.find_one({"_id": _id}) is None
    # The large cut missing: logged, its URL left empty, the asset still made.
    _id, rec, bodies = complete_image(db, u, "x/partial.jpg", parts=IMAGE_PARTS[:3])
    a = db.CosyncAsset.find_one({"_id": _id})
    assert "urlLarge" not in a and get(a["urlMedium"]) == (200, bodies["urlMedium"])
    assert "was not uploaded" in broker.log()


def test_stale_uploads_become_errors(db, start_broker, s3, bucket):
    b = start_broker("--set", "stale_upload_seconds=2")
    u = uid()
    _id = new_upload(db, u, "slow/never-finished.jpg", "image/jpeg")
    rec = wait_status(db, _id, "initialized")
    assert put(rec["writeUrl"], b"partial", "image/jpeg") == 200
    rec = wait_status(db, _id, "error", timeout=15)
    assert "not finished within 2 s" in rec["error"]
    assert not s3_exists(s3, bucket, rec["path"])
    assert b.proc.poll() is None


def test_sigterm_releases_and_restarts(db, start_broker):
    b = start_broker()
    u = uid()
    _id = new_upload(db, u, "a/one.jpg", "image/jpeg")
    wait_status(db, _id, "initialized")
    b.proc.terminate()
    assert b.proc.wait(timeout=15) == 0
    assert "SIGTERM received" in b.log() and "stopped" in b.log()
    _id2 = new_upload(db, u, "a/two.jpg", "image/jpeg")
    start_broker()
    wait_status(db, _id2, "initialized")
    assert db.CosyncAssetUpload.count_documents({"leaseOwner": {"$exists": True}}) == 0


def test_pending_to_initialized_latency(db, broker):
    """Inserts uploads one by one and reports pending->initialized latency (broker's
    updatedAt minus the client's createdAt; same clock, millisecond dates)."""
    u = uid()
    lat = []
    for i in range(60):
        _id = new_upload(db, u, f"lat/{i}.jpg", "image/jpeg")
        rec = wait_status(db, _id, "initialized")
        lat.append((rec["updatedAt"] - rec["createdAt"]).total_seconds() * 1000)
        time.sleep(0.02 + (i % 7) * 0.03)  # let the broker go idle to varying degrees
    lat.sort()
    p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1]
    print(f"\npending->initialized latency over {len(lat)} uploads: p50 {p50:.1f} ms, "
          f"p99 {p99:.1f} ms, max {lat[-1]:.1f} ms")
    assert p50 < 250 and p99 < 1000


def test_secret_never_logged(db, stack, start_broker):
    b = start_broker("--log-level", "debug")
    u = uid()
    _id, rec, _ = complete_image(db, u)
    res = call(db, "CosyncRefreshAsset", [str(_id)], u)
    assert res["status"] == "done"
    log = b.log()
    assert stack["ASSETFS_S3_SECRET_KEY"] not in log
    assert rec["writeUrl"].split("X-Amz-Signature=")[1][:20] not in log


def test_config_file_must_be_private(build_dir, broker_env, tmp_path):
    import subprocess
    cfg = tmp_path / "broker.conf"
    cfg.write_text(f"s3_bucket = x\ns3_secret_key = {broker_env['ASSETFS_S3_SECRET_KEY']}\n")
    os.chmod(cfg, 0o644)
    r = subprocess.run([os.path.join(build_dir, "assetfs-broker"), "--config", str(cfg)],
                       env=broker_env, capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "chmod 600" in r.stderr
    r = subprocess.run([os.path.join(build_dir, "assetfs-broker"), "--help"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and "--config" in r.stdout


def test_lost_initialization_heals(db, broker):
    """FerretDB 1.24 (SQLite) can lose one of two concurrent updates of a document, so a
    record may lose its initialization after the client already uploaded. Keys are
    derived from the record, so re-planning finds the same objects."""
    u = uid()
    _id = new_upload(db, u, "heal/me.jpg", "image/jpeg")
    rec = wait_status(db, _id, "initialized")
    for w, _r, _t in IMAGE_PARTS:
        assert put(rec[w], b"bytes-" + w.encode(), "image/jpeg") == 200
    wiped = {k: "" for k in ("path", "brokerSeal", "expiration", "writeUrl", "url",
                             "writeUrlSmall", "urlSmall")}
    db.CosyncAssetUpload.update_one({"_id": _id}, {"$unset": wiped,
                                                   "$set": {"status": "uploaded"}})
    wait_status(db, _id, "completed")
    a = db.CosyncAsset.find_one({"_id": _id})
    assert a["path"] == rec["path"]
    assert get(a["url"]) == (200, b"bytes-writeUrl")
    assert get(a["urlSmall"]) == (200, b"bytes-writeUrlSmall")
    # Initializing again (e.g. after a lost update put it back to pending) gives the
    # same keys.
    _id2 = new_upload(db, u, "heal/again.jpg", "image/jpeg")
    r1 = wait_status(db, _id2, "initialized")
    db.CosyncAssetUpload.update_one({"_id": _id2}, {"$set": {"status": "pending"}})
    wait_for(lambda: db.CosyncAssetUpload.find_one({"_id": _id2})["updatedAt"] != r1["updatedAt"]
             and db.CosyncAssetUpload.find_one({"_id": _id2})["status"] == "initialized",
             15, "re-initialization")
    assert db.CosyncAssetUpload.find_one({"_id": _id2})["path"] == r1["path"]


def test_old_answered_calls_are_deleted(db, start_broker):
    start_broker(env={"ASSETFS_CALL_KEEP_SECONDS": "3"})
    u = uid()
    old = utcnow() - datetime.timedelta(seconds=60)
    old_oid = bson.ObjectId.from_datetime(old)
    docs = {
        "done_old": {"status": "done", "createdAt": old, "updatedAt": old},
        "error_old_no_updated": {"status": "error", "createdAt": old},
        "done_no_dates": {"_id": bson.ObjectId(str(old_oid)[:8] + "0" * 15 + "1"),
                          "status": "done"},
        "pending_old": {"status": "pending", "createdAt": old, "name": "NoSuchFunction"},
        "done_recent": {"status": "done", "createdAt": utcnow(), "updatedAt": utcnow()},
    }
    ids = {}
    for k, d in docs.items():
        d = {"_id": bson.ObjectId(), "uid": u, "name": "CosyncArchiveAsset", "args": ["x"], **d}
        db.CosyncFunctionCall.insert_one(d)
        ids[k] = d["_id"]
    answered = call(db, "CosyncRefreshAsset", [str(bson.ObjectId())], u)
    assert answered["status"] == "error"
    gone = ["done_old", "error_old_no_updated", "done_no_dates"]
    wait_for(lambda: all(db.CosyncFunctionCall.find_one({"_id": ids[k]}) is None for k in gone),
             10, "old answered calls to be deleted")
    # The pending one was answered (unknown function) just now: it is young again.
    assert db.CosyncFunctionCall.find_one({"_id": ids["pending_old"]})["status"] == "error"
    assert db.CosyncFunctionCall.find_one({"_id": ids["done_recent"]}) is not None
    assert db.CosyncFunctionCall.find_one({"_id": answered["_id"]}) is not None
    wait_for(lambda: db.CosyncFunctionCall.find_one({"_id": answered["_id"]}) is None, 15,
             "the answered call to be deleted once 3 s old")


def test_answered_calls_kept_with_call_keep_zero(db, start_broker):
    b = start_broker(env={"ASSETFS_CALL_KEEP_SECONDS": "0"})
    old = utcnow() - datetime.timedelta(days=30)
    _id = db.CosyncFunctionCall.insert_one({"name": "CosyncRefreshAsset", "args": ["x"],
                                            "uid": "u1", "status": "done", "createdAt": old,
                                            "updatedAt": old}).inserted_id
    time.sleep(2.5)
    assert db.CosyncFunctionCall.find_one({"_id": _id}) is not None
    assert "answered function call" not in b.log()
