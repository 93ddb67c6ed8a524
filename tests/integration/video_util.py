"""Helpers for the video tests: generating videos with `ffmpeg -f lavfi`, reading what
ffprobe says about them (duration, display size after rotation), and looking at PNG pixels
(decoded by ffmpeg to raw RGB: no Python imaging library needed)."""
import json
import subprocess

CUT_SIZES = {"small": 300, "medium": 600, "large": 900}


def ffmpeg(*args, timeout=120):
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
                   check=True, timeout=timeout)


def ffprobe(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of",
                          "json", str(path)], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    return json.loads(out)


def video_stream(probe):
    for s in probe["streams"]:
        if s["codec_type"] == "video":
            return s
    raise AssertionError("no video stream")


def rotation_cw(probe):
    """Clockwise degrees a player turns the stored frames (0/90/180/270). ffprobe prints
    av_display_rotation_get(), which is counter-clockwise."""
    for sd in video_stream(probe).get("side_data_list", []):
        if "rotation" in sd:
            return (-int(sd["rotation"])) % 360
    return 0


def expected_display(probe):
    """(duration s, display width, display height, clockwise rotation) from ffprobe."""
    s = video_stream(probe)
    w, h = int(s["width"]), int(s["height"])
    num, den = (int(v) for v in s.get("sample_aspect_ratio", "1:1").split(":"))
    if num and den and num != den:
        # players stretch the width by the pixel aspect ratio
        w = round(w * num / den)
    rot = rotation_cw(probe)
    if rot in (90, 270):
        w, h = h, w
    return float(probe["format"]["duration"]), w, h, rot


def cut_size(w, h, longest):
    """Size of a cut: the longer side `longest`, never upscaled, aspect kept."""
    if max(w, h) <= longest:
        return w, h
    if w >= h:
        return longest, max(1, round(h * longest / w))
    return max(1, round(w * longest / h)), longest


def size_close(got, want):
    """Cut sizes: exact on the longer side, +-1 on the other (rounding of x.5)."""
    return (abs(got[0] - want[0]) <= (0 if want[0] >= want[1] else 1)
            and abs(got[1] - want[1]) <= (0 if want[1] > want[0] else 1))


def png_size(data):
    """Width and height from a PNG's IHDR (also checks it is a PNG)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def rgb_pixels(path, w, h):
    """(w, h, rgb24 bytes) of an image, or of a video's first frame as players show it
    (ffmpeg applies the display rotation); w and h are the expected size."""
    raw = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-i",
                          str(path), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-"], capture_output=True, check=True, timeout=60).stdout
    assert len(raw) == w * h * 3, f"{path}: {len(raw)} bytes of RGB, expected {w}x{h}"
    return w, h, raw


def pixel(img, x, y):
    w, _, raw = img
    i = (y * w + x) * 3
    return tuple(raw[i:i + 3])


def mean_abs_diff(a, b):
    assert a[:2] == b[:2], f"sizes differ: {a[:2]} vs {b[:2]}"
    ra, rb = a[2], b[2]
    return sum(abs(x - y) for x, y in zip(ra, rb)) / len(ra)


def near(rgb, want, tol=40):
    return all(abs(c - w) <= tol for c, w in zip(rgb, want))
