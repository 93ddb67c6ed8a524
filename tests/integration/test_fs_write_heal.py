"""An upload record that falls back from `uploaded` to `initialized` after the mount
marked it (FerretDB applies updates as whole-document read-modify-write, so a racing
broker write can drop the mount's `uploaded`; seen once in 1,000 files in the benchmark)
must not leave the file waiting forever: the mount uploads it again on the same record."""
import hashlib
import os

from fs_write_util import http_get, wait_asset, wait_no_staging
from procs import wait_for

PAUSE_MS = 3000


def test_uploaded_lost_by_the_database_is_sent_again(db, start_broker, start_mount):
    b = start_broker(env={"ASSETFS_BROKER_TEST_PAUSE": f"complete_claimed={PAUSE_MS}"})
    m = start_mount()
    data = os.urandom(70000)
    with open(m.p("heal.bin"), "wb") as f:
        f.write(data)
    up = db.CosyncAssetUpload.find_one({"filePath": "heal.bin"})
    line = f"test pause: complete_claimed {up['_id']}"
    wait_for(lambda: line in b.log(), 20, "the broker to claim the uploaded record")
    # What a lost update leaves: the record as the broker's initialization wrote it,
    # without the mount's `uploaded` and without the completing broker's lease.
    db.CosyncAssetUpload.update_one({"_id": up["_id"]},
                                    {"$set": {"status": "initialized"},
                                     "$unset": {"leaseOwner": "", "leaseUntil": "",
                                                "size": ""}})
    wait_for(lambda: "went back to 'initialized'" in m.log(), 20,
             "the mount to notice the record went back")
    a = wait_asset(db, "heal.bin", timeout=30)
    assert a["_id"] == up["_id"]            # the same record, not a second upload
    assert a["size"] == len(data)
    assert hashlib.sha256(http_get(a["url"])).digest() == hashlib.sha256(data).digest()
    assert db.CosyncAsset.count_documents({"filePath": "heal.bin", "status": "active"}) == 1
    assert db.CosyncAssetUpload.count_documents({"filePath": "heal.bin"}) == 1
    assert open(m.p("heal.bin"), "rb").read() == data
    wait_for(lambda: db.CosyncAssetUpload.find_one({"_id": up["_id"]})["status"] == "completed",
             30, "the record to be completed")
    wait_no_staging(m, timeout=30)   # the mount saw it completed, nothing left waiting
