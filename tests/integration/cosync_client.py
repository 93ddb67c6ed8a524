"""A Cosync-style client in plain pymongo + HTTP, as an app on the partition-sync data
model would behave (no assetfs code): create CosyncAssetUpload records, wait for the
broker, PUT the bytes to the presigned URLs, mark them uploaded, call functions through
CosyncFunctionCall."""
import datetime
import time
import urllib.parse

import bson
import requests

from procs import wait_for

PARTS = ["", "Small", "Medium", "Large", "VideoPreview"]


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def new_upload(db, uid, file_path, content_type, hours=24.0, asset_partition="",
               session="device-1", _id=None, **extra):
    doc = {
        "_id": _id if _id is not None else bson.ObjectId(),
        "_partition": f"user_id={uid}",
        "uid": uid,
        "sessionId": session,
        "extra": "",
        "assetPartition": asset_partition,
        "filePath": file_path,
        "path": "",
        "contentType": content_type,
        "color": "#000000",
        "xRes": 0,
        "yRes": 0,
        "caption": "",
        "status": "pending",
        "createdAt": utcnow(),
        "updatedAt": utcnow(),
    }
    if hours is not None:
        doc["expirationHours"] = float(hours)
    doc.update(extra)
    db.CosyncAssetUpload.insert_one(doc)
    return doc["_id"]


def wait_status(db, _id, statuses, timeout=15.0, coll="CosyncAssetUpload"):
    if isinstance(statuses, str):
        statuses = [statuses]

    def check():
        d = db[coll].find_one({"_id": _id})
        return d if d and d.get("status") in statuses else None

    try:
        return wait_for(check, timeout, f"{coll} {_id} to reach {statuses}")
    except AssertionError:
        raise AssertionError(f"{_id} stuck: {db[coll].find_one({'_id': _id})}")


def put(url, data, content_type):
    r = requests.put(url, data=data, headers={"Content-Type": content_type}, timeout=30)
    return r.status_code


def get(url):
    r = requests.get(url, timeout=30)
    return r.status_code, r.content


def mark_uploaded(db, _id, **meta):
    meta["status"] = "uploaded"
    meta["updatedAt"] = utcnow()
    db.CosyncAssetUpload.update_one({"_id": _id}, {"$set": meta})


def call(db, name, args, uid, timeout=15.0):
    _id = bson.ObjectId()
    db.CosyncFunctionCall.insert_one({"_id": _id, "name": name, "args": args, "uid": uid,
                                      "sessionId": "device-1", "status": "pending",
                                      "createdAt": utcnow()})
    return wait_status(db, _id, ["done", "error"], timeout, coll="CosyncFunctionCall")


def s3_exists(s3, bucket, key):
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except s3.exceptions.ClientError:
        return False


def key_ts(oid):
    """The first-candidate timestamp the broker embeds in the keys of an upload with
    ObjectId _id oid (afs_naming_oid_ts: its second, plus a hash of the rest mod 1000;
    the hash's offset basis is the project's own, see include/assetfs/hash.h)."""
    b = oid.binary
    h = 1469598103934665603
    for x in b[4:12]:
        h = ((h ^ x) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return int.from_bytes(b[:4], "big") * 1000 + h % 1000


def key_of(url, bucket):
    """The key a path-style URL of BUCKET names (decoded)."""
    path = urllib.parse.urlsplit(url).path
    return urllib.parse.unquote(path.split(f"/{bucket}/", 1)[1])
