"""Assets made by the real Cosync server (no brokerSeal): their cut and preview keys do not
follow our naming (cosync-storage.md §2.4-2.6, §4 items 5-6), so the broker takes them
from the stored URLs, confined to the owner's prefix. The records and objects are made by
hand here (pymongo + boto3), as Cosync would have left them."""
import os
import urllib.parse
import uuid

import bson

from cosync_client import call, get, key_of, s3_exists, utcnow
from procs import wait_for

TS = "1623456789000"


def aws_url(bucket, key):
    """A virtual-hosted AWS presigned URL as Cosync stored it (long expired)."""
    q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=86400&X-Amz-Signature=" + "0" * 64
    return f"https://{bucket}.s3.amazonaws.com/{urllib.parse.quote(key)}?{q}"


def put_objects(s3, bucket, keys):
    bodies = {}
    for k in keys:
        bodies[k] = os.urandom(700 + len(k))
        s3.put_object(Bucket=bucket, Key=k, Body=bodies[k])
    return bodies


def legacy_asset(db, u, path, content_type, urls):
    _id = bson.ObjectId()
    doc = {"_id": _id, "_partition": "public", "uid": u, "sessionId": "device-1", "path": path,
           "contentType": content_type, "expirationHours": 24.0, "caption": "", "size": 0,
           "duration": 0, "color": "#000000", "xRes": 0, "yRes": 0, "status": "active",
           "createdAt": utcnow(), "updatedAt": utcnow()}
    doc.update(urls)
    db.CosyncAsset.insert_one(doc)
    return _id


def test_legacy_video_refresh_and_remove(db, broker, s3, bucket, stack):
    u = "u" + uuid.uuid4().hex[:12]
    base = f"{u}/videos/IMG_0002"
    keys = {
        "url": f"{base}-{TS}.MOV",
        "urlVideoPreview": f"{base}-videopreview-{TS}-.png",  # Cosync's "-.png" (§4.5)
        "urlSmall": f"{base}-small-{TS}-.png",
        "urlMedium": f"{base}-medium-{TS}-.png",
        "urlLarge": f"{base}-large-{TS}-.png",
    }
    bodies = put_objects(s3, bucket, keys.values())
    endpoint = stack["ASSETFS_S3_ENDPOINT"].rstrip("/")
    urls = {
        "url": aws_url(bucket, keys["url"]),
        "urlVideoPreview": aws_url(bucket, keys["urlVideoPreview"]),
        # Path style, with an escaped character to decode.
        "urlSmall": f"{endpoint}/{bucket}/{keys['urlSmall'].replace('_', '%5F')}?X-Amz-Expires=1",
        # Cosync's refresh rebuilt keys as "uid//dir/..." (§4.6).
        "urlMedium": aws_url(bucket, keys["urlMedium"].replace(f"{u}/", f"{u}//", 1)),
        "urlLarge": aws_url(bucket, keys["urlLarge"]),
    }
    _id = legacy_asset(db, u, keys["url"], "video/quicktime", urls)

    res = call(db, "CosyncRefreshAsset", [str(_id)], u)
    assert res["status"] == "done", res
    a = res["result"]
    for field, key in keys.items():
        assert a[field] != urls[field]
        assert key_of(a[field], bucket) == key, field
        status, body = get(a[field])
        assert status == 200 and body == bodies[key], field
    assert "brokerSeal" not in db.CosyncAsset.find_one({"_id": _id})

    res = call(db, "CosyncRemoveAsset", [str(_id)], u)
    assert res["status"] == "done", res
    wait_for(lambda: db.CosyncAsset.find_one({"_id": _id}) is None, 10, "the asset to go")
    for key in keys.values():
        assert not s3_exists(s3, bucket, key), key


def test_legacy_urls_outside_the_prefix_are_ignored(db, broker, s3, bucket):
    u = "u" + uuid.uuid4().hex[:12]
    victim = "v" + uuid.uuid4().hex[:12]
    theirs = [f"{victim}/photos/secret-small-{TS}.jpg", f"public/{victim}/x-medium-{TS}.jpg",
              f"{u}/../{victim}/photos/secret-large-{TS}.jpg"]
    put_objects(s3, bucket, theirs[:2])
    mine = {"url": f"{u}/photos/cat-{TS}.jpg", "urlSmall": f"{u}/photos/cat-small-{TS}.jpg",
            "urlMedium": f"{u}/photos/cat-medium-{TS}.jpg",
            "urlLarge": f"{u}/photos/cat-large-{TS}.jpg"}
    bodies = put_objects(s3, bucket, mine.values())
    urls = {"url": aws_url(bucket, mine["url"]), "urlSmall": aws_url(bucket, theirs[0]),
            "urlMedium": aws_url(bucket, theirs[1]), "urlLarge": aws_url(bucket, theirs[2])}
    _id = legacy_asset(db, u, mine["url"], "image/jpeg", urls)

    res = call(db, "CosyncRefreshAsset", [str(_id)], u)
    assert res["status"] == "done", res
    for field, key in mine.items():  # naming rules, never the other user's keys
        assert key_of(res["result"][field], bucket) == key, field
        status, body = get(res["result"][field])
        assert status == 200 and body == bodies[key]

    db.CosyncAsset.update_one({"_id": _id}, {"$set": {"status": "deleted"}})
    wait_for(lambda: db.CosyncAsset.find_one({"_id": _id}) is None, 10, "the asset to go")
    assert not any(s3_exists(s3, bucket, k) for k in mine.values())
    assert all(s3_exists(s3, bucket, k) for k in theirs[:2])


def test_legacy_cut_without_url_falls_back_to_naming(db, broker, s3, bucket):
    u = "u" + uuid.uuid4().hex[:12]
    keys = {"url": f"{u}/v/clip-{TS}.mp4", "urlVideoPreview": f"{u}/v/clip-videopreview-{TS}-.png",
            "urlSmall": f"{u}/v/clip-small-{TS}.png"}  # the naming rule's key
    put_objects(s3, bucket, keys.values())
    urls = {"url": aws_url(bucket, keys["url"]),
            "urlVideoPreview": aws_url(bucket, keys["urlVideoPreview"]), "urlSmall": "",
            "urlMedium": "", "urlLarge": ""}
    _id = legacy_asset(db, u, keys["url"], "video/mp4", urls)
    res = call(db, "CosyncRefreshAsset", [str(_id)], u)
    assert res["status"] == "done", res
    assert key_of(res["result"]["urlVideoPreview"], bucket) == keys["urlVideoPreview"]
    assert not res["result"]["urlSmall"]  # never uploaded: stays without a URL
    res = call(db, "CosyncRemoveAsset", [str(_id)], u)
    assert res["status"] == "done", res
    wait_for(lambda: db.CosyncAsset.find_one({"_id": _id}) is None, 10, "the asset to go")
    assert not any(s3_exists(s3, bucket, k) for k in keys.values())


def long_key(u, total):
    """A key of exactly `total` bytes under u/, in components the S3 server's
    filesystem accepts (< 256 bytes each), ending in .jpg."""
    head = f"{u}/"
    rest = total - len(head) - len("-1623456789000.jpg")
    parts = []
    while rest > 0:
        n = min(200, rest) if rest - min(200, rest) != 1 else 199
        parts.append("d" * (n - 1) + "/" if rest - n > 0 else "d" * n)
        rest -= n
    k = head + "".join(parts) + "-1623456789000.jpg"
    assert len(k.encode()) == total, len(k)
    return k


def test_paths_at_and_over_the_key_limit(db, broker, s3, bucket):
    """One rule for a record's `path` everywhere (S3's 1024 bytes): an asset at exactly
    the limit loses its object and record (its cuts' keys, longer than the limit, cannot
    exist and are not asked for); one over it loses only its record, with a reason."""
    u = "u" + uuid.uuid4().hex[:12]
    at = long_key(u, 1024)
    s3.put_object(Bucket=bucket, Key=at, Body=b"at the limit")
    a1 = legacy_asset(db, u, at, "image/jpeg", {})
    over = long_key(u, 1025)
    a2 = legacy_asset(db, u, over, "image/jpeg", {})
    a3 = legacy_asset(db, u, long_key(u, 4097), "image/jpeg", {})
    db.CosyncAsset.update_many({"_id": {"$in": [a1, a2, a3]}}, {"$set": {"status": "deleted"}})
    for a in (a1, a2, a3):
        wait_for(lambda a=a: db.CosyncAsset.find_one({"_id": a}) is None, 20,
                 f"asset {a} to be removed")
    assert not s3_exists(s3, bucket, at)
    log = broker.log()
    assert f"asset {a2}: path is not a usable S3 key" in log
    assert f"asset {a3}: path is not a usable S3 key" in log
    assert broker.proc.poll() is None
