"""The mount fetches only the bucket (DESIGN.md §4, issue 12 item 5), against the real
stack: CosyncAsset records whose URL names an internal HTTP service, file://, gopher://,
another host or port, user info, a server that redirects, or a server that ignores Range
are inserted with pymongo next to a real asset; reading them through a real mount fails
(EACCES; EIO for wrong bytes), the local services get no request, and the mount log
names the record. The broker publishes its origins (AssetfsConfig "endpoints"), a mount
started before the broker picks them up, and normal reads and writes still work.

Every HTTP server here is started by the test on 127.0.0.1 (port chosen by the kernel)
and stopped by it."""
import errno
import http.server
import os
import threading
import time

import bson
import pytest

from fs_read_util import cosync_put
from fs_write_util import wait_asset
from procs import wait_for

# What a refused URL gives the reader (and close/fsync of a refused upload): EACCES,
# passed through by the mount's one errno mapping (afs_fs_errno in src/fs/fuse/ops.c). Nothing
# is fetched either, which the tests below check on the servers themselves.
REFUSED = (errno.EACCES,)


class Service:
    """A local HTTP server that records every request. mode: "meta" answers like an
    instance metadata service, "redirect" answers 302 to `location`, "norange" answers
    200 with the whole of `body` whatever the Range."""

    def __init__(self, mode="meta", body=b"", location=""):
        self.mode, self.body, self.location = mode, body, location
        self.requests = []
        svc = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                svc.requests.append((self.command, self.path, self.headers.get("Range")))
                if svc.mode == "redirect":
                    self.send_response(302)
                    self.send_header("Location", svc.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = svc.body if svc.mode == "norange" else b"ami-id\ninstance-id\nSECRET\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_PUT = do_GET

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def services():
    started = []

    def start(*a, **kw):
        s = Service(*a, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def hostile(db, template_id, file_path, url, partition="shared", size=None):
    """A copy of a real asset's record with another name and URL (and size)."""
    doc = db.CosyncAsset.find_one({"_id": template_id})
    doc["_id"] = bson.ObjectId()
    doc["filePath"] = file_path
    doc["url"] = url
    if size is not None:
        doc["size"] = size
    db.CosyncAsset.insert_one(doc)
    return doc["_id"]


def read_errno(path, off=0, n=4096):
    try:
        with open(path, "rb") as f:
            f.seek(off)
            f.read(n)
    except OSError as e:
        return e.errno
    return 0


def refusal_line(m, _id):
    lines = [line for line in m.log().splitlines() if str(_id) in line and "refused" in line]
    return lines[0] if lines else ""


def test_broker_publishes_its_origin(broker, start_broker, db, stack):
    s3 = stack["ASSETFS_S3_ENDPOINT"].rstrip("/")
    doc = db.AssetfsConfig.find_one({"_id": "endpoints"})
    assert doc, broker.log()
    assert doc["origins"] == [s3] and doc["current"] == [s3]
    assert "URL origins for mounts: " + s3 in broker.log()
    # another endpoint and a public base URL: added (URLs signed before stay readable)
    b2 = start_broker("--set", "public_base_url=https://CDN.Example.com:443/assets/",
                      env={"ASSETFS_S3_ENDPOINT": "http://127.0.0.1:1"}, name="b2")
    doc = db.AssetfsConfig.find_one({"_id": "endpoints"})
    assert doc["current"] == ["http://127.0.0.1:1", "https://cdn.example.com"], b2.log()
    assert doc["origins"] == [s3, "http://127.0.0.1:1", "https://cdn.example.com"]


def test_hostile_urls_are_refused_and_never_fetched(broker, start_mount, db, stack, services):
    good = os.urandom(100_000)
    gid = cosync_put(db, "app1", "good.bin", good, partition="shared")
    svc = services("meta")
    s3 = stack["ASSETFS_S3_ENDPOINT"].rstrip("/")
    s3port = int(s3.rsplit(":", 1)[1])
    real = db.CosyncAsset.find_one({"_id": gid})["url"]
    query = real.split("?", 1)[1]
    cases = {
        "meta.bin": f"{svc.origin}/latest/meta-data?{query}",
        "passwd.bin": "file:///etc/passwd",
        "gopher.bin": f"gopher://127.0.0.1:{svc.port}/_GET%20/latest/meta-data",
        "otherhost.bin": f"http://127.0.0.2:{s3port}/{real.split('/', 3)[3]}",
        "otherport.bin": f"http://127.0.0.1:{svc.port}/{real.split('/', 3)[3]}",
        "userinfo.bin": f"http://127.0.0.1:{s3port}@127.0.0.1:{svc.port}/x?{query}",
        "portjunk.bin": f"http://127.0.0.1:{s3port}.evil.example/x",
        "https.bin": f"https://127.0.0.1:{s3port}/{real.split('/', 3)[3]}",
    }
    ids = {name: hostile(db, gid, name, url) for name, url in cases.items()}
    m = start_mount()
    assert "URLs allowed on: " + s3 in m.log()
    with open(m.p("good.bin", partition="shared"), "rb") as f:
        assert f.read() == good
    for name, _id in ids.items():
        e = read_errno(m.p(name, partition="shared"))
        assert e in REFUSED, (name, e)
    assert svc.requests == [], svc.requests
    log = m.log()
    assert "X-Amz-Signature=" not in log and query not in log
    for name, _id in ids.items():
        if name == "https.bin":
            continue  # allowed origin is http://...: https on that port is another one
        line = refusal_line(m, _id)
        assert line and f"shared/{name}" in line, (name, log[-3000:])
    assert svc.origin in refusal_line(m, ids["meta.bin"])
    assert "file://" in refusal_line(m, ids["passwd.bin"])
    assert "gopher://" in refusal_line(m, ids["gopher.bin"])
    assert "***@" in refusal_line(m, ids["userinfo.bin"]) or \
        "user info" in refusal_line(m, ids["userinfo.bin"])
    # the refused records cost a handful of reloads of the origin list, not one per read
    assert m.proc.poll() is None


def test_redirect_from_an_allowed_origin_is_not_followed(broker, start_mount, db, services):
    good = os.urandom(10_000)
    gid = cosync_put(db, "app1", "good.bin", good, partition="shared")
    target = services("meta")
    redirector = services("redirect", location=f"{target.origin}/latest/meta-data")
    rid = hostile(db, gid, "moved.bin", f"{redirector.origin}/bucket/moved.bin?X-Amz-Signature=s")
    # two origins in one option: libfuse splits -o at commas, the mount puts them together
    m = start_mount(f"url_hosts=http://cdn.example.com,{redirector.origin}")
    assert f"url_hosts http://cdn.example.com {redirector.origin}" in m.log(), m.log()
    e = read_errno(m.p("moved.bin", partition="shared"))
    assert e in REFUSED, e
    assert len(redirector.requests) >= 1
    assert target.requests == []
    line = refusal_line(m, rid)
    assert "302" in line and "not followed" in line and "shared/moved.bin" in line, m.log()[-2000:]
    # the redirect is not taken for an expired URL either: no refresh was asked for
    assert db.CosyncFunctionCall.count_documents({}) == 0


def test_server_that_ignores_range_never_gives_wrong_bytes(broker, start_mount, db, services):
    size = 3 * 1024 * 1024 + 17
    body = bytes((i * 7 + (i >> 9)) & 0xFF for i in range(size))
    small = body[:20_000]
    gid = cosync_put(db, "app1", "good.bin", b"x" * 10, partition="shared")
    norange = services("norange", body=body)
    big = hostile(db, gid, "big.bin", f"{norange.origin}/big?X-Amz-Signature=s", size=size)
    m = start_mount(f"url_hosts={norange.origin}", "cache_mb=64")
    path = m.p("big.bin", partition="shared")
    assert os.stat(path).st_size == size
    for off in (0, 65536, 1_000_000, size - 100):
        try:
            with open(path, "rb") as f:
                f.seek(off)
                got = f.read(4096)
        except OSError as e:
            assert e.errno == errno.EIO, (off, e)
            continue
        assert got == body[off:off + 4096], off
    assert "ignored the range" in m.log()
    assert str(big) in m.log()
    assert all(r[2] for r in norange.requests)  # every GET did ask for a range
    # a small object that fits in one ranged GET is served whole, correctly, from 0 on
    norange.body = small
    db.CosyncAsset.update_one({"_id": big}, {"$set": {"filePath": "gone.bin"}})
    sid = hostile(db, gid, "small.bin", f"{norange.origin}/small?X-Amz-Signature=s",
                  size=len(small))
    spath = m.p("small.bin", partition="shared")
    wait_for(lambda: os.path.exists(spath), 10, "small.bin")
    with open(spath, "rb") as f:
        f.seek(5000)
        assert f.read(1000) == small[5000:6000]
        f.seek(0)
        assert f.read() == small
    assert sid


def test_url_hosts_only_ignores_the_published_list(broker, start_mount, db, services):
    good = os.urandom(5000)
    cosync_put(db, "app1", "good.bin", good, partition="shared")
    svc = services("meta")
    m = start_mount(f"url_hosts={svc.origin}", "url_hosts_only")
    assert "url_hosts_only" in m.log()
    assert read_errno(m.p("good.bin", partition="shared")) in REFUSED
    assert svc.requests == []


def test_bad_url_hosts_fails_the_mount(broker, build_dir, fs_env, tmp_path):
    import subprocess
    mnt = tmp_path / "bad"
    mnt.mkdir()
    r = subprocess.run([os.path.join(build_dir, "assetfs"), str(mnt), "-f", "-o",
                        "uid=tester,url_hosts=file:///etc"], env=fs_env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0
    assert "url_hosts" in r.stderr


def test_mount_before_broker_learns_its_origin_and_uploads(start_broker, start_mount, db):
    m = start_mount()
    assert "no allowed URL origins" in m.log()
    start_broker()
    data = os.urandom(200_000)
    t0 = time.monotonic()
    with open(m.p("late.bin"), "wb") as f:
        f.write(data)
    asset = wait_asset(db, "late.bin", timeout=60)
    print(f"upload through a mount started before the broker: {time.monotonic() - t0:.2f} s")
    assert asset["size"] == len(data)
    other = start_mount(name="reader")
    with open(other.p("late.bin", partition="user_id=tester"), "rb") as f:
        assert f.read() == data


def test_hostile_write_urls_are_never_used(start_mount, db, services, tmp_path):
    """No broker: the test signs in its place, with writeUrls a careless mount would use
    to write a local file or to PUT to an internal service."""
    svc = services("meta")
    db.AssetfsConfig.insert_one({"_id": "endpoints", "origins": ["http://127.0.0.1:1"]})
    m = start_mount("close_timeout=10")
    target = tmp_path / "written-by-the-mount"
    cases = {"local.bin": f"file://{target}",
             "internal.bin": f"{svc.origin}/latest/put?X-Amz-Signature=s",
             "ftp.bin": f"ftp://127.0.0.1:{svc.port}/x"}
    for name, url in cases.items():
        def fake_broker():
            wait_for(lambda: db.CosyncAssetUpload.find_one({"filePath": name}), 20,
                     "the upload record")
            db.CosyncAssetUpload.update_one({"filePath": name},
                                            {"$set": {"status": "initialized", "writeUrl": url}})
        t = threading.Thread(target=fake_broker)
        t.start()
        with pytest.raises(OSError) as e:
            with open(m.p(name), "wb") as f:
                f.write(b"x" * 1000)
        t.join()
        assert e.value.errno in REFUSED, (name, e.value)
        # permanent: no retry in the background
        status = os.getxattr(m.p(name), "user.assetfs.status").decode()
        assert status.startswith("error"), status
        rec = db.CosyncAssetUpload.find_one({"filePath": name})
        assert rec["status"] == "initialized"  # never marked uploaded
        lines = [x for x in m.log().splitlines() if f"{m.upload_partition}/{name}" in x and
                 "PUT not sent" in x]
        assert lines, m.log()[-3000:]
        assert "X-Amz-Signature=s" not in m.log()
        # the data stays in staging (an error, not a loss): it reads back
        with open(m.p(name), "rb") as f:
            assert f.read() == b"x" * 1000
    assert not target.exists()
    assert svc.requests == []
