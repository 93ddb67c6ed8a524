"""Mounting: options, --help/--version, bad options, daemon mode through the fstab
helper (contrib/mount.assetfs), read-only mounts, chmod refusal."""
import errno
import os
import subprocess

import pytest

from conftest import REPO
from fs_fixtures import is_mounted
from fs_write_util import wait_asset
from procs import wait_for


def test_help_and_version(build_dir):
    exe = os.path.join(build_dir, "assetfs")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0
    for opt in ("uid=", "session_id=", "partitions=", "upload_partition=",
                "expiration_hours=", "cache_dir=", "close_timeout=", "allow_other",
                "multipart_threshold=", "multipart_parallel="):
        assert opt in out.stdout + out.stderr, opt
    v = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    assert v.returncode == 0 and v.stdout.startswith("assetfs ")


@pytest.mark.parametrize("opt,msg", [("expiration_hours=500", "expiration_hours"),
                                     ("close_timeout=abc", "close_timeout"),
                                     ("cache_mb=1", "cache_mb"),
                                     ("multipart_threshold=1M", "multipart_threshold"),
                                     ("multipart_threshold=6G", "multipart_threshold"),
                                     ("multipart_parallel=0", "multipart_parallel"),
                                     ("db_timeout=0", "db_timeout")])
def test_bad_options_fail_before_mounting(build_dir, fs_env, tmp_path, opt, msg):
    mnt = tmp_path / "m"
    mnt.mkdir()
    r = subprocess.run([os.path.join(build_dir, "assetfs"), str(mnt), "-f", "-o", opt],
                       env=fs_env, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and msg in r.stderr
    assert not is_mounted(mnt)


def test_unsafe_cache_dir_is_refused(build_dir, fs_env, tmp_path):
    """The cache folder holds data not uploaded yet: a symbolic link, a folder others can
    write, or one of another user is refused before mounting, saying why (issue 20: the
    no-HOME default /var/tmp/assetfs-<uid> is a name anyone can create first)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    for d, msg in ((link, "symbolic link"), (open_dir, "written by group or others"),
                   (theirs, "belongs to uid 65534")):
        r = subprocess.run([os.path.join(build_dir, "assetfs"), str(mnt), "-f", "-o",
                            f"uid=x,cache_dir={d}"], env=fs_env, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode != 0 and msg in r.stderr, (d, r.stderr)
        assert not os.path.ismount(mnt)


def test_unreachable_mongodb_fails_loudly(build_dir, fs_env, tmp_path):
    mnt = tmp_path / "m"
    mnt.mkdir()
    env = dict(fs_env, ASSETFS_MONGO_URI="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500")
    r = subprocess.run([os.path.join(build_dir, "assetfs"), str(mnt), "-f"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "MongoDB" in r.stderr


def test_fstab_helper_daemon_mode(broker, build_dir, fs_env, stack, dbname, db, tmp_path):
    mnt = tmp_path / "m"
    mnt.mkdir()
    env = {k: v for k, v in fs_env.items() if not k.startswith("ASSETFS_")}
    env["PATH"] = build_dir + ":" + env.get("PATH", "/usr/bin:/bin")
    opts = (f"rw,_netdev,noauto,uid=helper,cache_dir={tmp_path / 'cache'},"
            f"mongo_uri={stack['ASSETFS_MONGO_URI']}")
    r = subprocess.run([os.path.join(REPO, "contrib/mount.assetfs"), dbname, str(mnt), "-o",
                        opts], env=env, capture_output=True, text=True, timeout=60)
    try:
        assert r.returncode == 0, r.stderr
        assert is_mounted(mnt)  # daemonised: mount returned with the filesystem up
        with open(mnt / "user_id=helper" / "h.txt", "wb") as f:
            f.write(b"via fstab")
        a = wait_asset(db, "h.txt")
        assert a["uid"] == "helper" and a["_partition"] == "user_id=helper"
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False, timeout=30)
    wait_for(lambda: not is_mounted(mnt), 30, "the unmount")


def test_read_only_and_refuse_chmod(broker, start_mount, db):
    rw = start_mount("refuse_chmod")
    with open(rw.p("x.txt"), "wb") as f:
        f.write(b"x")
    wait_asset(db, "x.txt")
    with pytest.raises(PermissionError):
        os.chmod(rw.p("x.txt"), 0o600)
    ro = start_mount("ro", uid="reader", name="ro")
    part = os.path.join(ro.path, "user_id=tester")
    wait_for(lambda: os.path.exists(os.path.join(part, "x.txt")), 15, "the file in the ro mount")
    assert open(os.path.join(part, "x.txt"), "rb").read() == b"x"
    for op in (lambda: open(os.path.join(part, "y.txt"), "wb"),
               lambda: os.unlink(os.path.join(part, "x.txt")),
               lambda: os.mkdir(os.path.join(part, "d"))):
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == errno.EROFS


def test_mongodb_that_stops_answering_fails_operations_in_db_timeout(broker, start_mount, stack,
                                                                      tmp_path):
    """A MongoDB that keeps its connections but stops answering (a hung server, a
    half-dead network path) fails the operations waiting on it after db_timeout (EIO),
    instead of holding FUSE threads for libmongoc's 5 minutes; once it answers again, so
    does the mount."""
    import time
    from tcp_proxy import TcpProxy
    hostport = stack["ASSETFS_MONGO_URI"].split("://", 1)[1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    proxy = TcpProxy(host, int(port)).start()
    try:
        uri = stack["ASSETFS_MONGO_URI"].replace(hostport, f"127.0.0.1:{proxy.port}")
        m = start_mount("db_timeout=2", "attr_ttl=0", "list_ttl=0",
                        env={"ASSETFS_MONGO_URI": uri})
        os.listdir(m.p())
        proxy.stalled = True
        t0 = time.monotonic()
        with pytest.raises(OSError) as e:
            os.stat(m.p("not-there-1.bin"))
        took = time.monotonic() - t0
        assert e.value.errno in (errno.EIO, errno.ETIMEDOUT), e.value
        assert took < 20, f"a stat waited {took:.1f} s on a silent MongoDB"
        print(f"stat on a silent MongoDB failed after {took:.1f} s")
        proxy.stalled = False
        wait_for(lambda: os.listdir(m.p()) is not None, 30, "the mount to answer again")
    finally:
        proxy.stalled = False
        proxy.close()
