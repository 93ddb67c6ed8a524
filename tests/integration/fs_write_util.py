"""Helpers for the write-path tests: hashes, waiting for assets, reading URLs."""
import hashlib
import os
import subprocess

import requests

from procs import wait_for


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def write_random(path, size, seed=None):
    data = os.urandom(size)
    with open(path, "wb") as f:
        f.write(data)
    return data


def active_asset(db, file_path, partition=None):
    q = {"filePath": file_path, "status": "active"}
    if partition:
        q["_partition"] = partition
    return db.CosyncAsset.find_one(q)


def wait_asset(db, file_path, partition=None, timeout=30):
    return wait_for(lambda: active_asset(db, file_path, partition), timeout,
                    f"asset {file_path} to be completed")


def staged_files(cache_dir):
    """Staging files and journals under cache_dir (not the session lock)."""
    out = []
    for root, _, files in os.walk(cache_dir):
        out += [os.path.join(root, f) for f in files if f != "lock"]
    return out


def wait_no_staging(mount, timeout=30):
    """Staging files (and their journals) are deleted once their assets are complete."""
    def empty():
        return not staged_files(mount.cache_dir)
    return wait_for(empty, timeout, "the staging folder to empty")


def http_get(url):
    r = requests.get(url, timeout=30)
    r.raise_for_status()
    return r.content


def vips_size(path):
    w = subprocess.run(["vipsheader", "-f", "width", path], capture_output=True, text=True,
                       check=True).stdout.strip()
    h = subprocess.run(["vipsheader", "-f", "height", path], capture_output=True, text=True,
                       check=True).stdout.strip()
    return int(w), int(h)


def key_of(url, bucket):
    """S3 key from a path-style URL."""
    from urllib.parse import unquote, urlparse
    path = unquote(urlparse(url).path)
    prefix = f"/{bucket}/"
    assert path.startswith(prefix), url
    return path[len(prefix):]
