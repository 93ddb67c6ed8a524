"""The broker's command line without a database: `assetfs-broker keygen FILE` (issue 14,
auth=required: the key files, their modes, the public line, checked against OpenSSL's own
reading of the key; an existing key is never overwritten; usage errors exit 2), and
settings from the environment that are not valid stop it with the variable's name, and no
secret stays on its command line."""
import base64
import os
import stat
import subprocess
import time

from broker_fixtures import broker_exe
from procs import wait_for


def keygen(build_dir, *args):
    return subprocess.run([broker_exe(build_dir), "keygen", *args], capture_output=True,
                          text=True, timeout=30)


def test_keygen_writes_a_pair_openssl_reads(build_dir, tmp_path):
    key = tmp_path / "client.key"
    r = keygen(build_dir, str(key))
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert len(base64.b64decode(line, validate=True)) == 32
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(f"{key}.pub").st_mode) == 0o644
    assert open(f"{key}.pub").read() == line + "\n"
    assert "BEGIN PRIVATE KEY" in key.read_text()  # PKCS#8 PEM
    # OpenSSL, an independent reader: the same Ed25519 public key.
    der = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER"],
                         capture_output=True, check=True, timeout=30).stdout
    assert base64.b64encode(der[-32:]).decode() == line
    text = subprocess.run(["openssl", "pkey", "-in", str(key), "-noout", "-text"],
                          capture_output=True, text=True, check=True, timeout=30).stdout
    assert "ED25519" in text


def test_keygen_never_overwrites_and_explains(build_dir, tmp_path):
    key = tmp_path / "k"
    assert keygen(build_dir, str(key)).returncode == 0
    before = key.read_bytes(), open(f"{key}.pub").read()
    r = keygen(build_dir, str(key))
    assert r.returncode == 1 and "File exists" in r.stderr
    assert (key.read_bytes(), open(f"{key}.pub").read()) == before
    r = keygen(build_dir)
    assert r.returncode == 2 and "usage: assetfs-broker keygen FILE" in r.stderr
    r = keygen(build_dir, str(tmp_path / "no-such-dir" / "k"))
    assert r.returncode == 1 and "cannot create" in r.stderr


def test_bad_environment_value_stops_the_broker(build_dir, tmp_path):
    """An ASSETFS_* value that is not valid stops the broker with the variable's name
    (it used to be skipped: ASSETFS_KEEP_VERSIONS=y meant "delete old versions")."""
    env = {"PATH": os.environ.get("PATH", ""), "ASSETFS_KEEP_VERSIONS": "y",
           "ASSETFS_S3_BUCKET": "b", "ASSETFS_S3_ACCESS_KEY": "a", "ASSETFS_S3_SECRET_KEY": "s",
           "ASSETFS_MONGO_URI": "mongodb://127.0.0.1:9", "ASSETFS_DATABASE": "d"}
    r = subprocess.run([broker_exe(build_dir)], env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1
    assert "ASSETFS_KEEP_VERSIONS" in r.stderr and "not a boolean" in r.stderr


def test_no_secret_stays_on_the_command_line(build_dir, start_broker, stack):
    """The S3 secret is refused on the command line; a MongoDB password given there is
    masked in /proc/PID/cmdline once the broker has read it (issue 20)."""
    r = subprocess.run([broker_exe(build_dir), "--set", "s3_secret_key=abc"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "must not be on the command line" in r.stderr
    host = stack["ASSETFS_MONGO_URI"].split("://", 1)[1].split("/", 1)[0]
    b = start_broker("-m", f"mongodb://someone:Hunter2pw@{host}/", wait=False)
    cmdline = b""
    for _ in range(100):  # /proc/PID/cmdline may read empty right after the exec
        with open(f"/proc/{b.pid}/cmdline", "rb") as f:
            cmdline = f.read()
        if b"someone:" in cmdline and b"Hunter2pw" not in cmdline:
            break
        time.sleep(0.05)
    assert b"Hunter2pw" not in cmdline and b"someone:*********@" in cmdline, (cmdline, b.log())
    assert "masked now" in b.log() or wait_for(lambda: "masked now" in b.log(), 10, "warning")
    assert "Hunter2pw" not in b.log()


def test_s3_that_refuses_head_stops_the_broker(start_broker):
    """Wrong credentials, or credentials without s3:ListBucket (S3 then answers 403 for
    every missing key), would leave every upload deferred for ever: the broker stops at
    start and says which permission to check (issue 20)."""
    b = start_broker(env={"ASSETFS_S3_SECRET_KEY": "not-the-secret"}, wait=False)
    assert b.proc.wait(timeout=30) == 1
    assert "s3:ListBucket" in b.log() and "not-the-secret" not in b.log(), b.log()
