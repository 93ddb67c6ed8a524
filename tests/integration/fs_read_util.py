"""Helpers for the read-path tests: assets made by a Cosync-style client (pymongo +
HTTP, no assetfs code) and reading files through the mount."""
import hashlib
import os
import time

import bson

from cosync_client import mark_uploaded, new_upload, put, utcnow, wait_status

PART_CT_VIDEO = "image/png"


def cosync_put(db, uid, file_path, data, content_type="application/octet-stream", hours=24.0,
               partition="", parts=None, meta=None, timeout=60):
    """Uploads data (bytes or a path) the way a Cosync app does; returns the asset id.
    parts: {"Small": bytes, ..., "VideoPreview": bytes} for cuts/preview."""
    _id = new_upload(db, uid, file_path, content_type, hours=hours, asset_partition=partition)
    up = wait_status(db, _id, ["initialized", "error"], timeout)
    assert up["status"] == "initialized", up
    if isinstance(data, (str, os.PathLike)):
        size = os.path.getsize(data)
        with open(data, "rb") as f:
            assert put(up["writeUrl"], f, content_type) == 200
    else:
        size = len(data)
        assert put(up["writeUrl"], data, content_type) == 200
    video = content_type.startswith("video/")
    for name, blob in (parts or {}).items():
        assert up.get("writeUrl" + name), f"no writeUrl{name} for {content_type}"
        assert put(up["writeUrl" + name], blob, PART_CT_VIDEO if video else content_type) == 200
    mark_uploaded(db, _id, size=size, **(meta or {}))
    done = wait_status(db, _id, ["completed", "error"], timeout)
    assert done["status"] == "completed", done
    return _id


def sha256_path(path, bs=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(bs)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def make_big_file(path, size, seed=1):
    """A file of pseudo-random bytes without holding it in memory; returns sha256."""
    import random
    rnd = random.Random(seed)
    block = bytes(rnd.getrandbits(8) for _ in range(1 << 16)) * 16  # 1 MiB pattern base
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left, i = size, 0
        while left > 0:
            chunk = (i.to_bytes(8, "little") * 8) + block[64:]
            chunk = chunk[:min(left, len(chunk))]
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
            i += 1
    return h.hexdigest()


def insert_assets(db, partition, n, prefix="f", size=1234, url="http://127.0.0.1:1/none"):
    """n CosyncAsset records (no S3 objects) for listing tests."""
    now = utcnow()
    docs = [{"_id": bson.ObjectId(), "_partition": partition, "uid": "bulk",
             "filePath": f"{prefix}{i:05d}.txt", "path": f"bulk/{prefix}{i:05d}-1.txt",
             "contentType": "text/plain", "size": size, "status": "active",
             "expirationHours": 24.0, "url": url, "createdAt": now, "updatedAt": now}
            for i in range(n)]
    for i in range(0, n, 1000):
        db.CosyncAsset.insert_many(docs[i:i + 1000])
    return docs


def peak_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def timed(fn):
    t0 = time.monotonic()
    v = fn()
    return v, time.monotonic() - t0
