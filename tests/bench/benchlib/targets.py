"""The filesystems under test, all on the same versitygw bucket: assetfs (+ broker),
s3fs, rclone mount with --vfs-cache-mode off and with writes. Each target knows how to
mount itself fresh, where a dataset object shows up in its tree, where to write, and
when a written file is durable."""
import os
import re
import shutil
import subprocess
import time

from .procs import OpFailed, wait_for

UID = "bench"                     # assetfs -o uid=...; Cosync uid of the bench's assets
PARTITION = "user_id=" + UID      # assetfs's default upload partition for that uid
# Workload 4's 10,000 entries live in a partition of their own, so that the other
# workloads (one video, one large file) do not pay for loading a 10,000-asset partition.
LIST_PARTITION = "user_id=" + UID + "-list"


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


def force_unmount(path):
    if is_mounted(path):
        subprocess.run(["umount", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60, check=False)
    if is_mounted(path):
        subprocess.run(["umount", "-l", path], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60, check=False)


class Mount:
    """One fresh mount; unmount() stops its process by PID."""

    def __init__(self, target, path, proc, log_path):
        self.target, self.path, self.proc, self.log_path = target, path, proc, log_path

    @property
    def pid(self):
        return self.proc.pid

    def unmount(self):
        force_unmount(self.path)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.target.bench.procs.stop(self.proc)
        self.target.after_unmount(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.unmount()


def _tail(path, n=3):
    try:
        with open(path, errors="replace") as f:
            lines = [l.strip() for l in f if l.strip()]
        return " | ".join(lines[-n:])[:300]
    except OSError:
        return ""


class Target:
    slug = ""
    label = ""
    fuse_process = ""
    unavailable = None    # reason string when this target cannot run at all

    def __init__(self, bench):
        self.bench = bench
        self.count = 0

    # --- mounting ---------------------------------------------------------------------
    def argv(self, mnt, n):
        raise NotImplementedError

    def env(self):
        return dict(self.bench.child_env)

    def ready(self, mnt):
        return True

    def after_unmount(self, m):
        pass

    def mount(self):
        if self.unavailable:
            raise OpFailed(self.unavailable)
        self.count += 1
        d = os.path.join(self.bench.dir, "mnt", self.slug)
        force_unmount(d)
        os.makedirs(d, exist_ok=True)
        log = os.path.join(self.bench.dir, "log", f"{self.slug}.log")
        p = self.bench.procs.spawn(self.argv(d, self.count), env=self.env(), log_path=log)
        m = Mount(self, d, p, log)
        try:
            wait_for(lambda: is_mounted(d) or p.poll() is not None, 30, f"{self.label} to mount")
            if p.poll() is not None:
                raise OpFailed(f"{self.label} exited {p.returncode} at mount: {_tail(log)}")
            wait_for(lambda: self.ready(d) or p.poll() is not None, 30, f"{self.label} to be ready")
            if p.poll() is not None:
                raise OpFailed(f"{self.label} exited {p.returncode}: {_tail(log)}")
        except Exception:
            m.unmount()
            raise
        return m

    # --- where things are ---------------------------------------------------------------
    def data_path(self, mnt, key):
        """Path of the dataset object `key` (e.g. bench/read/big-0.bin) in the mount."""
        raise NotImplementedError

    def write_path(self, mnt, rel):
        raise NotImplementedError

    def durable_file(self, rel, size, timeout):
        raise NotImplementedError

    def durable_tree(self, rel_dir, count, timeout):
        raise NotImplementedError

    def cleanup_written(self, rel):
        pass


class PeerTarget(Target):
    """A peer that maps S3 keys to paths one to one."""

    def data_path(self, mnt, key):
        return os.path.join(mnt, key)

    def write_prefix(self):
        return f"wr-{self.slug}/"

    def write_path(self, mnt, rel):
        return os.path.join(mnt, self.write_prefix() + rel)

    def durable_file(self, rel, size, timeout):
        key = self.write_prefix() + rel
        s3, b = self.bench.s3, self.bench.bucket

        def ok():
            try:
                return s3.head_object(Bucket=b, Key=key)["ContentLength"] == size
            except Exception:
                return False
        wait_for(ok, timeout, f"{key} in S3", first=0.02, cap=0.5)

    def durable_tree(self, rel_dir, count, timeout):
        prefix = self.write_prefix() + rel_dir.rstrip("/") + "/"
        wait_for(lambda: self.bench.count_objects(prefix) >= count, timeout,
                 f"{count} objects under {prefix}", first=0.05, cap=1.0)

    def durable_count(self, rel_dir):
        return self.bench.count_objects(self.write_prefix() + rel_dir.rstrip("/") + "/")

    def cleanup_written(self, rel):
        self.bench.delete_prefix(self.write_prefix() + rel)


class S3fs(PeerTarget):
    slug = "s3fs"
    label = "s3fs"
    fuse_process = "s3fs"

    def options(self):
        return (f"use_path_request_style,url={self.bench.endpoint},"
                f"passwd_file={self.bench.s3fs_passwd}")

    def describe(self):
        return ("`s3fs BUCKET MNT -f -o use_path_request_style,url=ENDPOINT,passwd_file=FILE` "
                "(defaults otherwise: no use_cache, multipart_size 10 MiB, parallel_count 5)")

    def argv(self, mnt, n):
        return ["s3fs", self.bench.bucket, mnt, "-f", "-o", self.options()]


class Rclone(PeerTarget):
    fuse_process = "rclone"

    def __init__(self, bench, mode):
        super().__init__(bench)
        self.mode = mode
        self.slug = f"rclone-{mode}"
        self.label = f"rclone ({mode})"

    def describe(self):
        return (f"`rclone mount bench:BUCKET MNT --vfs-cache-mode {self.mode} --cache-dir DIR` "
                "(s3 remote from RCLONE_CONFIG_BENCH_*: provider Other, force_path_style; "
                "defaults otherwise: --buffer-size 16M, --dir-cache-time 5m, "
                "--vfs-write-back 5s, --transfers 4)")

    def env(self):
        e = dict(self.bench.child_env)
        # rclone 1.60 refuses a CA bundle on its custom transport, and the endpoint is http.
        e.pop("AWS_CA_BUNDLE", None)
        e.update({
            "RCLONE_CONFIG_BENCH_TYPE": "s3",
            "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
            "RCLONE_CONFIG_BENCH_ENDPOINT": self.bench.endpoint,
            "RCLONE_CONFIG_BENCH_REGION": self.bench.region,
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": self.bench.stack["ASSETFS_S3_ACCESS_KEY"],
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": self.bench.stack["ASSETFS_S3_SECRET_KEY"],
            "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
        })
        return e

    def argv(self, mnt, n):
        cache = os.path.join(self.bench.dir, "cache", f"{self.slug}-{n}")
        os.makedirs(cache, exist_ok=True)
        return ["rclone", "mount", f"bench:{self.bench.bucket}", mnt,
                "--config", self.bench.rclone_conf, "--vfs-cache-mode", self.mode,
                "--cache-dir", cache, "--log-level", "NOTICE"]

    def after_unmount(self, m):
        shutil.rmtree(os.path.join(self.bench.dir, "cache", f"{self.slug}-{self.count}"),
                      ignore_errors=True)


def extra_opts():
    """ASSETFS_BENCH_OPTS: more -o options for every assetfs mount (tuning experiments)."""
    o = os.environ.get("ASSETFS_BENCH_OPTS", "")
    return "," + o if o else ""


class Assetfs(Target):
    slug = "assetfs"
    label = "assetfs"
    fuse_process = "assetfs"
    wr = "wr"   # folder of the written files, one per assetfs mode so runs never collide

    def describe(self):
        return (f"`assetfs MNT -f -o cache_dir=DIR,uid={UID}` with ASSETFS_MONGO_URI/"
                "ASSETFS_DATABASE, plus one `assetfs-broker` with the stack's env")

    def env(self):
        e = dict(self.bench.child_env)
        e.update(self.bench.stack)
        e["ASSETFS_DATABASE"] = self.bench.dbname
        return e

    opts = ""   # extra -o options of this mode

    def argv(self, mnt, n):
        cache = os.path.join(self.bench.dir, "cache", f"{self.slug}-{n}")
        os.makedirs(cache, exist_ok=True)
        return [os.path.join(self.bench.build_dir, "assetfs"), mnt, "-f",
                "-o", f"cache_dir={cache},uid={UID}{self.opts}{extra_opts()}"]

    def ready(self, mnt):
        if not self.bench.ensure_broker():
            raise OpFailed(self.bench.broker_failure)
        return os.path.isdir(os.path.join(mnt, PARTITION))

    def after_unmount(self, m):
        shutil.rmtree(os.path.join(self.bench.dir, "cache", f"{self.slug}-{self.count}"),
                      ignore_errors=True)

    def data_path(self, mnt, key):
        # Dataset objects are registered as CosyncAsset records with filePath = key
        # without the leading "bench/" (see data.py).
        rel = key.split("/", 1)[1]
        part = LIST_PARTITION if rel.startswith("list/") else PARTITION
        return os.path.join(mnt, part, rel)

    def write_path(self, mnt, rel):
        return os.path.join(mnt, PARTITION, self.wr, rel)

    def _upload_error(self, query):
        up = self.bench.db["CosyncAssetUpload"].find_one(dict(query, status="error"))
        if up:
            raise OpFailed(f"upload of {up.get('filePath')} failed: {up.get('error', '?')}"[:300])

    def durable_file(self, rel, size, timeout):
        fp = self.wr + "/" + rel
        assets = self.bench.db["CosyncAsset"]

        def ok():
            self._upload_error({"filePath": fp})
            a = assets.find_one({"filePath": fp, "_partition": PARTITION, "status": "active"})
            if a and int(a.get("size", -1)) != size:
                raise OpFailed(f"CosyncAsset {fp} has size {a.get('size')} not {size}")
            return a is not None
        wait_for(ok, timeout, f"CosyncAsset {fp} active", first=0.02, cap=0.5)

    def cleanup_written(self, rel):
        """As the peers delete what they wrote: the written files' records and objects go,
        so later workloads list and look up a partition of the dataset's size (the records
        of workloads 1 and 3 would otherwise grow it by thousands)."""
        fp = self.wr + "/" + rel
        stem = os.path.splitext(fp)[0]  # keys are <uid>/<path without ext>-<ts><ext>
        q = {"_partition": PARTITION, "filePath": {"$regex": "^" + re.escape(stem)}}
        db = self.bench.db
        db["CosyncAsset"].delete_many(q)
        db["CosyncAssetUpload"].delete_many(q)
        self.bench.delete_prefix(f"{UID}/{stem}")

    def durable_count(self, rel_dir):
        rx = "^" + re.escape(self.wr + "/" + rel_dir.rstrip("/") + "/")
        return self.bench.db["CosyncAsset"].count_documents(
            {"filePath": {"$regex": rx}, "_partition": PARTITION, "status": "active"})

    def durable_tree(self, rel_dir, count, timeout):
        rx = "^" + re.escape(self.wr + "/" + rel_dir.rstrip("/") + "/")
        assets = self.bench.db["CosyncAsset"]

        def ok():
            self._upload_error({"filePath": {"$regex": rx}})
            return assets.count_documents({"filePath": {"$regex": rx}, "_partition": PARTITION,
                                           "status": "active"}) >= count
        wait_for(ok, timeout, f"{count} CosyncAsset records under {self.wr}/{rel_dir}",
                 first=0.05, cap=1.0)


class AssetfsWriteback(Assetfs):
    """assetfs -o writeback: close() returns once the data is staged on local disk and a
    pool of workers uploads; measured only on the write workloads (reads are the same
    code as the default mode), still until durable (CosyncAsset active)."""
    slug = "assetfs-wb"
    label = "assetfs (write-back)"
    write_only = True
    wr = "wr-wb"
    opts = ",writeback"

    def describe(self):
        return (f"`assetfs MNT -f -o cache_dir=DIR,uid={UID},writeback`, same broker")


def all_targets(bench):
    return [Assetfs(bench), AssetfsWriteback(bench), S3fs(bench), Rclone(bench, "off"),
            Rclone(bench, "writes")]
