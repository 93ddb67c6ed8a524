"""Read path through the mount with the real stack and broker: assets uploaded by a
Cosync-style pymongo + HTTP client appear under the right names and read byte-identical;
other mounts' files show within the TTL; expiring URLs are refreshed; ffprobe/ffmpeg
seeking; cuts and xattrs; concurrent readers."""
import os
import subprocess
import threading
import time

import pytest

from fs_read_util import cosync_put, sha256, sha256_path
from fs_write_util import wait_asset, write_random
from procs import wait_for


def test_cosync_assets_appear_with_names_and_read_identical(broker, start_mount, db):
    a = os.urandom(300_000)
    b = os.urandom(5_000_000 + 3)
    cosync_put(db, "app1", "photos/a.bin", a, partition="shared")
    cosync_put(db, "app1", "docs/report 2024.pdf", b, "application/pdf", partition="shared")
    # Two assets of Cosync apps that set no filePath, whose names derived from the S3 key
    # clash: the older keeps the name, the newer gets a stable suffix.
    c1, c2 = os.urandom(1000), os.urandom(2000)
    id1 = cosync_put(db, "app1", "camera/img.jpg", c1, "image/jpeg", partition="shared")
    db.CosyncAsset.update_one({"_id": id1}, {"$unset": {"filePath": ""}})
    id2 = cosync_put(db, "app2", "camera/img.jpg", c2, "image/jpeg", partition="shared")
    db.CosyncAsset.update_one({"_id": id2}, {"$unset": {"filePath": ""}})
    assert db.CosyncAsset.count_documents({"status": "active"}) == 4

    m = start_mount()
    assert "shared" in os.listdir(m.path)
    assert sorted(os.listdir(m.p(partition="shared"))) == ["camera", "docs", "photos"]
    assert sorted(os.listdir(m.p("camera", partition="shared"))) == \
        sorted(["img.jpg", f"img ({str(id2)[-6:]}).jpg"])
    assert os.listdir(m.p("docs", partition="shared")) == ["report 2024.pdf"]
    st = os.stat(m.p("docs", "report 2024.pdf", partition="shared"))
    assert st.st_size == len(b)
    rec = db.CosyncAsset.find_one({"filePath": "docs/report 2024.pdf"})
    assert abs(st.st_mtime - rec["createdAt"].timestamp()) < 2 or \
        abs(st.st_mtime - rec["updatedAt"].timestamp()) < 2
    with open(m.p("photos", "a.bin", partition="shared"), "rb") as f:
        assert sha256(f.read()) == sha256(a)
    assert sha256_path(m.p("docs", "report 2024.pdf", partition="shared")) == sha256(b)
    with open(m.p("camera", "img.jpg", partition="shared"), "rb") as f:
        assert f.read() == c1
    with open(m.p("camera", f"img ({str(id2)[-6:]}).jpg", partition="shared"), "rb") as f:
        assert f.read() == c2
    # ls -l and find see the same tree
    out = subprocess.run(["find", m.p(partition="shared"), "-type", "f"], capture_output=True,
                         text=True, check=True, timeout=30).stdout.split("\n")
    assert len([x for x in out if x]) == 4
    assert not os.path.exists(m.p("nothing-here", partition="shared"))


def test_files_written_through_another_mount_appear_within_ttl(broker, start_mount, db):
    ma = start_mount(uid="alice", name="alice")
    mb = start_mount(uid="bob", name="bob")
    data = os.urandom(100_000)
    with open(ma.p("notes.bin"), "wb") as f:
        f.write(data)
    wait_asset(db, "notes.bin")
    t0 = time.monotonic()
    other = mb.p("notes.bin", partition="user_id=alice")
    wait_for(lambda: os.path.exists(other), 10, "alice's file in bob's mount")
    seen = time.monotonic() - t0
    print(f"visible in the other mount {seen:.2f} s after the asset completed")
    assert seen <= 3 + 1 + 1  # list_ttl + attr_ttl + slack
    with open(other, "rb") as f:
        assert f.read() == data
    # overwritten through alice's mount: bob sees the new content within the TTL
    data2 = os.urandom(50_000)
    with open(ma.p("notes.bin"), "wb") as f:
        f.write(data2)
    wait_for(lambda: db.CosyncAsset.find_one({"filePath": "notes.bin", "status": "active",
                                              "size": len(data2)}), 30, "the new version")
    wait_for(lambda: os.stat(other).st_size == len(data2), 6, "the new size in bob's mount")
    with open(other, "rb") as f:
        assert f.read() == data2
    # deleted through alice's mount: gone from bob's within the TTL
    os.unlink(ma.p("notes.bin"))
    wait_for(lambda: not os.path.exists(other), 6, "the deletion in bob's mount")


def test_expiring_url_is_refreshed_before_and_after_expiry(broker, start_mount, db):
    hours = 0.002  # 7.2 s
    data = os.urandom(4 * 1024 * 1024)
    _id = cosync_put(db, "app1", "short.bin", data, hours=hours, partition="shared")
    exp0 = db.CosyncAsset.find_one({"_id": _id})["expiration"]
    m = start_mount()
    path = m.p("short.bin", partition="shared")
    with open(path, "rb") as f:
        first = f.read(1024 * 1024)  # before expiry
        assert first == data[:1024 * 1024]
        rec = db.CosyncAsset.find_one({"_id": _id})
        wait = (rec["expiration"].timestamp() - time.time()) + 1.0
        if wait > 0:
            time.sleep(wait)
        f.seek(3 * 1024 * 1024)  # not cached yet: needs a fresh URL
        assert f.read() == data[3 * 1024 * 1024:]
    calls = list(db.CosyncFunctionCall.find({"name": "CosyncRefreshAsset"}))
    assert calls and all(c["status"] == "done" for c in calls), calls
    assert all(c["args"] == [str(_id)] for c in calls)
    assert db.CosyncAsset.find_one({"_id": _id})["expiration"] > exp0
    # reopened later: still readable, whole file identical
    assert sha256_path(path) == sha256(data)


def test_public_asset_needs_no_refresh(broker, start_mount, db):
    data = os.urandom(200_000)
    cosync_put(db, "app1", "pub.bin", data, hours=0, partition="shared")
    m = start_mount()
    assert db.CosyncAsset.find_one({"filePath": "pub.bin"})["expirationHours"] == 0
    # A public URL may be unreadable without a bucket policy; what matters is that the
    # mount never asks the broker to refresh it.
    try:
        with open(m.p("pub.bin", partition="shared"), "rb") as f:
            f.read()
    except OSError:
        pass
    assert db.CosyncFunctionCall.count_documents({}) == 0


def _make_video(path, seconds=10):
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc=duration={seconds}:size=320x240:rate=25", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-g", "25", str(path)], check=True, timeout=120)


def test_ffprobe_and_ffmpeg_seek_from_the_mount(broker, start_mount, db, tmp_path):
    src = tmp_path / "clip.mp4"
    _make_video(src)  # moov atom at the end: players seek to the end and back
    png = tmp_path / "p.png"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(src), "-frames:v", "1",
                    str(png)], check=True, timeout=60)
    cosync_put(db, "app1", "video/clip.mp4", str(src), "video/mp4", partition="shared",
               parts={"VideoPreview": png.read_bytes()}, meta={"duration": 10.0})
    m = start_mount()
    path = m.p("video", "clip.mp4", partition="shared")
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                          "-of", "csv=p=0", path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert abs(float(out.stdout.strip()) - 10.0) < 0.2
    frame = tmp_path / "frame.png"
    t0 = time.monotonic()
    r = subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-ss", "7", "-i", path,
                        "-frames:v", "1", str(frame)], capture_output=True, text=True,
                       timeout=60)
    print(f"ffmpeg -ss 7: {time.monotonic() - t0:.2f} s")
    assert r.returncode == 0, r.stderr
    assert frame.stat().st_size > 0
    assert sha256_path(path) == sha256_path(src)
    # the preview under .cuts
    prev = m.p(".cuts", "preview", "video", "clip.mp4.png", partition="shared")
    with open(prev, "rb") as f:
        assert f.read() == png.read_bytes()


def test_cuts_and_xattrs(broker, start_mount, db, tmp_path):
    img = tmp_path / "big.png"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=1200x800", "-frames:v", "1", str(img)], check=True, timeout=60)
    cuts = {}
    for name, px in (("Small", 300), ("Medium", 600), ("Large", 900)):
        out = tmp_path / f"{name}.png"
        subprocess.run(["vipsthumbnail", str(img), "-s", str(px), "-o", str(out)], check=True,
                       timeout=60)
        cuts[name] = out.read_bytes()
    _id = cosync_put(db, "app1", "pics/big.png", img.read_bytes(), "image/png",
                     partition="shared", parts=cuts, meta={"xRes": 1200, "yRes": 800})
    m = start_mount()
    base = m.p(partition="shared")
    assert sorted(os.listdir(os.path.join(base, ".cuts"))) == ["large", "medium", "preview",
                                                               "small"]
    assert ".cuts" not in os.listdir(base)  # find / cp -r do not copy cuts twice
    for name in ("Small", "Medium", "Large"):
        p = os.path.join(base, ".cuts", name.lower(), "pics", "big.png")
        assert os.stat(p).st_size == len(cuts[name])
        with open(p, "rb") as f:
            assert f.read() == cuts[name]
    assert os.listdir(os.path.join(base, ".cuts", "small", "pics")) == ["big.png"]
    assert not os.path.exists(os.path.join(base, ".cuts", "preview", "pics", "big.png"))
    f = os.path.join(base, "pics", "big.png")
    assert os.getxattr(f, "user.assetfs.id").decode() == str(_id)
    assert os.getxattr(f, "user.assetfs.contentType") == b"image/png"
    assert os.getxattr(f, "user.assetfs.xRes") == b"1200"
    rec = db.CosyncAsset.find_one({"_id": _id})
    assert os.getxattr(f, "user.assetfs.url").decode() == rec["url"]
    assert os.getxattr(f, "user.assetfs.urlSmall").decode() == rec["urlSmall"]
    names = os.listxattr(f)
    assert "user.assetfs.urlLarge" in names and "user.assetfs.expiration" in names
    os.setxattr(f, "user.assetfs.caption", b"a test pattern")
    assert db.CosyncAsset.find_one({"_id": _id})["caption"] == "a test pattern"
    wait_for(lambda: os.getxattr(f, "user.assetfs.caption") == b"a test pattern", 5,
             "the caption through the mount")


def test_sixteen_concurrent_readers(broker, start_mount, db):
    blobs = [os.urandom(6 * 1024 * 1024 + i) for i in range(4)]
    for i, b in enumerate(blobs):
        cosync_put(db, "app1", f"many/f{i}.bin", b, partition="shared")
    m = start_mount("cache_mb=32")
    results = [None] * 16

    def reader(k):
        b = blobs[k % 4]
        p = m.p("many", f"f{k % 4}.bin", partition="shared")
        with open(p, "rb") as f:
            if k % 2:  # half read sequentially, half in a scattered order
                results[k] = f.read() == b
            else:
                ok = True
                for off in list(range(0, len(b), 700_000))[::-1]:
                    f.seek(off)
                    ok = ok and f.read(100_000) == b[off:off + 100_000]
                results[k] = ok

    ts = [threading.Thread(target=reader, args=(k,)) for k in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert results == [True] * 16
