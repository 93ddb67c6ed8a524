"""A broker with auth=required (issue 14, DESIGN.md §4): a signed mount works end to end,
and every unsigned, forged, replayed or out-of-partition request changes nothing, leaves a
reason, and the victim's objects stay in S3. The requests an attacker makes are one
pymongo write each, signed (or not) by auth_util, a Python implementation of the
documented canonical form."""
import os
import signal
import subprocess
import time

import bson
import pytest
import requests

from auth_util import (ABANDON, Client, signed_call, signed_upload, signed_uploaded)
from cosync_client import key_of, s3_exists, wait_status
from fs_write_util import active_asset, wait_asset
from procs import wait_for


@pytest.fixture
def auth(build_dir, tmp_path, start_broker):
    """A broker with auth=required; clients `tester` (its own partition and `team-*`),
    `mallory` (her own partition only)."""
    keys = tmp_path / "keys"
    keys.mkdir()
    tester = Client(build_dir, str(keys), "tester")
    mallory = Client(build_dir, str(keys), "mallory")
    broker_key = Client(build_dir, str(keys), "broker")
    clients = keys / "clients"
    clients.write_text(f"# uid key partitions\n"
                       f"tester {tester.pub} user_id=tester,team-*\n"
                       f"mallory {mallory.pub} user_id=mallory\n")
    os.chmod(clients, 0o644)
    env = {"ASSETFS_AUTH": "required", "ASSETFS_CLIENTS_FILE": str(clients),
           "ASSETFS_SIGNING_KEY_FILE": broker_key.key_file}
    b = start_broker(env=env)

    class Auth:
        pass
    a = Auth()
    a.tester, a.mallory, a.broker, a.clients, a.env = tester, mallory, b, clients, env
    a.broker_key = broker_key
    return a


def put_original(doc, data):
    r = requests.put(doc["url"], data=data, headers={"Content-Type": doc["contentType"]},
                     timeout=30)
    assert r.status_code == 200, r.text
    return r.headers["ETag"].strip('"')


def upload_as(db, client, path, data, **kw):
    """A complete signed upload through the Cosync protocol; the asset record."""
    doc = signed_upload(db, client, path, **kw)
    rec = wait_status(db, doc["_id"], ["initialized", "error"])
    assert rec["status"] == "initialized", rec
    etag = put_original({"url": rec["writeUrl"], "contentType": rec["contentType"]}, data)
    signed_uploaded(db, client, rec, len(data), etag)
    wait_status(db, doc["_id"], "completed")
    return db.CosyncAsset.find_one({"_id": doc["_id"]})


def error_of(db, _id, coll="CosyncAssetUpload", timeout=15):
    return wait_status(db, _id, "error", timeout, coll=coll).get("error", "")


def test_signed_mount_end_to_end(auth, db, s3, bucket, start_mount, tmp_path):
    m = start_mount(f"key_file={auth.tester.key_file}",
                    f"broker_key={auth.broker_key.key_file}.pub")
    src = tmp_path / "land.jpg"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "color=c=red:s=1200x800", "-frames:v", "1", str(src)], check=True,
                   timeout=60)
    os.mkdir(m.p("pics"))
    subprocess.run(["cp", str(src), m.p("pics", "land.jpg")], check=True, timeout=60)
    a = wait_asset(db, "pics/land.jpg")
    assert a["urlSmall"] and a["urlMedium"] and a["urlLarge"]
    up = db.CosyncAssetUpload.find_one({"_id": a["_id"]})
    assert up["assetfsSig"] and up["assetfsUploadedSig"] and up["etag"] == a["etag"]
    with open(m.p("pics", "land.jpg"), "rb") as f:
        assert f.read() == src.read_bytes()
    # rename, caption, mtime: carried out by the broker on signed calls
    os.rename(m.p("pics", "land.jpg"), m.p("pics", "red.jpg"))
    assert db.CosyncAsset.find_one({"_id": a["_id"]})["filePath"] == "pics/red.jpg"
    os.setxattr(m.p("pics", "red.jpg"), "user.assetfs.caption", "rouge".encode())
    wait_for(lambda: db.CosyncAsset.find_one({"_id": a["_id"]}).get("caption") == "rouge", 15,
             "the caption")
    os.utime(m.p("pics", "red.jpg"), (1_600_000_000, 1_600_000_000))
    wait_for(lambda: os.stat(m.p("pics", "red.jpg")).st_mtime == 1_600_000_000, 10, "mtime")
    # a rename over another file removes that file through the broker too
    for name in ("a.txt", "b.txt"):
        with open(m.p("pics", name), "w") as f:
            f.write(name)
    o, b = wait_asset(db, "pics/a.txt"), wait_asset(db, "pics/b.txt")
    os.rename(m.p("pics", "a.txt"), m.p("pics", "b.txt"))
    wait_for(lambda: db.CosyncAsset.find_one({"_id": b["_id"]}) is None, 30, "the purge")
    assert db.CosyncAsset.find_one({"_id": o["_id"]})["filePath"] == "pics/b.txt"
    with open(m.p("pics", "b.txt")) as f:
        assert f.read() == "a.txt"
    # refresh: the answer carries the URLs only
    call = wait_status(db, signed_call(db, auth.tester, "CosyncRefreshAsset", [str(o["_id"])]),
                       ["done", "error"], coll="CosyncFunctionCall")
    assert call["status"] == "done", call
    assert set(call["result"]) <= {"_id", "url", "urlSmall", "urlMedium", "urlLarge",
                                   "urlVideoPreview", "expiration"}, call["result"]
    # unlink
    os.unlink(m.p("pics", "b.txt"))
    os.unlink(m.p("pics", "red.jpg"))
    wait_for(lambda: db.CosyncAsset.find_one({"_id": o["_id"]}) is None, 30, "the purge")
    # a's purge may come a janitor pass after o's: its record goes after its objects
    wait_for(lambda: db.CosyncAsset.find_one({"_id": a["_id"]}) is None, 30, "the purge")
    assert not s3_exists(s3, bucket, key_of(a["url"], bucket))
    # nothing refused: a second removal of a file already purged answers "not found", and
    # of two moves of one file (the rename, and the poller following it) one finds it moved
    bad = [ln for ln in auth.broker.log().splitlines()
           if "error:" in ln and "not found" not in ln and "any more" not in ln
           and "already deleted" not in ln]
    assert not bad and "refused" not in m.log() and "cannot update" not in m.log(), bad


def test_signed_multipart_upload(auth, db, s3, bucket, start_mount):
    """A big file from a signing mount goes up in parts the broker signs for its uid only
    (the ETags it reports are covered by its `uploaded` signature)."""
    m = start_mount(f"key_file={auth.tester.key_file}", "multipart_threshold=8M")
    data = os.urandom(20 << 20)
    with open(m.p("big.bin"), "wb") as f:
        f.write(data)
    a = wait_asset(db, "big.bin", timeout=60)
    assert s3.head_object(Bucket=bucket, Key=key_of(a["url"], bucket))["ETag"].endswith('-3"')
    with open(m.p("big.bin"), "rb") as f:
        assert f.read() == data
    up = db.CosyncAssetUpload.find_one({"_id": a["_id"]})
    assert len(up["assetfsParts"]) == 3 and up["assetfsUploadedSig"]
    # someone else may not have parts signed for tester's upload
    fd = os.open(m.p("held.bin"), os.O_WRONLY | os.O_CREAT)
    try:
        os.write(fd, b"x" * (9 << 20))
        rec = wait_for(lambda: db.CosyncAssetUpload.find_one(
            {"filePath": "held.bin", "assetfsUploadId": {"$exists": True}}), 30, "its parts")
        call = wait_status(db, signed_call(db, auth.mallory, "AssetfsSignParts",
                                           [str(rec["_id"]), 1, 1]),
                           ["done", "error"], coll="CosyncFunctionCall")
        assert call["status"] == "error" and call["errorCode"] == "EPERM", call
    finally:
        os.close(fd)
    assert wait_asset(db, "held.bin", timeout=60)["size"] == 9 << 20


def test_refused_requests_change_nothing(auth, db, s3, bucket):
    victim = upload_as(db, auth.tester, "photo.txt", b"tester's bytes", content_type="text/plain")
    key = victim["path"]
    vid = victim["_id"]

    # an unsigned upload record
    from cosync_client import new_upload
    uid = new_upload(db, "tester", "x.txt", "text/plain")
    assert "not signed" in error_of(db, uid)
    # a forged uid: mallory signs a record that says tester
    d = signed_upload(db, auth.tester, "y.txt", signer=auth.mallory)
    assert "not a valid signature" in error_of(db, d["_id"])
    # mallory into tester's partition: supersede would replace tester's photo
    d = signed_upload(db, auth.mallory, "photo.txt", asset_partition="user_id=tester")
    assert "may not use partition 'user_id=tester'" in error_of(db, d["_id"])
    d = signed_upload(db, auth.mallory, "z.txt", partition="user_id=tester")
    assert "may not use partition" in error_of(db, d["_id"])
    # a replay of tester's own completed upload, put back as pending
    old = db.CosyncAssetUpload.find_one({"_id": vid})
    db.CosyncAssetUpload.delete_one({"_id": vid})
    for k in ("writeUrl", "path", "brokerSeal", "error", "leaseOwner", "leaseUntil",
              "initializedAt", "assetfsUploadedSig", "etag", "size"):
        old.pop(k, None)
    old["status"] = "pending"
    db.CosyncAssetUpload.insert_one(old)
    assert "exists already" in error_of(db, vid)
    # a changed field under a valid signature
    d = signed_upload(db, auth.tester, "w.txt", tamper={"filePath": "other.txt"})
    assert "not a valid signature" in error_of(db, d["_id"])

    # a raw status: deleted purges nothing; the broker restores the asset
    db.CosyncAsset.update_one({"_id": vid}, {"$set": {"status": "deleted"}})
    wait_for(lambda: db.CosyncAsset.find_one({"_id": vid})["status"] == "active", 15,
             "the asset restored")
    assert "restored" in auth.broker.log()
    # calls: unsigned, signed by someone else, by a uid not allowed on the partition
    for cid in (signed_call(db, auth.tester, "CosyncRemoveAsset", [str(vid)], signed=False),
                signed_call(db, auth.mallory, "CosyncRemoveAsset", [str(vid)], uid="tester"),
                signed_call(db, auth.mallory, "CosyncRemoveAsset", [str(vid)]),
                signed_call(db, auth.mallory, "CosyncRefreshAsset", [str(vid)]),
                signed_call(db, auth.mallory, "AssetfsRenameAsset",
                            [str(vid), "photo.txt", "gone.txt", ""]),
                signed_call(db, auth.tester, "CosyncRefreshAsset", [str(vid)], signed=False)):
        c = wait_status(db, cid, ["done", "error"], coll="CosyncFunctionCall")
        assert c["status"] == "error", c
        assert c.get("errorCode") in ("EACCES", "EPERM"), c
        assert "result" not in c
    # a replayed rename cannot remove a file that came later
    r1 = signed_call(db, auth.tester, "AssetfsRenameAsset", [str(vid), "photo.txt", "b.txt", ""])
    assert wait_status(db, r1, ["done", "error"], coll="CosyncFunctionCall")["status"] == "done"
    r2 = signed_call(db, auth.tester, "AssetfsRenameAsset", [str(vid), "b.txt", "photo.txt", ""])
    assert wait_status(db, r2, ["done", "error"], coll="CosyncFunctionCall")["status"] == "done"
    later = upload_as(db, auth.tester, "b.txt", b"a later file")
    replay = db.CosyncFunctionCall.find_one({"_id": r1})
    db.CosyncFunctionCall.delete_one({"_id": r1})
    for k in ("result", "leaseOwner", "leaseUntil", "updatedAt"):
        replay.pop(k, None)
    replay["status"] = "pending"
    db.CosyncFunctionCall.insert_one(replay)
    c = wait_status(db, r1, ["done", "error"], coll="CosyncFunctionCall")
    assert c["status"] == "error" and c["errorCode"] == "EEXIST", c
    assert active_asset(db, "b.txt")["_id"] == later["_id"]
    # a tampered path on the asset: put back as sealed before anything is signed for it
    db.CosyncAsset.update_one({"_id": vid}, {"$set": {"path": later["path"]}})
    c = wait_status(db, signed_call(db, auth.tester, "CosyncRefreshAsset", [str(vid)]),
                    ["done", "error"], coll="CosyncFunctionCall")
    assert c["status"] == "done", c
    assert key_of(c["result"]["url"], bucket) == key
    assert db.CosyncAsset.find_one({"_id": vid})["path"] == key
    # and with its sealed copy changed too, nothing is done with it at all
    db.CosyncAsset.update_one({"_id": vid}, {"$set": {"path": later["path"],
                                                      "assetfsSealed.path": later["path"]}})
    c = wait_status(db, signed_call(db, auth.tester, "CosyncRefreshAsset", [str(vid)]),
                    ["done", "error"], coll="CosyncFunctionCall")
    assert c["status"] == "error" and "seal does not verify" in c["error"], c
    db.CosyncAsset.update_one({"_id": vid}, {"$set": {"path": key, "assetfsSealed.path": key}})

    assert db.CosyncAsset.find_one({"_id": vid})["status"] == "active"
    assert s3_exists(s3, bucket, key)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"tester's bytes"


def test_uploaded_binds_the_bytes_and_abandon_needs_a_signature(auth, db, s3, bucket):
    # bytes put at the write URL by someone else than the signer: refused at completion
    d = signed_upload(db, auth.tester, "swap.txt")
    rec = wait_status(db, d["_id"], ["initialized", "error"])
    etag = put_original({"url": rec["writeUrl"], "contentType": "text/plain"}, b"mine")
    put_original({"url": rec["writeUrl"], "contentType": "text/plain"}, b"someone else's")
    signed_uploaded(db, auth.tester, rec, 4, etag)
    assert "is not the one uid 'tester' signed for" in error_of(db, d["_id"])
    assert db.CosyncAsset.find_one({"_id": d["_id"]}) is None
    # an unsigned `uploaded`
    d = signed_upload(db, auth.tester, "u.txt")
    rec = wait_status(db, d["_id"], ["initialized", "error"])
    put_original({"url": rec["writeUrl"], "contentType": "text/plain"}, b"data")
    db.CosyncAssetUpload.update_one({"_id": d["_id"]}, {"$set": {"status": "uploaded"}})
    assert "not signed (no assetfsUploadedSig)" in error_of(db, d["_id"])
    # an unsigned abandonment is ignored: the upload completes as its client asked
    d = signed_upload(db, auth.tester, "keep.txt")
    rec = wait_status(db, d["_id"], ["initialized", "error"])
    etag = put_original({"url": rec["writeUrl"], "contentType": "text/plain"}, b"keep")
    db.CosyncAssetUpload.update_one({"_id": d["_id"]}, {"$set": {"abandoned": True}})
    signed_uploaded(db, auth.tester, rec, 4, etag)
    wait_status(db, d["_id"], "completed")
    assert db.CosyncAsset.find_one({"_id": d["_id"]})["status"] == "active"
    # ...and a signed one is honoured
    d = signed_upload(db, auth.tester, "drop.txt")
    rec = wait_status(db, d["_id"], ["initialized", "error"])
    etag = put_original({"url": rec["writeUrl"], "contentType": "text/plain"}, b"drop")
    sig = auth.tester.sign(ABANDON, {"_id": d["_id"], "uid": "tester", "abandoned": True})
    db.CosyncAssetUpload.update_one({"_id": d["_id"]},
                                    {"$set": {"abandoned": True, "assetfsAbandonSig": sig}})
    signed_uploaded(db, auth.tester, rec, 4, etag)
    wait_status(db, d["_id"], "completed")
    wait_for(lambda: db.CosyncAsset.find_one({"_id": d["_id"]}) is None, 15, "the purge")


def test_clients_file_is_read_again_and_guarded(auth, build_dir, db, start_broker, tmp_path):
    carol = Client(build_dir, str(tmp_path), "carol")
    d = signed_upload(db, carol, "c.txt")
    assert "not a valid signature" in error_of(db, d["_id"])
    with open(auth.clients, "a") as f:
        f.write(f"carol {carol.pub} user_id=carol\n")
    auth.broker.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "read again" in auth.broker.log(), 10, "the clients file read again")
    d = signed_upload(db, carol, "c2.txt")
    assert wait_status(db, d["_id"], ["initialized", "error"])["status"] == "initialized"
    # a line that does not parse is not applied: carol keeps working
    with open(auth.clients, "a") as f:
        f.write("broken line\n")
    auth.broker.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "keeping the client keys read before" in auth.broker.log(), 10, "refusal")
    d = signed_upload(db, carol, "c3.txt")
    assert wait_status(db, d["_id"], ["initialized", "error"])["status"] == "initialized"
    # a clients file others can write stops a broker at start
    os.chmod(auth.clients, 0o666)
    b = start_broker(env=auth.env, wait=False)
    assert b.proc.wait(timeout=20) == 1
    assert "writable" in b.log(), b.log()
    # and auth=required without the files is refused
    b = start_broker(env={"ASSETFS_AUTH": "required"}, wait=False)
    assert b.proc.wait(timeout=20) == 1
    assert "clients_file" in b.log(), b.log()


def test_mounts_show_only_sealed_assets_and_the_broker_restores(auth, db, s3, bucket,
                                                                 start_mount):
    m = start_mount(f"key_file={auth.tester.key_file}",
                    f"broker_key={auth.broker_key.key_file}.pub")
    with open(m.p("mine.txt"), "wb") as f:
        f.write(b"tester's own bytes")
    mine = wait_asset(db, "mine.txt")
    assert mine["assetfsSeal"] and mine["assetfsSealed"]["url"] == mine["url"]
    theirs = upload_as(db, auth.mallory, "theirs.txt", b"mallory's bytes")
    # someone points tester's asset at mallory's object, copy and all: never fetched
    db.CosyncAsset.update_one({"_id": mine["_id"]},
                              {"$set": {"url": theirs["url"], "assetfsSealed.url": theirs["url"]}})
    m.unmount()
    v = start_mount(f"broker_key={auth.broker_key.key_file}.pub", name="reader")
    assert "mine.txt" not in os.listdir(v.p())
    with pytest.raises(FileNotFoundError):
        open(v.p("mine.txt"), "rb").read()
    wait_for(lambda: "hidden: its seal does not verify" in v.log(), 10, "the mount's warning")
    wait_for(lambda: "cannot be" in auth.broker.log() or "no sealed copy" in auth.broker.log(),
             15, "the broker's scrub to notice")
    # only the URL changed: the broker's scrub puts it back, and the mount shows it again
    db.CosyncAsset.update_one({"_id": mine["_id"]},
                              {"$set": {"assetfsSealed.url": mine["url"]}})
    wait_for(lambda: db.CosyncAsset.find_one({"_id": mine["_id"]})["url"] == mine["url"], 20,
             "the scrub to restore the asset")
    wait_for(lambda: "mine.txt" in os.listdir(v.p()), 10, "the asset shown again")
    with open(v.p("mine.txt"), "rb") as f:
        assert f.read() == b"tester's own bytes"
    # a mount without broker_key (auth=off style) would have shown the tampered one: the
    # seal is what a mount checks, not where the record came from
    assert s3_exists(s3, bucket, key_of(theirs["url"], bucket))


def test_a_mount_never_signs_what_someone_else_wrote(build_dir, tmp_path, db, start_broker,
                                                     start_mount):
    """A rename while the broker completes signs the upload record again; if someone
    changed the record meanwhile, the mount refuses to sign it (the rename fails with
    EACCES and says why), and the broker completes the upload as its client signed it:
    nothing is made of the changed fields."""
    keys = tmp_path / "keys"
    keys.mkdir()
    tester = Client(build_dir, str(keys), "tester")
    broker_key = Client(build_dir, str(keys), "broker")
    clients = keys / "clients"
    clients.write_text(f"tester {tester.pub} user_id=tester,team-*\n")
    b = start_broker(env={"ASSETFS_AUTH": "required", "ASSETFS_CLIENTS_FILE": str(clients),
                          "ASSETFS_SIGNING_KEY_FILE": broker_key.key_file,
                          "ASSETFS_BROKER_TEST_PAUSE": "complete_claimed=8000"})
    m = start_mount(f"key_file={tester.key_file}")
    with open(m.p("a.txt"), "w") as f:
        f.write("data")  # close returns once the record is `uploaded`
    rec = db.CosyncAssetUpload.find_one({"filePath": "a.txt"})
    wait_for(lambda: f"test pause: complete_claimed {rec['_id']}" in b.log(), 20,
             "the broker to hold the completion")
    db.CosyncAssetUpload.update_one({"_id": rec["_id"]}, {"$set": {"assetPartition": "team-x"}})
    with pytest.raises(PermissionError):
        os.rename(m.p("a.txt"), m.p("b.txt"))
    assert "not as this mount signed it" in m.log()
    now = db.CosyncAssetUpload.find_one({"_id": rec["_id"]})
    assert now["assetfsSig"] == rec["assetfsSig"] and now["filePath"] == "a.txt"
    wait_status(db, rec["_id"], "completed", timeout=30)
    a = db.CosyncAsset.find_one({"_id": rec["_id"]})
    assert (a["_partition"], a["filePath"], a["status"]) == ("user_id=tester", "a.txt", "active")
    assert db.CosyncAsset.count_documents({"_partition": "team-x"}) == 0
    with open(m.p("a.txt")) as f:
        assert f.read() == "data"
