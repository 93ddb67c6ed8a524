"""Signed requests as a client of a broker with auth=required makes them, written from
docs/internals/auth.md in Python (the `cryptography` package for Ed25519), independently
of the C code: a canonical form that differed from the broker's would fail these tests.
"""
import base64
import calendar
import datetime
import os
import subprocess

import bson
from cryptography.hazmat.primitives import serialization

from broker_fixtures import broker_exe

UPLOAD = ("assetfs-upload-v1", "assetfsSig",
          ["_id", "uid", "_partition", "assetPartition", "filePath", "sessionId",
           "expirationHours", "contentType", "createdAt"])
UPLOADED = ("assetfs-uploaded-v1", "assetfsUploadedSig",
            ["_id", "uid", "status", "size", "etag", "xRes", "yRes", "color", "duration",
             "caption", "mtime", "assetfsParts"])
ABANDON = ("assetfs-abandon-v1", "assetfsAbandonSig", ["_id", "uid", "abandoned"])
CALL = ("assetfs-call-v1", "assetfsSig",
        ["_id", "uid", "name", "args", "sessionId", "createdAt"])


def _num(v):
    v = float(v)
    if v == 0:
        v = 0.0
    for prec in range(1, 18):
        s = "%.*g" % (prec, v)
        if float(s) == v:
            return s
    return s


def _item(name, tag, value):
    return name.encode() + b"\0" + tag.encode() + str(len(value)).encode() + b":" + value


def _value(name, v, depth=0):
    if v is None:
        return _item(name, "n", b"")
    if isinstance(v, bool):
        return _item(name, "b", b"1" if v else b"0")
    if isinstance(v, str):
        return _item(name, "s", v.encode())
    if isinstance(v, (int, float)):
        return _item(name, "d", _num(v).encode())
    if isinstance(v, datetime.datetime):
        ms = calendar.timegm(v.utctimetuple()) * 1000 + v.microsecond // 1000
        return _item(name, "t", str(ms).encode())
    if isinstance(v, bson.ObjectId):
        return _item(name, "o", str(v).encode())
    if isinstance(v, list):
        out = _item(name, "a", str(len(v)).encode())
        for i, e in enumerate(v):
            out += _value(str(i), e, depth + 1)
        return out
    raise ValueError(f"cannot sign {type(v)}")


def canon(kind, doc):
    purpose, _, fields = kind
    out = purpose.encode() + b"\0"
    for f in fields:
        out += _value(f, doc.get(f))
    return out


class Client:
    """A key pair made by `assetfs-broker keygen`, and the uid it is listed for."""

    def __init__(self, build_dir, folder, uid):
        self.uid = uid
        self.key_file = os.path.join(folder, f"{uid}.key")
        subprocess.run([broker_exe(build_dir), "keygen", self.key_file], check=True,
                       capture_output=True, timeout=30)
        with open(self.key_file + ".pub") as f:
            self.pub = f.read().strip()
        with open(self.key_file, "rb") as f:
            self._key = serialization.load_pem_private_key(f.read(), password=None)

    def sign(self, kind, doc):
        sig = self._key.sign(canon(kind, doc))
        return base64.b64encode(sig).decode()


def now_ms():
    """A UTC time a BSON date holds exactly (whole milliseconds)."""
    t = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def signed_upload(db, client, file_path, content_type="text/plain", partition=None,
                  asset_partition=None, uid=None, signer=None, tamper=None, **extra):
    """Inserts a pending upload record signed by signer (default: client); tamper: fields
    changed after signing (as someone else would, before the broker reads it)."""
    uid = uid or client.uid
    doc = {"_id": bson.ObjectId(), "_partition": partition or f"user_id={uid}", "uid": uid,
           "sessionId": "device-1", "extra": "",
           "assetPartition": asset_partition if asset_partition is not None else "",
           "filePath": file_path, "contentType": content_type, "expirationHours": 24.0,
           "status": "pending", "createdAt": now_ms(), "updatedAt": now_ms()}
    doc.update(extra)
    doc["assetfsSig"] = (signer or client).sign(UPLOAD, doc)
    doc.update(tamper or {})
    db.CosyncAssetUpload.insert_one(doc)
    return doc


def signed_uploaded(db, client, doc, size, etag, signer=None):
    """Marks an upload `uploaded`, signed over its size and the original's ETag."""
    upd = {"status": "uploaded", "size": size, "etag": etag}
    sig = (signer or client).sign(UPLOADED, {"_id": doc["_id"], "uid": doc["uid"], **upd})
    upd["assetfsUploadedSig"] = sig
    db.CosyncAssetUpload.update_one({"_id": doc["_id"]}, {"$set": upd})


def signed_call(db, client, name, args, uid=None, signed=True):
    doc = {"_id": bson.ObjectId(), "name": name, "args": args, "uid": uid or client.uid,
           "sessionId": "device-1", "status": "pending", "createdAt": now_ms()}
    if signed:
        doc["assetfsSig"] = client.sign(CALL, doc)
    db.CosyncFunctionCall.insert_one(doc)
    return doc["_id"]
