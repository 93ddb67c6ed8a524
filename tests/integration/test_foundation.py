"""Proof that the parts of the test stack are real: a SigV4-checking S3 server and a
FUSE mount on this machine. (libmongoc against FerretDB: tests/unit/test_mongo_live.c.)"""
import datetime
import os
import subprocess
import time
import urllib.parse

import requests

from fs_fixtures import is_mounted


def _presign(s3, bucket, method, key, expires=300):
    op = {"PUT": "put_object", "GET": "get_object"}[method]
    return s3.generate_presigned_url(op, Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires)


def test_presigned_put_accepted_and_tampered_rejected(s3, bucket):
    key = f"foundation/{time.time_ns()}.bin"
    url = _presign(s3, bucket, "PUT", key)
    r = requests.put(url, data=b"hello", timeout=10)
    assert r.status_code == 200, r.text
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"hello"

    # One character of the signature changed.
    u = urllib.parse.urlsplit(url)
    q = urllib.parse.parse_qsl(u.query)
    q = [(k, (v[:-1] + ("0" if v[-1] != "0" else "1")) if k == "X-Amz-Signature" else v)
         for k, v in q]
    bad = urllib.parse.urlunsplit(u._replace(query=urllib.parse.urlencode(q)))
    r = requests.put(bad, data=b"evil", timeout=10)
    assert r.status_code == 403, r.status_code
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"hello"


def test_presigned_url_used_with_another_method_rejected(s3, bucket):
    key = f"foundation/{time.time_ns()}.bin"
    s3.put_object(Bucket=bucket, Key=key, Body=b"data")
    get_url = _presign(s3, bucket, "GET", key)
    assert requests.get(get_url, timeout=10).content == b"data"
    r = requests.put(get_url, data=b"evil", timeout=10)
    assert r.status_code == 403
    r = requests.delete(get_url, timeout=10)
    assert r.status_code == 403
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"data"


def test_expired_presigned_url_rejected(s3, bucket):
    key = f"foundation/{time.time_ns()}.bin"
    s3.put_object(Bucket=bucket, Key=key, Body=b"data")
    # Sign with a clock 2 hours in the past and a 60 s lifetime: expired an hour ago.
    import botocore.auth
    import botocore.awsrequest
    creds = s3._request_signer._credentials
    req = botocore.awsrequest.AWSRequest(
        method="GET", url=f"{s3.meta.endpoint_url}/{bucket}/{key}")
    signer = botocore.auth.S3SigV4QueryAuth(creds, "s3", s3.meta.region_name, expires=60)
    past = datetime.datetime.utcnow() - datetime.timedelta(hours=2)
    orig = botocore.auth.datetime.datetime

    class Past(orig):
        @classmethod
        def utcnow(cls):
            return past

    botocore.auth.datetime.datetime = Past
    try:
        signer.add_auth(req)
    finally:
        botocore.auth.datetime.datetime = orig
    r = requests.get(req.url, timeout=10)
    assert r.status_code == 403, r.status_code


def test_fuse_mounts_and_unmounts(mount_skeleton):
    mnt, proc = mount_skeleton
    assert is_mounted(mnt)
    # An empty database: only the upload partition of the mount's uid is shown, beside
    # the mount's own status folder.
    assert sorted(os.listdir(mnt)) == [".assetfs", "user_id=skeleton"]
    st = os.stat(mnt)
    assert st.st_mode & 0o040000
    subprocess.run(["fusermount3", "-u", str(mnt)], check=True, timeout=30)
    assert proc.wait(timeout=30) == 0
    assert not is_mounted(mnt)


def test_versions(build_dir):
    for exe in ("assetfs", "assetfs-broker"):
        out = subprocess.run([os.path.join(build_dir, exe), "--version"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
        assert out.startswith(exe + " ")
