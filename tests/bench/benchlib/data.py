"""Datasets, created once per bench run directly in S3 (boto3) and, for assetfs, as
CosyncAsset records pointing at the same objects, the way the broker leaves them after a
Cosync client's upload. Every target then reads the same bytes from the same server."""
import concurrent.futures
import datetime
import hashlib
import os
import random
import subprocess

from bson import ObjectId

from .procs import OpFailed
from .targets import LIST_PARTITION, PARTITION, UID

PREFIX = "bench/"


def big_key(i):
    return f"{PREFIX}read/big-{i}.bin"


VIDEO_KEY = PREFIX + "media/video.mp4"
LIST_DIR = PREFIX + "list"


def list_key(i):
    return f"{LIST_DIR}/f{i:05d}.bin"


def make_random_file(path, mib, seed):
    """mib MiB of pseudo-random bytes (incompressible, reproducible); returns sha256."""
    if os.path.exists(path) and os.path.getsize(path) == mib << 20 and os.path.exists(path + ".sha256"):
        with open(path + ".sha256") as f:
            return f.read().strip()
    rng = random.Random(seed)
    h = hashlib.sha256()
    with open(path + ".tmp", "wb") as f:
        for _ in range(mib):
            b = rng.randbytes(1 << 20)
            h.update(b)
            f.write(b)
    os.replace(path + ".tmp", path)
    with open(path + ".sha256", "w") as f:
        f.write(h.hexdigest())
    return h.hexdigest()


def make_video(path, mib, timeout):
    """An MPEG-4 video of about mib MiB (moov atom at the end, as ffmpeg writes it by
    default, so a reader must seek to the end first); returns its duration in seconds."""
    rate_mbit = 20
    # testsrc2 is simple: mpeg4 reaches about 12 Mbit/s of the 20 asked for.
    seconds = max(4, int(mib * 8 / 12))
    if not os.path.exists(path):
        subprocess.run(
            ["ffmpeg", "-v", "error", "-nostdin", "-y",
             "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
             "-t", str(seconds), "-c:v", "mpeg4", "-b:v", f"{rate_mbit}M",
             "-maxrate", f"{rate_mbit}M", "-bufsize", f"{rate_mbit}M", "-g", "60",
             "-c:a", "aac", "-b:a", "128k", path + ".tmp.mp4"],
            check=True, timeout=timeout)
        os.replace(path + ".tmp.mp4", path)
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                          "-of", "default=nw=1:nk=1", path], check=True, capture_output=True,
                         timeout=60).stdout
    return float(out.decode().strip())


def make_tree(root, files, seed):
    """files files of 1..300 KiB in 10 folders (reproducible); returns total bytes."""
    stamp = root + ".done"   # outside the tree: `cp -r` must copy exactly `files` files
    if os.path.exists(stamp):
        with open(stamp) as f:
            return int(f.read())
    rng = random.Random(seed)
    total = 0
    for i in range(files):
        d = os.path.join(root, f"d{i % 10}")
        os.makedirs(d, exist_ok=True)
        n = rng.randint(1, 300) * 1024
        with open(os.path.join(d, f"file-{i:04d}.bin"), "wb") as f:
            f.write(rng.randbytes(n))
        total += n
    with open(stamp, "w") as f:
        f.write(str(total))
    return total


class Datasets:
    def __init__(self, bench):
        self.bench = bench
        self.assets = []

    def _record(self, key, size, content_type, etag="", duration=0.0, partition=PARTITION):
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        exp = now + datetime.timedelta(hours=24)
        url = self.bench.presign("get_object", key, 24 * 3600)
        return {
            "_id": ObjectId(), "_partition": partition, "uid": UID, "sessionId": "bench-seed",
            "path": key, "filePath": key[len(PREFIX):], "expirationHours": 24.0,
            "expiration": exp, "contentType": content_type, "size": int(size),
            "duration": float(duration), "color": "#000000", "xRes": 0, "yRes": 0,
            "caption": "", "url": url, "urlSmall": "", "urlMedium": "", "urlLarge": "",
            "urlVideoPreview": "", "status": "active", "createdAt": now, "updatedAt": now,
            "mtime": now, "etag": etag.strip('"'),
        }

    def _register(self, records):
        if records:
            self.bench.db["CosyncAsset"].insert_many(records, ordered=False)

    def big_files(self, count, mib):
        """Uploads the 1 GiB (mib) file once and server-side copies it to count keys."""
        src = os.path.join(self.bench.dir, "data", f"big-{mib}.bin")
        sha = make_random_file(src, mib, seed=7)
        s3, b = self.bench.s3, self.bench.bucket
        have = {}
        for i in range(count):
            try:
                have[i] = s3.head_object(Bucket=b, Key=big_key(i))
            except Exception:
                pass
        if 0 not in have:
            s3.upload_file(src, b, big_key(0))
            have[0] = s3.head_object(Bucket=b, Key=big_key(0))
        def copy(i):
            s3.copy_object(Bucket=b, Key=big_key(i), CopySource={"Bucket": b, "Key": big_key(0)})
            return i, s3.head_object(Bucket=b, Key=big_key(i))
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            have.update(ex.map(copy, [i for i in range(count) if i not in have]))
        recs = []
        for i in range(count):
            if have[i]["ContentLength"] != mib << 20:
                raise OpFailed(f"{big_key(i)} has {have[i]['ContentLength']} bytes")
            if not self.bench.db["CosyncAsset"].find_one({"path": big_key(i)}):
                recs.append(self._record(big_key(i), mib << 20, "application/octet-stream",
                                         have[i].get("ETag", "")))
        self._register(recs)
        return src, sha

    def video(self, mib, timeout):
        src = os.path.join(self.bench.dir, "data", f"video-{mib}.mp4")
        duration = make_video(src, mib, timeout)
        size = os.path.getsize(src)
        s3, b = self.bench.s3, self.bench.bucket
        s3.upload_file(src, b, VIDEO_KEY, ExtraArgs={"ContentType": "video/mp4"})
        if not self.bench.db["CosyncAsset"].find_one({"path": VIDEO_KEY}):
            self._register([self._record(VIDEO_KEY, size, "video/mp4", duration=duration)])
        return src, size, duration

    def listing(self, entries):
        """entries small objects under bench/list/ and one CosyncAsset record each."""
        s3, b = self.bench.s3, self.bench.bucket
        have = self.bench.count_objects(LIST_DIR + "/")
        if have < entries:
            body = b"x" * 100

            def put(i):
                s3.put_object(Bucket=b, Key=list_key(i), Body=body)
            with concurrent.futures.ThreadPoolExecutor(16) as ex:
                list(ex.map(put, range(have, entries)))
        coll = self.bench.db["CosyncAsset"]
        if coll.count_documents({"filePath": {"$regex": "^list/"}}) < entries:
            recs = [self._record(list_key(i), 100, "application/octet-stream",
                                 partition=LIST_PARTITION)
                    for i in range(entries)]
            for j in range(0, len(recs), 1000):
                self._register(recs[j:j + 1000])
