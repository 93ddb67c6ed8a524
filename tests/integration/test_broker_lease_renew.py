"""A completion that outlived its lease writes nothing.

On a slow S3 a broker's HEADs can take longer than its lease (several at up to 2x20 s
against 60 s). Meanwhile another broker takes the record over and completes it, the
owner removes the file, and the janitor purges the asset and its objects. The first
broker used to upsert the asset `active` anyway when its HEADs returned: a removed file
came back with dead keys. It now renews its lease (only while the upload is still its
own and `uploaded`) right before the upsert, and writes nothing when that fails.

The slow S3 is a proxy in front of versitygw that holds every answer for a few seconds;
only the first broker goes through it. The client PUTs straight to versitygw with the
Host the URL was signed for, so the bytes do not wait."""
import time
import urllib.parse
import uuid

import requests

from cosync_client import key_of, mark_uploaded, new_upload, wait_status
from procs import wait_for
from tcp_proxy import TcpProxy

LEASE_S = 2
SLOW_S = 7


class HoldProxy(TcpProxy):
    """TcpProxy that holds every chunk the server sends for `hold` seconds (0: none)."""

    hold = 0.0

    def _relay(self, a, b, d):
        if self.hold and self.from_server(a):
            time.sleep(self.hold)
        b.sendall(d)


def put_direct(url, endpoint, data):
    u = urllib.parse.urlsplit(url)
    e = urllib.parse.urlsplit(endpoint)
    direct = urllib.parse.urlunsplit((e.scheme, e.netloc, u.path, u.query, ""))
    r = requests.put(direct, data=data, timeout=30,
                     headers={"Host": u.netloc, "Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text


def test_completion_after_lost_lease_does_not_revive_a_purged_asset(db, s3, bucket, stack,
                                                                     start_broker):
    endpoint = stack["ASSETFS_S3_ENDPOINT"]
    e = urllib.parse.urlsplit(endpoint)
    proxy = HoldProxy(e.hostname, e.port).start()
    try:
        slow = start_broker(env={"ASSETFS_S3_ENDPOINT": f"http://127.0.0.1:{proxy.port}",
                                 "ASSETFS_LEASE_SECONDS": str(LEASE_S)}, name="slow")
        uid = "u" + uuid.uuid4().hex[:12]
        _id = new_upload(db, uid, "slow/x.bin", "application/octet-stream")
        rec = wait_status(db, _id, "initialized")
        key = key_of(rec["writeUrl"], bucket)
        put_direct(rec["writeUrl"], endpoint, b"bytes the owner removes")
        proxy.hold = SLOW_S
        mark_uploaded(db, _id)
        wait_for(lambda: (db.CosyncAssetUpload.find_one({"_id": _id}) or {}).get("leaseOwner"),
                 10, "the slow broker to claim the upload")
        # A second broker, with a direct S3, takes it over once the lease has run out.
        start_broker(env={"ASSETFS_LEASE_SECONDS": str(LEASE_S)}, name="quick")
        wait_status(db, _id, "completed", timeout=20)
        assert db.CosyncAsset.find_one({"_id": _id})["status"] == "active"
        # The owner removes the file and it is purged (as the janitor does: objects,
        # asset and upload record; done here so the slow broker's janitor, which the
        # slow S3 holds up too, cannot keep it waiting).
        s3.delete_object(Bucket=bucket, Key=key)
        db.CosyncAsset.delete_one({"_id": _id})
        db.CosyncAssetUpload.delete_one({"_id": _id})
        # The slow broker's HEAD answers arrive; it must write nothing.
        wait_for(lambda: "its lease ran out" in slow.log()
                 or db.CosyncAsset.find_one({"_id": _id}), 3 * SLOW_S,
                 "the slow broker to finish its completion")
        proxy.hold = 0
        time.sleep(1.0)  # room for a late upsert to land, if one were sent
        assert db.CosyncAsset.find_one({"_id": _id}) is None, "a purged asset came back"
        assert f"upload {_id} completed" not in slow.log()
        # One completion, no second claim of a record it still worked on (that made the
        # two brokers race for every expiry: a CI flake where the quick one lost them all).
        assert slow.log().count("its lease ran out") == 1, slow.log()
    finally:
        proxy.close()
