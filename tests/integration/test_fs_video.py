"""Issue 6 end to end: videos copied with `cp` into the mount (real broker, FerretDB,
versitygw) get duration, display size, a first-frame PNG preview and its 300/600/900 px
cuts; the preview and cuts are readable under MNT/<partition>/.cuts/ and over HTTP from
their URLs (byte-identical), carry image/png in S3, and show in the xattrs. Files that are
not (complete) videos upload as plain assets with a warning in the mount's log.

Also: HEVC iPhone-style .MOV, anamorphic pixels, audio-only and unknown-codec .mp4,
rename and overwrite of a video, ffmpeg writing straight into the mount, rsync, and the
same videos through the ASan/UBSan filesystem and broker (when ASSETFS_ASAN_BUILD_DIR is
set, as tests/run does), which must exit cleanly without a leak report.

Videos come from `ffmpeg -f lavfi`; expectations come from ffprobe/ffmpeg, never from
assetfs code. The first frame assetfs renders is compared with the frame ffmpeg decodes
(ffmpeg applies the display rotation as players do)."""
import errno
import os
import shutil
import subprocess
import time
import uuid

import pytest

from fs_read_util import insert_assets, peak_rss_kb
from fs_write_util import (http_get, key_of, sha256_bytes, sha256_file, wait_asset,
                           wait_no_staging)
from procs import Procs, wait_for
from video_util import (CUT_SIZES, cut_size, expected_display, ffmpeg, ffprobe,
                        mean_abs_diff, near, pixel, png_size, rgb_pixels, size_close)

ASAN_DIR = os.environ.get("ASSETFS_ASAN_BUILD_DIR")
needs_asan = pytest.mark.skipif(not ASAN_DIR, reason="no ASSETFS_ASAN_BUILD_DIR (tests/run "
                                "sets it to its ASan/UBSan build)")
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)
X264 = ["-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast"]
AAC = ["-c:a", "aac", "-b:a", "32k"]


def tok():
    return uuid.uuid4().hex[:8]


# ------------------------------------------------------------------ the videos

def gen_mp4(out):
    """H.264 + AAC, 1280x720: every cut is a downscale."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=1280x720:r=25:d=3", "-f", "lavfi", "-i",
           "sine=f=440:d=3", *X264, *AAC, "-shortest", str(out))


def gen_mov(out):
    """QuickTime, H.264 + AAC, 480x270: medium and large are not upscaled."""
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=480x270:r=30:d=2", "-f", "lavfi", "-i",
           "sine=f=220:d=2", *X264, *AAC, "-f", "mov", str(out))


def gen_webm(out):
    """WebM, VP9 + Opus, 640x360."""
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=640x360:r=25:d=2", "-f", "lavfi", "-i",
           "sine=f=330:d=2", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
           "-b:v", "300k", "-pix_fmt", "yuv420p", "-c:a", "libopus", "-b:a", "32k", str(out))


def gen_rotated(out, tmp):
    """A phone-style portrait video: frames stored landscape 640x360 (blue, red square in
    the stored top-left corner, green one in the stored bottom-left), rotation in the
    track's display matrix (set by stream copy, as FFmpeg 5.1 writes `rotate`)."""
    plain = tmp / f"unrotated-{tok()}.mp4"
    ffmpeg("-f", "lavfi", "-i",
           "color=c=blue:s=640x360:r=30:d=2,"
           "drawbox=x=0:y=0:w=96:h=96:color=red:t=fill,"
           "drawbox=x=0:y=264:w=96:h=96:color=lime:t=fill",
           "-f", "lavfi", "-i", "sine=f=500:d=2", *X264, *AAC, "-shortest", str(plain))
    ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v", "rotate=270", str(out))


def gen_ten_minutes(out):
    """10 minutes, 160x90 at 1 fps, with a 10-minute AAC track."""
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=160x90:r=1:d=600", "-f", "lavfi", "-i",
           "sine=f=440:d=600:sample_rate=16000", *X264, "-g", "60", "-c:a", "aac", "-b:a",
           "16k", "-ac", "1", "-shortest", str(out), timeout=180)


# ------------------------------------------------------------------ the checks

def wait_sized(db, file_path, size, timeout=60):
    """The active asset at file_path with the given size. (Waiting for the size, not just any
    asset: see test_one_upload_per_written_file for a spurious early version.)"""
    return wait_for(lambda: db.CosyncAsset.find_one({"filePath": file_path, "status": "active",
                                                     "size": size}),
                    timeout, f"asset {file_path} of {size} bytes to be completed")


def copy_in(src, dst):
    t0 = time.monotonic()
    subprocess.run(["cp", str(src), dst], check=True, timeout=120)
    return time.monotonic() - t0


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def cut_path(mount, part, file_path):
    return mount.p(".cuts", part, file_path + ".png")


def wait_listed(path, timeout=30):
    wait_for(lambda: os.path.exists(path), timeout, f"{path} to appear")


def getxattr_or_none(path, name):
    try:
        return os.getxattr(path, name).decode()
    except OSError as e:
        if e.errno == errno.ENODATA:
            return None
        raise


def finish(mount, broker):
    """Unmount (waits for uploads) and stop the broker; both exit 0 without sanitizer
    reports (run with ASSETFS_FS_ASAN=1 ASSETFS_BROKER_ASAN=1 to check leaks)."""
    rc = mount.unmount(timeout=90)
    log = mount.log()
    assert "Sanitizer" not in log, log[-4000:]
    assert rc == 0, log[-4000:]
    brc = Procs.stop(broker.proc)
    blog = broker.log()
    assert "Sanitizer" not in blog, blog[-4000:]
    assert brc == 0, blog[-4000:]


def check_video(mount, db, s3, bucket, tmp_path, src, file_path, content_type):
    """Every issue-6 property of a video written at file_path; returns (asset, preview
    image) for extra checks."""
    probe = ffprobe(src)
    duration, dw, dh, _ = expected_display(probe)
    a = wait_sized(db, file_path, os.path.getsize(src))

    # the record
    assert a["contentType"] == content_type
    assert a["size"] == os.path.getsize(src)
    assert abs(a["duration"] - duration) <= 0.1, (a["duration"], duration)
    assert (a["xRes"], a["yRes"]) == (dw, dh)
    urls = {"preview": a.get("urlVideoPreview"), "small": a.get("urlSmall"),
            "medium": a.get("urlMedium"), "large": a.get("urlLarge")}
    assert all(urls.values()), urls

    # the original: bytes through the mount and through url; content type in S3
    want = sha256_file(src)
    assert sha256_file(mount.p(file_path)) == want
    assert sha256_bytes(http_get(a["url"])) == want
    assert s3.head_object(Bucket=bucket, Key=key_of(a["url"], bucket))["ContentType"] == \
        content_type

    # preview and cuts: .cuts/ == HTTP, PNG, sizes, content type
    sizes = {"preview": (dw, dh)}
    sizes.update({k: cut_size(dw, dh, n) for k, n in CUT_SIZES.items()})
    blobs = {}
    for part, url in urls.items():
        p = cut_path(mount, part, file_path)
        wait_listed(p)
        data = read_file(p)
        assert os.stat(p).st_size == len(data)
        assert data == http_get(url), f"{part}: .cuts and HTTP differ"
        got = png_size(data)
        if part == "preview":
            assert got == sizes[part], (part, got, sizes[part])
        else:
            assert size_close(got, sizes[part]), (part, got, sizes[part])
        head = s3.head_object(Bucket=bucket, Key=key_of(url, bucket))
        assert head["ContentType"] == "image/png", (part, head["ContentType"])
        assert head["ContentLength"] == len(data)
        blobs[part] = data
    # an independent decoder agrees on the dimensions
    prev = tmp_path / f"preview-{tok()}.png"
    prev.write_bytes(blobs["preview"])
    s = ffprobe(prev)["streams"][0]
    assert (s["width"], s["height"]) == (dw, dh)

    # the preview shows the first frame as a player does
    ref = tmp_path / f"ref-{tok()}.png"
    # ffmpeg rotates as the display matrix says; the scale applies the pixel aspect ratio
    ffmpeg("-i", str(src), "-frames:v", "1", "-vf", f"scale={dw}:{dh},setsar=1", str(ref))
    img = rgb_pixels(prev, dw, dh)
    mad = mean_abs_diff(img, rgb_pixels(ref, dw, dh))
    assert mad < 12, f"preview differs from ffmpeg's first frame by {mad:.1f}/255 per channel"

    # xattrs on the video
    def xattrs_ready():
        return getxattr_or_none(mount.p(file_path), "user.assetfs.urlVideoPreview")
    wait_for(xattrs_ready, 30, "user.assetfs.urlVideoPreview")
    for field in ("urlVideoPreview", "urlSmall", "urlMedium", "urlLarge", "url"):
        assert getxattr_or_none(mount.p(file_path), f"user.assetfs.{field}") == a[field], field
    names = os.listxattr(mount.p(file_path))
    for field in ("urlVideoPreview", "urlSmall", "urlMedium", "urlLarge", "duration", "xRes",
                  "yRes"):
        assert f"user.assetfs.{field}" in names, (field, names)
    assert abs(float(getxattr_or_none(mount.p(file_path), "user.assetfs.duration")) -
               duration) <= 0.1
    assert int(getxattr_or_none(mount.p(file_path), "user.assetfs.xRes")) == dw
    assert int(getxattr_or_none(mount.p(file_path), "user.assetfs.yRes")) == dh
    return a, img


def check_plain(mount, db, s3, bucket, src, file_path, content_type, log_before,
                probe_meta_ok=False):
    """A .mp4 that is not a (complete, decodable) video: a plain asset, bytes intact, no
    preview, no cuts, a warning in the mount's log. probe_meta_ok: duration and size from
    the headers are allowed (a codec nobody decodes still has them), but must be right."""
    a = wait_sized(db, file_path, os.path.getsize(src))
    assert a["contentType"] == content_type
    for field in ("urlVideoPreview", "urlSmall", "urlMedium", "urlLarge"):
        assert not a.get(field), (field, a.get(field))
    if probe_meta_ok and a.get("duration"):
        duration, w, h, _ = expected_display(ffprobe(src))
        assert abs(a["duration"] - duration) <= 0.1
        assert (a.get("xRes"), a.get("yRes")) == (w, h)
    else:
        for field in ("duration", "xRes", "yRes"):
            assert not a.get(field), (field, a.get(field))
    want = sha256_file(src)
    assert sha256_bytes(http_get(a["url"])) == want
    wait_for(lambda: getxattr_or_none(mount.p(file_path), "user.assetfs.url"), 30,
             "the asset in the catalog")
    assert sha256_file(mount.p(file_path)) == want
    assert s3.head_object(Bucket=bucket, Key=key_of(a["url"], bucket))["ContentType"] == \
        content_type
    for part in ("preview", "small", "medium", "large"):
        assert not os.path.exists(cut_path(mount, part, file_path)), part
    assert getxattr_or_none(mount.p(file_path), "user.assetfs.urlVideoPreview") is None
    # no preview or cut went to S3 for it (the broker presigns them; nothing is PUT)
    stem = key_of(a["url"], bucket).rsplit("-", 1)[0]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=stem).get("Contents", [])]
    assert key_of(a["url"], bucket) in keys
    assert not [k for k in keys if any(f"-{t}-" in k[len(stem):] for t in
                                       ("small", "medium", "large", "videopreview"))], keys
    log = mount.log()[log_before:]
    assert "uploaded without preview" in log, log
    return a, log


# ------------------------------------------------------------------ the tests

GOOD = {
    "mp4-h264": (gen_mp4, "movies/clip-{}.mp4", "video/mp4"),
    "mov": (gen_mov, "movies/take-{}.mov", "video/quicktime"),
    "webm-vp9": (gen_webm, "movies/web-{}.webm", "video/webm"),
}


@pytest.mark.parametrize("case", sorted(GOOD))
def test_video_preview_cuts_metadata(case, broker, mount, db, s3, bucket, tmp_path):
    gen, name, ct = GOOD[case]
    src = tmp_path / os.path.basename(name.format("src"))
    gen(src)
    fp = name.format(tok())
    os.makedirs(mount.p(os.path.dirname(fp)), exist_ok=True)
    copy_in(src, mount.p(fp))
    check_video(mount, db, s3, bucket, tmp_path, src, fp, ct)
    finish(mount, broker)


def check_portrait_corners(img):
    """Stored frames: blue, red square top-left, green square bottom-left. Turned 90 degrees
    clockwise for display: red is top-right, green top-left, the bottom corners blue."""
    w, h, _ = img
    m = max(4, w // 30)
    assert near(pixel(img, w - 1 - m, m), RED), ("top-right", pixel(img, w - 1 - m, m))
    assert near(pixel(img, m, m), GREEN), ("top-left", pixel(img, m, m))
    assert near(pixel(img, m, h - 1 - m), BLUE), ("bottom-left", pixel(img, m, h - 1 - m))
    assert near(pixel(img, w - 1 - m, h - 1 - m), BLUE), "bottom-right"


def test_rotated_phone_video(broker, mount, db, s3, bucket, tmp_path):
    src = tmp_path / "phone.mp4"
    gen_rotated(src, tmp_path)
    duration, dw, dh, rot = expected_display(ffprobe(src))
    assert rot == 90 and (dw, dh) == (360, 640), (rot, dw, dh)  # portrait, turned clockwise
    fp = f"DCIM/IMG_{tok()}.MP4"
    os.makedirs(mount.p("DCIM"))
    copy_in(src, mount.p(fp))
    a, img = check_video(mount, db, s3, bucket, tmp_path, src, fp, "video/mp4")
    assert a["yRes"] > a["xRes"]
    check_portrait_corners(img)
    # the cuts are portrait too, with the same corners
    for part, n in CUT_SIZES.items():
        cw, ch = cut_size(dw, dh, n)
        check_portrait_corners(rgb_pixels(cut_path(mount, part, fp), cw, ch))
    finish(mount, broker)


def test_iphone_style_hevc_mov(broker, mount, db, s3, bucket, tmp_path):
    """HEVC ('hvc1') in QuickTime, portrait by display matrix, as iPhones record."""
    plain = tmp_path / "plain.mov"
    ffmpeg("-f", "lavfi", "-i",
           "color=c=blue:s=640x360:r=30:d=2,"
           "drawbox=x=0:y=0:w=96:h=96:color=red:t=fill,"
           "drawbox=x=0:y=264:w=96:h=96:color=lime:t=fill",
           "-f", "lavfi", "-i", "sine=d=2", "-pix_fmt", "yuv420p", "-c:v", "libx265",
           "-preset", "ultrafast", "-x265-params", "log-level=error", "-tag:v", "hvc1",
           *AAC, "-shortest", "-f", "mov", str(plain))
    src = tmp_path / "IMG.MOV"
    ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v", "rotate=270", "-f", "mov",
           str(src))
    assert expected_display(ffprobe(src))[1:] == (360, 640, 90)
    fp = f"IMG_{tok()}.MOV"
    copy_in(src, mount.p(fp))
    _, img = check_video(mount, db, s3, bucket, tmp_path, src, fp, "video/quicktime")
    check_portrait_corners(img)
    finish(mount, broker)


def test_anamorphic_video_display_size(broker, mount, db, s3, bucket, tmp_path):
    """320x360 stored with 2:1 pixels shows as 640x360 (16:9)."""
    src = tmp_path / "dv.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=320x360:r=25:d=2,setsar=2/1", *X264, str(src))
    assert expected_display(ffprobe(src))[1:] == (640, 360, 0)
    fp = f"anamorphic-{tok()}.mp4"
    copy_in(src, mount.p(fp))
    check_video(mount, db, s3, bucket, tmp_path, src, fp, "video/mp4")
    finish(mount, broker)


def test_ten_minute_clip_bounded_time(broker, mount, db, s3, bucket, tmp_path):
    src = tmp_path / "long.mp4"
    gen_ten_minutes(src)
    duration = float(ffprobe(src)["format"]["duration"])
    assert 599.5 < duration < 601
    fp = f"long-{tok()}.mp4"
    t0 = time.monotonic()
    t_cp = copy_in(src, mount.p(fp))
    wait_sized(db, fp, os.path.getsize(src))
    t_done = time.monotonic() - t0
    print(f"\n10-minute clip ({os.path.getsize(src)} bytes, {duration:.1f} s): cp returned "
          f"after {t_cp:.2f} s, asset completed {t_done:.2f} s after the write started")
    check_video(mount, db, s3, bucket, tmp_path, src, fp, "video/mp4")
    rss_mb = peak_rss_kb(mount.proc.pid) / 1024
    print(f"peak RSS of the mount after it: {rss_mb:.0f} MB")
    assert t_done < 20, f"{t_done:.1f} s to process a 10-minute clip"
    assert rss_mb < 400
    finish(mount, broker)


def truncate_copy(full, out, fraction):
    data = full.read_bytes()
    out.write_bytes(data[:int(len(data) * fraction)])


def test_truncated_mp4_moov_at_end(broker, mount, db, s3, bucket, tmp_path):
    """An interrupted copy of a camera file (index at the end): no moov at all."""
    full = tmp_path / "full.mp4"
    gen_mp4(full)
    src = tmp_path / "cut.mp4"
    truncate_copy(full, src, 0.5)
    fp = f"broken-{tok()}.mp4"
    before = len(mount.log())
    copy_in(src, mount.p(fp))
    check_plain(mount, db, s3, bucket, src, fp, "video/mp4", before)
    finish(mount, broker)


def test_truncated_mp4_faststart(broker, mount, db, s3, bucket, tmp_path):
    """Index first (faststart), media data cut short: the first frame still decodes, but
    the file is incomplete and must not get a preview."""
    full = tmp_path / "full.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=640x360:r=25:d=4", *X264, "-movflags",
           "+faststart", str(full))
    src = tmp_path / "cut.mp4"
    truncate_copy(full, src, 2 / 3)
    # ffmpeg itself still decodes the first frame of it
    ffmpeg("-i", str(src), "-frames:v", "1", str(tmp_path / "first.png"))
    fp = f"half-{tok()}.mp4"
    before = len(mount.log())
    copy_in(src, mount.p(fp))
    _, log = check_plain(mount, db, s3, bucket, src, fp, "video/mp4", before)
    assert "truncated" in log, log
    finish(mount, broker)


def test_truncated_webm(broker, mount, db, s3, bucket, tmp_path):
    full = tmp_path / "full.webm"
    gen_webm(full)
    src = tmp_path / "cut.webm"
    truncate_copy(full, src, 2 / 3)
    fp = f"half-{tok()}.webm"
    before = len(mount.log())
    copy_in(src, mount.p(fp))
    _, log = check_plain(mount, db, s3, bucket, src, fp, "video/webm", before)
    assert "truncated" in log, log
    finish(mount, broker)


def test_text_file_named_mp4(broker, mount, db, s3, bucket, tmp_path):
    src = tmp_path / "notes.mp4"
    src.write_bytes(b"this is a shopping list, not a video\n" * 200)
    fp = f"notes-{tok()}.mp4"
    before = len(mount.log())
    copy_in(src, mount.p(fp))
    check_plain(mount, db, s3, bucket, src, fp, "video/mp4", before)
    finish(mount, broker)


def test_audio_only_mp4(broker, mount, db, s3, bucket, tmp_path):
    """An .mp4 with sound and no picture: nothing to preview."""
    src = tmp_path / "voice.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=d=3", *AAC, str(src))
    fp = f"voice-{tok()}.mp4"
    before = len(mount.log())
    copy_in(src, mount.p(fp))
    check_plain(mount, db, s3, bucket, src, fp, "video/mp4", before)
    finish(mount, broker)


def test_unknown_codec(broker, mount, db, s3, bucket, tmp_path):
    """A well-formed mp4 whose video codec (fourcc 'xvq9') no decoder knows."""
    good = tmp_path / "good.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=320x240:r=25:d=2", *X264, str(good))
    data = good.read_bytes()
    at = data.index(b"avc1", data.index(b"stsd"))
    src = tmp_path / "odd.mp4"
    src.write_bytes(data[:at] + b"xvq9" + data[at + 4:])
    assert ffprobe(src)["streams"][0].get("codec_name", "unknown") == "unknown"
    fp = f"odd-{tok()}.mp4"
    before = len(mount.log())
    copy_in(src, mount.p(fp))
    check_plain(mount, db, s3, bucket, src, fp, "video/mp4", before, probe_meta_ok=True)
    finish(mount, broker)


def test_rename_video_moves_preview(broker, mount, db, s3, bucket, tmp_path):
    src = tmp_path / "a.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=320x240:r=25:d=1", *X264, str(src))
    old, new = f"a-{tok()}.mp4", f"renamed/b-{tok()}.mp4"
    copy_in(src, mount.p(old))
    a = wait_sized(db, old, os.path.getsize(src))
    wait_listed(cut_path(mount, "preview", old))
    preview = read_file(cut_path(mount, "preview", old))
    os.mkdir(mount.p("renamed"))
    os.rename(mount.p(old), mount.p(new))
    wait_listed(cut_path(mount, "preview", new))
    assert read_file(cut_path(mount, "preview", new)) == preview == http_get(
        a["urlVideoPreview"])
    assert png_size(read_file(cut_path(mount, "small", new))) == (300, 225)
    assert not os.path.exists(cut_path(mount, "preview", old))
    finish(mount, broker)


def test_overwrite_video_with_text_drops_preview(broker, mount, db, s3, bucket, tmp_path):
    src = tmp_path / "v.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=320x240:r=25:d=1", *X264, str(src))
    fp = f"v-{tok()}.mp4"
    copy_in(src, mount.p(fp))
    wait_sized(db, fp, os.path.getsize(src))
    wait_listed(cut_path(mount, "preview", fp))
    text = tmp_path / "t.mp4"
    text.write_bytes(b"not a video any more\n" * 50)
    copy_in(text, mount.p(fp))
    wait_for(lambda: (db.CosyncAsset.find_one({"filePath": fp, "status": "active",
                                               "size": os.path.getsize(text)})), 60,
             "the new version to complete")
    wait_for(lambda: not os.path.exists(cut_path(mount, "preview", fp)), 30,
             "the old preview to go")
    assert sha256_file(mount.p(fp)) == sha256_file(text)
    assert db.CosyncAsset.count_documents({"filePath": fp, "status": "active"}) == 1
    for part in ("small", "medium", "large"):
        assert not os.path.exists(cut_path(mount, part, fp)), part
    finish(mount, broker)


def test_no_preview_warning_names_the_file(broker, mount, db, tmp_path):
    """The mount's log must tell WHICH file went up without a preview."""
    fp = f"clips/holiday-{tok()}.mp4"
    os.mkdir(mount.p("clips"))
    with open(mount.p(fp), "wb") as f:
        f.write(b"not a video\n" * 10)
    wait_asset(db, fp)
    lines = [ln for ln in mount.log().splitlines() if "without preview" in ln]
    assert lines, mount.log()
    assert any(fp in ln for ln in lines), lines


# ------------------------------------------------------------------ under ASan/UBSan

def sanitized(monkeypatch, start_broker, start_mount, db, seed=True):
    """The broker and the mount from the ASan/UBSan build. seed: one record in the upload
    partition first, so that the empty-partition defect below does not hide the rest."""
    monkeypatch.setenv("ASSETFS_FS_ASAN", "1")
    monkeypatch.setenv("ASSETFS_BROKER_ASAN", "1")
    if seed:
        insert_assets(db, "user_id=tester", 1, prefix="seed")
    broker = start_broker(timeout=60)
    return broker, start_mount(timeout=60)


@needs_asan
def test_videos_under_asan(monkeypatch, start_broker, start_mount, db, s3, bucket, tmp_path):
    """Good, rotated, truncated, undecodable and fake videos through the ASan/UBSan
    filesystem and broker: the same results, no sanitizer report, no leak at exit."""
    broker, mount = sanitized(monkeypatch, start_broker, start_mount, db)
    good, rot, full, webm = (tmp_path / n for n in ("g.mp4", "r.mp4", "f.mp4", "w.webm"))
    gen_mp4(good)
    gen_rotated(rot, tmp_path)
    gen_webm(webm)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=640x360:r=25:d=4", *X264, "-movflags",
           "+faststart", str(full))
    cut = tmp_path / "cut.mp4"
    truncate_copy(full, cut, 2 / 3)
    text = tmp_path / "t.mp4"
    text.write_bytes(b"plain text\n" * 100)
    names = {k: f"{k}-{tok()}{os.path.splitext(str(v))[1]}" for k, v in
             (("good", good), ("rot", rot), ("webm", webm), ("cut", cut), ("text", text))}
    before = len(mount.log())
    for k, src in (("good", good), ("rot", rot), ("webm", webm), ("cut", cut),
                   ("text", text)):
        copy_in(src, mount.p(names[k]))
    check_video(mount, db, s3, bucket, tmp_path, good, names["good"], "video/mp4")
    _, img = check_video(mount, db, s3, bucket, tmp_path, rot, names["rot"], "video/mp4")
    check_portrait_corners(img)
    check_video(mount, db, s3, bucket, tmp_path, webm, names["webm"], "video/webm")
    check_plain(mount, db, s3, bucket, cut, names["cut"], "video/mp4", before)
    check_plain(mount, db, s3, bucket, text, names["text"], "video/mp4", before)
    finish(mount, broker)


@needs_asan
def test_ubsan_lookup_in_empty_partition(monkeypatch, start_broker, start_mount, db):
    broker, mount = sanitized(monkeypatch, start_broker, start_mount, db, seed=False)
    assert not os.path.exists(mount.p("nothing.mp4"))
    with open(mount.p("first.txt"), "wb") as f:
        f.write(b"x")
    wait_asset(db, "first.txt")
    finish(mount, broker)


@needs_asan
def test_ubsan_list_empty_directory(monkeypatch, start_broker, start_mount, db):
    broker, mount = sanitized(monkeypatch, start_broker, start_mount, db)
    os.mkdir(mount.p("empty"))
    assert os.listdir(mount.p("empty")) == []
    finish(mount, broker)


def wait_retyped(db, fp, content_type, timeout=60):
    """After a rename that changed the type: the asset of the new type, once the version
    uploaded under the old name (if any) is superseded."""
    def only():
        docs = list(db.CosyncAsset.find({"filePath": fp, "status": "active"}))
        return len(docs) == 1 and docs[0]["contentType"] == content_type and docs[0]
    return wait_for(only, timeout, f"{fp} as {content_type}, alone")


def test_rsync_video_gets_preview(broker, mount, db, s3, bucket, tmp_path):
    """rsync writes to a temporary name (.name.mp4.XXXXXX) and renames it: the video
    still gets its type, preview and cuts."""
    src = tmp_path / "sync.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=320x240:r=25:d=2", *X264, str(src))
    fp = f"sync-{tok()}.mp4"
    subprocess.run(["rsync", str(src), mount.p(fp)], check=True, timeout=60)
    wait_retyped(db, fp, "video/mp4")
    check_video(mount, db, s3, bucket, tmp_path, src, fp, "video/mp4")
    finish(mount, broker)


def test_mv_completed_bin_to_mp4_gets_preview(broker, mount, db, s3, bucket, tmp_path):
    """A video that went up under a name without its extension, completed and out of
    staging, then renamed to .mp4: copied back (copy-on-write) and uploaded as a video."""
    src = tmp_path / "later.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=320x240:r=25:d=2", *X264, str(src))
    tmp = f"later-{tok()}.bin"
    fp = tmp[:-4] + ".mp4"
    shutil.copyfile(src, mount.p(tmp))
    old = wait_sized(db, tmp, os.path.getsize(src))
    assert old["contentType"] == "application/octet-stream"
    wait_no_staging(mount)
    os.rename(mount.p(tmp), mount.p(fp))
    a = wait_retyped(db, fp, "video/mp4")
    assert a["_id"] != old["_id"]
    check_video(mount, db, s3, bucket, tmp_path, src, fp, "video/mp4")
    assert not os.path.exists(mount.p(tmp))
    finish(mount, broker)


def test_rename_within_a_kind_uploads_nothing_again(broker, mount, db, tmp_path):
    """text -> octet-stream is the same kind (no cuts either way): no second upload."""
    with open(mount.p("notes.txt"), "wb") as f:
        f.write(b"hello")
    a = wait_sized(db, "notes.txt", 5)
    os.rename(mount.p("notes.txt"), mount.p("notes.dat"))
    wait_for(lambda: db.CosyncAsset.find_one({"filePath": "notes.dat", "status": "active"}),
             30, "the renamed asset")
    time.sleep(1.0)
    assert db.CosyncAssetUpload.count_documents({}) == 1
    assert db.CosyncAsset.find_one({"filePath": "notes.dat", "status": "active"})["_id"] == \
        a["_id"]
    finish(mount, broker)


def test_ffmpeg_writes_into_the_mount(broker, mount, db, s3, bucket, tmp_path):
    """ffmpeg as the writer: it seeks back to patch the header, and with +faststart reads
    its own output back and rewrites it, all through the mount."""
    fp = f"rendered-{tok()}.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=480x360:r=25:d=2", *X264, "-movflags", "+faststart",
           mount.p(fp))
    local = tmp_path / "copy.mp4"
    shutil.copyfile(mount.p(fp), local)
    assert ffprobe(local)["format"]["duration"]
    check_video(mount, db, s3, bucket, tmp_path, local, fp, "video/mp4")
    finish(mount, broker)


def test_one_upload_per_written_file(broker, mount, db, tmp_path):
    """Each file written once (create, write, close) is uploaded once: one upload record,
    never an empty or partial asset first (a video would be probed half-written). The race
    hits about one file in eight here; up to 60 files are written, stopping at the first."""
    src = tmp_path / "v.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=160x90:r=5:d=1", *X264, str(src))
    data = src.read_bytes()
    for i in range(60):
        fp = f"burst/{i:02d}-{tok()}.mp4"
        os.makedirs(mount.p("burst"), exist_ok=True)
        with open(mount.p(fp), "wb") as f:
            f.write(data)
        wait_sized(db, fp, len(data))
        ups = list(db.CosyncAssetUpload.find({"filePath": fp}, {"size": 1, "status": 1}))
        assert len(ups) == 1, (fp, ups)
