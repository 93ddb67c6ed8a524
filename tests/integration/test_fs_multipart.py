"""Large files: multipart uploads through part URLs the broker signs (AssetfsSignParts),
streamed while the file is written, assembled by the broker from the ETags the mount
reports, and orphaned multipart uploads aborted by the janitor (issue 15).

The 6 GiB case is the issue's: `cp` of a file over S3's single-PUT limit, read back by
sha256 through the mount and through its URL."""
import hashlib
import os
import shutil
import subprocess
import time

import pytest
import requests

from fs_write_util import active_asset, key_of, sha256_file, wait_asset, write_random
from procs import wait_for

MiB = 1 << 20
PART = 8 * MiB


def sha256_url(url):
    h = hashlib.sha256()
    with requests.get(url, stream=True, timeout=600) as r:
        r.raise_for_status()
        for chunk in r.iter_content(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def head_etag(s3, bucket, url):
    return s3.head_object(Bucket=bucket, Key=key_of(url, bucket))["ETag"].strip('"')


def uploads_listed(s3, bucket):
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def cp_whole(m, db, tmp_path, name, size, seed):
    """cp of size random bytes into the mount; the asset's object has them all."""
    src = tmp_path / name
    write_random(src, size, seed=seed)
    subprocess.run(["cp", str(src), m.p(name)], check=True, timeout=300)
    a = wait_asset(db, name, timeout=120)
    assert sha256_url(a["url"]) == sha256_file(src)
    return a


def upload_record(db, file_path):
    return db.CosyncAssetUpload.find_one({"filePath": file_path}, sort=[("_id", -1)])


def test_big_file_streams_in_parts_while_written(broker, start_mount, db, s3, bucket, tmp_path):
    """cp of a 100 MiB file: parts go up while it is written (most before close), the
    object is their assembly (ETag "-13"), and the bytes come back whole."""
    m = start_mount("log_level=debug")
    src = tmp_path / "src.bin"
    write_random(src, 100 * MiB, seed=1)
    subprocess.run(["cp", str(src), m.p("big.bin")], check=True, timeout=300)
    a = wait_asset(db, "big.bin", timeout=120)
    assert a["size"] == 100 * MiB
    assert head_etag(s3, bucket, a["url"]).endswith("-13")
    assert sha256_url(a["url"]) == sha256_file(src)
    assert sha256_file(m.p("big.bin")) == sha256_file(src)
    rec = upload_record(db, "big.bin")
    assert rec["assetfsUploadId"] and len(rec["assetfsParts"]) == 13
    line = [ln for ln in m.log().splitlines() if "streamed before" in ln][-1]
    streamed = int(line.split(",")[-1].split()[0])
    assert streamed >= 8, line  # most parts were in the bucket before close()
    assert uploads_listed(s3, bucket) == []


def test_rewrites_and_truncates_send_the_parts_again(broker, start_mount, db, s3, bucket,
                                                      tmp_path):
    """A part changed after it was streamed is sent again; a file truncated under the
    threshold after parts went up is sent in one PUT and its multipart upload aborted."""
    m = start_mount()
    data = bytearray(os.urandom(80 * MiB))
    with open(m.p("edit.bin"), "wb") as f:
        f.write(data)
        f.flush()
        time.sleep(1)  # parts in flight or sent
        f.seek(3 * MiB)
        f.write(b"X" * 100)
        f.seek(70 * MiB)
        f.write(b"Y" * (2 * PART))  # across two parts
    data[3 * MiB:3 * MiB + 100] = b"X" * 100
    data[70 * MiB:70 * MiB + 2 * PART] = b"Y" * (2 * PART)
    want = hashlib.sha256(data).hexdigest()
    a = wait_asset(db, "edit.bin", timeout=120)
    assert a["size"] == len(data)
    assert sha256_url(a["url"]) == want

    with open(m.p("shrink.bin"), "wb") as f:
        f.write(os.urandom(40 * MiB))
        f.flush()
        time.sleep(1)
        f.truncate(5 * MiB)
        f.seek(0)
        f.write(b"head")
    a = wait_asset(db, "shrink.bin", timeout=120)
    assert a["size"] == 5 * MiB
    assert not head_etag(s3, bucket, a["url"]).count("-")  # one PUT
    with open(m.p("shrink.bin"), "rb") as f:
        assert f.read(4) == b"head"
    wait_for(lambda: uploads_listed(s3, bucket) == [], 30, "the unused multipart upload aborted")


def test_writeback_sends_big_files_in_parts(broker, start_mount, db, s3, bucket, tmp_path):
    m = start_mount("writeback")
    src = tmp_path / "wb.bin"
    write_random(src, 70 * MiB, seed=3)
    shutil.copyfile(src, m.p("wb.bin"))
    a = wait_asset(db, "wb.bin", timeout=120)
    assert head_etag(s3, bucket, a["url"]).endswith("-9")
    assert sha256_url(a["url"]) == sha256_file(src)


def test_part_urls_that_expire_are_signed_again(start_broker, start_mount, db, s3, bucket,
                                                tmp_path):
    """Part URLs valid for 2 s: most of a 60 MiB file's parts need a new batch, and a
    part whose URL expired on the way is sent again with a new one."""
    start_broker(env={"ASSETFS_WRITE_URL_SECONDS": "2"})
    m = start_mount("multipart_parallel=2")
    cp_whole(m, db, tmp_path, "exp.bin", 60 * MiB, seed=4)


def test_orphaned_multipart_uploads_are_aborted(start_broker, start_mount, db, s3, bucket):
    """A multipart upload no record wants is aborted by the janitor's sweep; one whose
    file is still being written is kept."""
    orphan = s3.create_multipart_upload(Bucket=bucket, Key="tester/orphan-1.bin")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="tester/orphan-1.bin", UploadId=orphan, PartNumber=1,
                   Body=b"o" * MiB)
    time.sleep(1.5)
    b = start_broker(env={"ASSETFS_MULTIPART_SWEEP_SECONDS": "1",
                          "ASSETFS_MULTIPART_GRACE_SECONDS": "1"})
    m = start_mount("multipart_threshold=8M")
    f = open(m.p("open.bin"), "wb")
    try:
        f.write(os.urandom(3 * PART + 1))
        f.flush()
        wait_for(lambda: (r := upload_record(db, "open.bin")) and r.get("assetfsUploadId"), 30,
                 "the file's multipart upload")
        wait_for(lambda: [u["UploadId"] for u in uploads_listed(s3, bucket)] ==
                 [upload_record(db, "open.bin")["assetfsUploadId"]], 30,
                 "the orphan aborted, the live upload kept")
        time.sleep(2.5)  # two more sweeps: still kept
        assert len(uploads_listed(s3, bucket)) == 1
    finally:
        f.close()
    a = wait_asset(db, "open.bin", timeout=60)
    assert a["size"] == 3 * PART + 1
    assert "aborted orphaned multipart upload of tester/orphan-1.bin" in b.log()
    assert uploads_listed(s3, bucket) == []


def test_limits_are_efbig(broker, start_mount, db):
    """Past 5 TiB (S3's object limit) writes are EFBIG; with multipart_threshold=0 the
    single-PUT limit of 5 GiB applies as before."""
    import errno
    m = start_mount()
    fd = os.open(m.p("huge.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with pytest.raises(OSError) as e:
            os.pwrite(fd, b"x", 5 << 40)
        assert e.value.errno == errno.EFBIG
        with pytest.raises(OSError) as e:
            os.ftruncate(fd, 6 << 40)
        assert e.value.errno == errno.EFBIG
        os.pwrite(fd, b"small", 0)
    finally:
        os.close(fd)
    assert "5 TiB" in m.log()
    wait_asset(db, "huge.bin")


@pytest.mark.skipif(shutil.disk_usage("/tmp").free < 40 << 30, reason="needs 40 GiB free")
def test_six_gib_file_with_cp(broker, start_mount, db, s3, bucket, tmp_path):
    """The issue's case: a 6 GiB file (over the 5 GiB single-PUT limit) copied with cp,
    read back by sha256 through the mount and through its URL."""
    m = start_mount("cache_max=8G")
    src = tmp_path / "six.bin"
    size = 6 << 30
    with open(src, "wb") as f:  # 6 GiB of a repeating 64 MiB random block: quick to make
        block = os.urandom(64 * MiB)
        for _ in range(size // len(block)):
            f.write(block)
    want = sha256_file(src)
    t0 = time.monotonic()
    subprocess.run(["cp", str(src), m.p("six.bin")], check=True, timeout=900)
    a = wait_asset(db, "six.bin", timeout=300)
    print(f"6 GiB durable in {time.monotonic() - t0:.1f} s")
    os.unlink(src)
    # Memory: nothing of the file is held in memory on its way (parts go from the staged
    # file), so the peak stays far inside the default cache_mb of 256 MiB.
    with open(f"/proc/{m.proc.pid}/status") as f:
        hwm = [int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")][0] >> 10
    print(f"mount peak RSS while writing: {hwm} MiB")
    assert hwm < 256
    assert a["size"] == size
    assert head_etag(s3, bucket, a["url"]).endswith("-768")
    assert sha256_url(a["url"]) == want
    assert sha256_file(m.p("six.bin")) == want


def test_writeback_mount_killed_mid_upload_resumes_from_the_missing_parts(
        start_broker, start_mount, db, s3, bucket, stack, tmp_path):
    """The issue's crash case: a 1 GiB file accepted by a write-back mount that is
    SIGKILLed while its parts go up. The file is written back half first, so only the
    front half streams while it is written and the rest goes after close, through an S3
    that takes a while per part. The next mount of the session sends only the parts its
    log does not show in the bucket (checked against the staged bytes), on the same
    record and multipart upload, and the object is whole."""
    import signal
    from fs_fixtures import is_mounted
    from tcp_proxy import FaultyHttpProxy
    proxy = FaultyHttpProxy(stack["ASSETFS_S3_ENDPOINT"], fail_every=0, match="partNumber=",
                            delay_s=0.15)
    try:
        start_broker(env={"ASSETFS_S3_ENDPOINT": proxy.url})
        size, half = 1 << 30, 1 << 29
        data = bytearray(os.urandom(16 * MiB)) * 64
        for i in range(0, size, PART):
            data[i] = i // PART % 256  # every part differs from the next
        want = hashlib.sha256(data).hexdigest()
        session = f"mp-resume-{os.getpid()}-{time.monotonic_ns()}"
        m = start_mount("writeback", f"session_id={session}", "multipart_parallel=2")
        with open(m.p("gig.bin"), "wb") as f:
            f.seek(half)
            f.write(data[half:])
            f.seek(0)
            f.write(data[:half])
        time.sleep(2)
        os.kill(m.proc.pid, signal.SIGKILL)
        m.proc.wait(timeout=30)
        subprocess.run(["fusermount3", "-uz", m.path], check=False, timeout=30)
        assert not is_mounted(m.path)
        rec = upload_record(db, "gig.bin")
        assert rec["status"] == "initialized" and rec["assetfsUploadId"]

        m2 = start_mount("writeback", f"session_id={session}", f"cache_dir={m.cache_dir}")
        a = wait_asset(db, "gig.bin", timeout=300)
        assert a["_id"] == rec["_id"]  # the same record, no second asset
        line = [ln for ln in m2.log().splitlines() if "already in the bucket" in ln][-1]
        kept = int(line.split(": ")[-1].split()[0])
        assert 64 <= kept < 128, line  # the streamed half at least, not all of it
        assert head_etag(s3, bucket, a["url"]).endswith("-128")
        assert sha256_url(a["url"]) == want
        assert db.CosyncAsset.count_documents({"filePath": "gig.bin"}) == 1
    finally:
        proxy.close()


def test_s3_failing_some_parts_is_retried(start_broker, start_mount, db, s3, bucket, stack,
                                          tmp_path):
    """S3 answers 503 to every third part PUT for a while: the parts are sent again and
    the object is whole."""
    from tcp_proxy import FaultyHttpProxy
    up = stack["ASSETFS_S3_ENDPOINT"]
    proxy = FaultyHttpProxy(up, fail_every=3, fail_status=503, match="partNumber=")
    try:
        start_broker(env={"ASSETFS_S3_ENDPOINT": proxy.url})
        m = start_mount("multipart_threshold=8M")
        cp_whole(m, db, tmp_path, "flaky.bin", 80 * MiB, seed=9)
        assert proxy.failed >= 2
    finally:
        proxy.close()


def new_version(db, file_path, old_id, timeout=300):
    """The active asset at file_path once it is no longer old_id."""
    def done():
        a = active_asset(db, file_path)
        return a if a and a["_id"] != old_id else None
    return wait_for(done, timeout, f"a new version of {file_path}")


def append_both(path, src, tail):
    """Appends tail to the file in the mount and to its local copy; returns how long the
    mount took to open it."""
    t0 = time.monotonic()
    with open(path, "ab") as f:
        opened_s = time.monotonic() - t0
        f.write(tail)
    with open(src, "ab") as f:
        f.write(tail)
    return opened_s


def random_file(path, size, seed):
    """size bytes, every MiB different, without holding them in memory."""
    rng = hashlib.sha256(str(seed).encode()).digest()
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for i in range(0, size, MiB):
            f.write((rng + i.to_bytes(8, "little") + block[40:])[:min(MiB, size - i)])


def test_append_and_edit_big_asset_without_downloading_it(start_broker, start_mount, db, s3,
                                                          bucket, stack, tmp_path):
    """The issue's append case. A 2 GiB file (3 MiB past a part boundary) copied in and
    appended to at once: its whole parts are not sent again but copied by S3 into the
    new version (AssetfsCopyParts, UploadPartCopy). Then, on another mount that has no
    copy of it, a 10-byte edit in the middle of that version fetches only the part it
    touches, a read of an untouched part through the open file comes from the asset, and
    an append there fetches only the last, partial part. Every version is whole (sha256
    through its URL), and what S3 sent back while they were made stays under two parts'
    worth each."""
    from tcp_proxy import FaultyHttpProxy
    proxy = FaultyHttpProxy(stack["ASSETFS_S3_ENDPOINT"], fail_every=0)
    try:
        start_broker(env={"ASSETFS_S3_ENDPOINT": proxy.url})
        m = start_mount("log_level=debug")
        size = 2 * 1024 * MiB + 3 * MiB
        src = tmp_path / "disk.img"
        random_file(src, size, seed=31)
        subprocess.run(["cp", str(src), m.p("disk.img")], check=True, timeout=600)
        old = wait_asset(db, "disk.img", timeout=300)

        tail = os.urandom(5 * MiB + 17)
        before = proxy.bytes_down
        opened_s = append_both(m.p("disk.img"), src, tail)
        a = new_version(db, "disk.img", old["_id"])
        fetched = proxy.bytes_down - before
        assert fetched < 2 * PART, f"{fetched} bytes came back from S3 for an append"
        line = [ln for ln in m.log().splitlines() if "copied by S3" in ln][-1]
        assert " 256 copied by S3" in line, line
        assert a["size"] == size + len(tail)
        assert sha256_url(a["url"]) == sha256_file(src)
        assert db.CosyncAsset.count_documents({"filePath": "disk.img", "status": "active"}) == 1

        m2 = start_mount("log_level=debug")
        edit_at = 1024 * MiB + 100
        before = proxy.bytes_down
        with open(m2.p("disk.img"), "r+b") as f:
            f.seek(edit_at)
            f.write(b"0123456789")
            f.seek(8 * MiB)  # a part nobody wrote: read from the asset, not staged
            far = f.read(MiB)
        with open(src, "r+b") as f:
            f.seek(edit_at)
            f.write(b"0123456789")
            f.seek(8 * MiB)
            assert far == f.read(MiB)
        b = new_version(db, "disk.img", a["_id"])
        fetched = proxy.bytes_down - before
        assert fetched < 2 * PART + 2 * MiB, f"{fetched} bytes came back for a 10-byte edit"
        line = [ln for ln in m2.log().splitlines() if "copied by S3" in ln][-1]
        assert " 257 copied by S3" in line, line  # all but the edited part
        assert sha256_url(b["url"]) == sha256_file(src)

        m3 = start_mount("log_level=debug")  # no copy of it either
        before = proxy.bytes_down
        append_both(m3.p("disk.img"), src, tail)
        c = new_version(db, "disk.img", b["_id"])
        fetched = proxy.bytes_down - before
        assert fetched < 2 * PART, f"{fetched} bytes came back from S3 for an append"
        assert sha256_url(c["url"]) == sha256_file(src)
        print(f"append: open took {opened_s:.3f} s")
    finally:
        proxy.close()


def test_writeback_append_to_big_asset_resumes_after_a_kill(start_broker, start_mount, db, s3,
                                                            bucket, tmp_path):
    """A write-back mount killed right after an append to a big asset was closed: the
    next mount of the session sends it, copying the asset's parts it never fetched (its
    .base sidecar says which bytes are the asset's), never a hole as zeros."""
    import signal
    from fs_fixtures import is_mounted
    start_broker()
    session = f"base-resume-{os.getpid()}-{time.monotonic_ns()}"
    opts = ("writeback", f"session_id={session}", "multipart_threshold=16M", "log_level=debug")
    m = start_mount(*opts)
    size = 100 * MiB + 5
    src = tmp_path / "log.bin"
    random_file(src, size, seed=32)
    subprocess.run(["cp", str(src), m.p("log.bin")], check=True, timeout=300)
    old = wait_asset(db, "log.bin", timeout=120)
    append_both(m.p("log.bin"), src, b"appended line\n" * 1000)
    os.kill(m.proc.pid, signal.SIGKILL)
    m.proc.wait(timeout=30)
    subprocess.run(["fusermount3", "-uz", m.path], check=False, timeout=30)
    assert not is_mounted(m.path)
    m2 = start_mount(*opts, f"cache_dir={m.cache_dir}")
    a = new_version(db, "log.bin", old["_id"], timeout=120)
    assert sha256_url(a["url"]) == sha256_file(src)
    if "resuming 1 file" in m2.log():  # else the killed mount had sent it already
        line = [ln for ln in m2.log().splitlines() if "copied by S3" in ln][-1]
        assert " 12 copied by S3" in line, line
