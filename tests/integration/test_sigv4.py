"""SigV4: the C signer (through tests/tools/sigv4_vectors) agrees with botocore's, an
independent implementation, on thousands of random cases; and URLs it presigns work, or
are refused, on the stack's real S3 server (versitygw checks signatures and expiry).
`assetfs-broker sign` is checked the same way."""
import datetime
import os
import random
import subprocess
import time
import types
import urllib.parse
from unittest import mock

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import botocore.session
import pytest
import requests
from botocore.config import Config

AK = "AKIAIOSFODNN7EXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
N_RANDOM = int(os.environ.get("SIGV4_RANDOM_CASES", "3000"))

REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2",
           "sa-east-1", "me-south-1", "cn-north-1", "local", "garage"]
# (endpoint, virtual-hosted possible); None = AWS's own.
ENDPOINTS = [(None, True), ("http://127.0.0.1:9000", False), ("http://minio.local:9000", True),
             ("https://s3.example.com", True), ("https://s3.example.com:8443", True),
             ("http://[::1]:7070", False), ("http://storage.internal:80", True),
             ("https://s3.example.com:443", True)]
PIECES = (list("abcXYZ019-._~ +%=&?#!*'()[]@:;,$^`{}|\\\"<>") +
          ["/", "//", "é", "日本", "😀", "\u00a0", "\t", "\x7f", "ß", "ü", "%2F", "%20",
           "+", "~", "=", "a b", "..", ".", "Ω", "\u200b"])
CONTENT_TYPES = ["image/jpeg", "video/mp4", "text/plain; charset=utf-8", "application/pdf",
                 "image/png", "application/octet-stream", "audio/mpeg", "x-custom/thing+json"]


@pytest.fixture(scope="module")
def build_dir():
    """Overrides conftest's: these tests need only sigv4_vectors and assetfs-broker."""
    d = os.environ.get("ASSETFS_BUILD_DIR",
                       os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
                           os.path.abspath(__file__)))), "build"))
    assert os.access(os.path.join(d, "sigv4_vectors"), os.X_OK), f"sigv4_vectors not built in {d}"
    return d


def _hex(s):
    if s is None or s == "":
        return "-"
    return s.encode("utf-8").hex()


def _tool(build_dir):
    exe = os.path.join(build_dir, "sigv4_vectors")
    assert os.access(exe, os.X_OK), f"{exe} not built"
    return exe


def _run_tool(build_dir, lines):
    p = subprocess.run([_tool(build_dir)], input="\n".join(lines) + "\n", capture_output=True,
                       text=True, timeout=120, check=True)
    out = p.stdout.split("\n")[:-1]
    assert len(out) == len(lines)
    return out


def presign_line(endpoint, region, bucket, path_style, ak, sk, method, key, sub="",
                 headers=None, expires=60, t="20130524T000000Z"):
    hdr = "\n".join(f"{k}:{v}" for k, v in (headers or {}).items())
    f = [endpoint or "", region, bucket, "1" if path_style else "0", ak, sk, method, key, sub,
         hdr, str(expires), t]
    return "presign " + " ".join(_hex(x) for x in f)


def sign_line(endpoint, region, bucket, path_style, ak, sk, method, key, params=None,
              headers=None, payload_hash="", t="20130524T000000Z"):
    hdr = "\n".join(f"{k}:{v}" for k, v in (headers or {}).items())
    par = "\n".join(k if v is None else f"{k}={v}" for k, v in (params or []))
    f = [endpoint or "", region, bucket, "1" if path_style else "0", ak, sk, method, key or "",
         par, hdr, payload_hash, t]
    return "sign " + " ".join(_hex(x) for x in f)


class _FrozenClock:
    """Freezes botocore.auth's idea of now (it calls datetime.datetime.utcnow())."""

    def __init__(self):
        real = datetime.datetime

        class Fake(real):
            fixed = real(2013, 5, 24)

            @classmethod
            def utcnow(cls):
                return cls.fixed

        self.cls = Fake
        self.patch = mock.patch.object(botocore.auth, "datetime",
                                       types.SimpleNamespace(datetime=Fake))

    def set(self, dt):
        self.cls.fixed = dt

    def __enter__(self):
        self.patch.__enter__()
        return self

    def __exit__(self, *a):
        return self.patch.__exit__(*a)


_clients = {}
_session = botocore.session.get_session()  # one session: it caches the loaded S3 model


def _boto(region, endpoint, style, ak=AK, sk=SK):
    k = (region, endpoint, style, ak, sk)
    if k not in _clients:
        _clients[k] = _session.create_client(
            "s3", region_name=region, endpoint_url=endpoint, aws_access_key_id=ak,
            aws_secret_access_key=sk,
            config=Config(signature_version="s3v4", s3={"addressing_style": style}))
    return _clients[k]


def _split(url):
    u = urllib.parse.urlsplit(url)
    q = urllib.parse.parse_qs(u.query, keep_blank_values=True, strict_parsing=True)
    return u.scheme, u.netloc, u.path, {k: v for k, v in q.items()}


def _random_key(rng):
    n = rng.randint(1, 40)
    key = "".join(rng.choice(PIECES) for _ in range(n))
    if rng.random() < 0.1:
        key = "/" + key
    return key.encode("utf-8")[:1024].decode("utf-8", "ignore") or "k"


def _random_bucket(rng):
    n = rng.randint(3, 30)
    body = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-") for _ in range(n - 2))
    return rng.choice("abcxyz019") + body + rng.choice("abc0123")


def _random_case(rng):
    endpoint, can_virtual = rng.choice(ENDPOINTS)
    region = rng.choice(REGIONS)
    style = "virtual" if can_virtual and rng.random() < 0.5 else "path"
    if endpoint is None and region != "us-east-1":
        # botocore (1.29) sends virtual-hosted requests for every region to the global
        # host; we name the regional one, which AWS prefers. Give botocore the same host.
        endpoint_b = f"https://s3.{region}.amazonaws.com"
    else:
        endpoint_b = endpoint
    method = rng.choice(["GET", "PUT", "HEAD", "DELETE", "UploadPart"])
    t = datetime.datetime(2000, 1, 1) + datetime.timedelta(
        seconds=rng.randint(0, 37 * 365 * 86400))
    return dict(endpoint=endpoint, endpoint_b=endpoint_b, region=region, style=style,
                bucket=_random_bucket(rng), key=_random_key(rng), method=method, time=t,
                expires=rng.choice([1, 60, 3600, 86400, 604800, rng.randint(1, 604800)]),
                ctype=rng.choice(CONTENT_TYPES) if method == "PUT" and rng.random() < 0.6
                else None,
                part=rng.randint(1, 10000),
                upload_id="".join(rng.choice("AZaz09-_.~+/=% ") for _ in range(rng.randint(1, 60))))


def _botocore_url(c, clock):
    clock.set(c["time"])
    cl = _boto(c["region"], c["endpoint_b"], c["style"])
    params = {"Bucket": c["bucket"], "Key": c["key"]}
    op = {"GET": "get_object", "PUT": "put_object", "HEAD": "head_object",
          "DELETE": "delete_object", "UploadPart": "upload_part"}[c["method"]]
    if c["ctype"]:
        params["ContentType"] = c["ctype"]
    if c["method"] == "UploadPart":
        params["PartNumber"] = c["part"]
        params["UploadId"] = c["upload_id"]
    return cl.generate_presigned_url(op, Params=params, ExpiresIn=c["expires"])


def _c_line(c):
    method = "PUT" if c["method"] == "UploadPart" else c["method"]
    sub = ""
    if c["method"] == "UploadPart":
        sub = "partNumber=%d&uploadId=%s" % (c["part"],
                                             urllib.parse.quote(c["upload_id"], safe=""))
    headers = {"content-type": c["ctype"]} if c["ctype"] else None
    return presign_line(c["endpoint"], c["region"], c["bucket"], c["style"] == "path", AK, SK,
                        method, c["key"], sub, headers, c["expires"],
                        c["time"].strftime("%Y%m%dT%H%M%SZ"))


def test_presign_agrees_with_botocore_on_random_cases(build_dir):
    rng = random.Random(int(os.environ.get("SIGV4_SEED", "20130524")))
    cases = [_random_case(rng) for _ in range(N_RANDOM)]
    lines = [_c_line(c) for c in cases]
    out = _run_tool(build_dir, lines)
    asan = os.environ.get("ASSETFS_ASAN_BUILD_DIR")
    if asan and os.access(os.path.join(asan, "sigv4_vectors"), os.X_OK):
        # the same inputs under ASan/UBSan: any memory error aborts the tool
        assert _run_tool(asan, lines) == out
    mismatches = []
    with _FrozenClock() as clock:
        for c, got in zip(cases, out):
            want = _botocore_url(c, clock)
            if got.startswith("ERR") or _split(got) != _split(want):
                mismatches.append((c, got, want))
    for c, got, want in mismatches[:5]:
        print("case", c, "\n  C      ", got, "\n  boto   ", want)
    assert not mismatches, f"{len(mismatches)} of {len(cases)} differ"
    # The random cases covered what they should.
    assert sum(1 for c in cases if c["style"] == "virtual") > N_RANDOM // 5
    assert sum(1 for c in cases if c["key"].startswith("/")) > N_RANDOM // 20
    assert sum(1 for c in cases if c["method"] == "UploadPart") > N_RANDOM // 10
    assert sum(1 for c in cases if c["ctype"]) > N_RANDOM // 20


def test_header_signing_agrees_with_botocore(build_dir):
    """Authorization-header signing for the broker's own requests, against botocore's
    S3SigV4Auth given the same method, path, raw query parameters and headers."""
    rng = random.Random(7)
    cases = []
    for _ in range(500):
        endpoint, can_virtual = rng.choice(ENDPOINTS[1:])
        region = rng.choice(REGIONS)
        path_style = not can_virtual or rng.random() < 0.5
        bucket = _random_bucket(rng)
        kind = rng.choice(["head", "delete", "list", "deletes", "create", "complete", "abort"])
        key, params, body, method, headers = None, [], b"", "GET", {}
        if kind in ("head", "delete", "create", "complete", "abort"):
            key = _random_key(rng)
        if kind == "head":
            method = "HEAD"
        elif kind == "delete":
            method = "DELETE"
        elif kind == "list":
            params = [("list-type", "2"), ("prefix", _random_key(rng))]
            if rng.random() < 0.5:
                params.append(("continuation-token", "".join(
                    rng.choice("AZaz09+/=") for _ in range(40))))
            params.append(("max-keys", str(rng.randint(1, 1000))))
        elif kind == "deletes":
            method, params = "POST", [("delete", None)]
            body = b"<Delete>" + os.urandom(rng.randint(0, 64)).hex().encode() + b"</Delete>"
            headers["content-md5"] = "XrY7u+Ae7tCTyyK7j1rNww=="
            headers["content-type"] = "application/xml"
        elif kind == "create":
            method, params = "POST", [("uploads", None)]
            headers["content-type"] = rng.choice(CONTENT_TYPES)
        elif kind == "complete":
            method, params = "POST", [("uploadId", "x+y/z=")]
            body = b"<CompleteMultipartUpload></CompleteMultipartUpload>"
        elif kind == "abort":
            method, params = "DELETE", [("uploadId", "abc~ def")]
        import hashlib
        ph = hashlib.sha256(body).hexdigest()
        t = datetime.datetime(2000, 1, 1) + datetime.timedelta(seconds=rng.randint(0, 10 ** 9))
        cases.append(dict(endpoint=endpoint, region=region, path_style=path_style, bucket=bucket,
                          key=key, params=params, method=method, headers=headers, ph=ph, t=t))
    lines = [sign_line(c["endpoint"], c["region"], c["bucket"], c["path_style"], AK, SK,
                       c["method"], c["key"], c["params"], c["headers"], c["ph"],
                       c["t"].strftime("%Y%m%dT%H%M%SZ")) for c in cases]
    out = _run_tool(build_dir, lines)
    creds = botocore.credentials.Credentials(AK, SK)
    bad = []
    with _FrozenClock() as clock:
        for c, got in zip(cases, out):
            assert not got.startswith("ERR"), got
            url, auth, amz_date = got.split("\t")
            # botocore builds its own canonical query from the raw params
            base = url.split("?")[0]
            req = botocore.awsrequest.AWSRequest(
                method=c["method"], url=base,
                params={k: ("" if v is None else v) for k, v in c["params"]},
                headers=dict(c["headers"]))
            req.context["payload_signing_enabled"] = True
            req.headers["X-Amz-Content-SHA256"] = c["ph"]
            clock.set(c["t"])
            signer = botocore.auth.S3SigV4Auth(creds, "s3", c["region"])
            signer.payload = lambda r, ph=c["ph"]: ph
            signer.add_auth(req)
            if req.headers["Authorization"] != auth or req.headers["X-Amz-Date"] != amz_date:
                bad.append((c, auth, req.headers["Authorization"]))
            # and the URL's query is the same as botocore would send
            prepared = req.prepare()
            if urllib.parse.urlsplit(prepared.url).path != urllib.parse.urlsplit(url).path:
                bad.append((c, url, prepared.url))
    for b in bad[:5]:
        print(b)
    assert not bad, f"{len(bad)} of {len(cases)} differ"


# ---------------- against the real S3 server ----------------

def _target(stack):
    return (stack["ASSETFS_S3_ENDPOINT"], stack["ASSETFS_S3_REGION"], stack["ASSETFS_S3_BUCKET"],
            True, stack["ASSETFS_S3_ACCESS_KEY"], stack["ASSETFS_S3_SECRET_KEY"])


def _now():
    return datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%SZ")


def c_presign(build_dir, stack, method, key, sub="", headers=None, expires=300, t=None):
    out = _run_tool(build_dir, [presign_line(*_target(stack), method, key, sub, headers, expires,
                                             t or _now())])[0]
    assert out.startswith("http"), out
    return out


def _tamper(url):
    u = urllib.parse.urlsplit(url)
    q = urllib.parse.parse_qsl(u.query, keep_blank_values=True)
    q = [(k, (v[:-1] + ("0" if v[-1] != "0" else "1")) if k == "X-Amz-Signature" else v)
         for k, v in q]
    return urllib.parse.urlunsplit(u._replace(query=urllib.parse.urlencode(q, quote_via=urllib.parse.quote)))


# Keys the posix backend of versitygw can store (it maps keys to file paths, so no
# empty or dot segments); the encoding rules are the same for every key.
REAL_KEYS = ["plain.txt", "with space.jpg", "plus+sign.png", "percent%25and%.bin",
             "tilde~eq=amp&q?hash#.dat", "unicodé/日本/😀.mov", "excl!star*quote'paren().x",
             "brackets[]@colon:semi;comma,dollar$.y", "u/user=1/a b/c+d.jpeg",
             "nbsp\u00a0zero\u200bwidth.txt"]


def test_real_put_get_head_delete_with_nasty_keys(build_dir, stack, s3, bucket):
    prefix = f"sigv4/{time.time_ns()}/"
    for i, k in enumerate(REAL_KEYS):
        key = prefix + k
        body = f"body {i} {k}".encode()
        url = c_presign(build_dir, stack, "PUT", key, headers={"content-type": "image/jpeg"})
        r = requests.put(url, data=body, headers={"Content-Type": "image/jpeg"}, timeout=10)
        assert r.status_code == 200, (k, r.status_code, r.text)
        got = s3.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == body
        assert got["ContentType"] == "image/jpeg"
        r = requests.get(c_presign(build_dir, stack, "GET", key), timeout=10)
        assert r.status_code == 200 and r.content == body, (k, r.status_code)
        r = requests.head(c_presign(build_dir, stack, "HEAD", key), timeout=10)
        assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(body)
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]}
    assert listed == {prefix + k for k in REAL_KEYS}
    for k in REAL_KEYS:
        r = requests.delete(c_presign(build_dir, stack, "DELETE", prefix + k), timeout=10)
        assert r.status_code == 204, (k, r.status_code, r.text)
    assert s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0) == 0


def test_real_put_content_type_is_enforced(build_dir, stack, s3, bucket):
    key = f"sigv4/{time.time_ns()}/ct.jpg"
    url = c_presign(build_dir, stack, "PUT", key, headers={"content-type": "image/jpeg"})
    r = requests.put(url, data=b"x", headers={"Content-Type": "text/html"}, timeout=10)
    assert r.status_code == 403, r.status_code
    r = requests.put(url, data=b"x", timeout=10)  # no Content-Type at all
    assert r.status_code == 403, r.status_code
    r = requests.put(url, data=b"jpeg", headers={"Content-Type": "image/jpeg"}, timeout=10)
    assert r.status_code == 200
    # with curl too: an independent HTTP client
    subprocess.run(["curl", "-sf", "-X", "PUT", "-H", "Content-Type: image/jpeg",
                    "--data-binary", "curl", url], check=True, timeout=10)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"curl"


def test_real_range_get(build_dir, stack, s3, bucket):
    key = f"sigv4/{time.time_ns()}/range.bin"
    data = os.urandom(100000)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    url = c_presign(build_dir, stack, "GET", key)
    for rng, want in [("bytes=0-9", data[:10]), ("bytes=99990-", data[99990:]),
                      ("bytes=-5", data[-5:]), ("bytes=5000-69999", data[5000:70000])]:
        r = requests.get(url, headers={"Range": rng}, timeout=10)
        assert r.status_code == 206, (rng, r.status_code)
        assert r.content == want, rng


def test_real_upload_part(build_dir, stack, s3, bucket):
    key = f"sigv4/{time.time_ns()}/multi part+.bin"
    mpu = s3.create_multipart_upload(Bucket=bucket, Key=key)
    uid = mpu["UploadId"]
    parts, blobs = [], [os.urandom(5 * 1024 * 1024), os.urandom(1234)]
    for n, blob in enumerate(blobs, 1):
        sub = f"partNumber={n}&uploadId={urllib.parse.quote(uid, safe='')}"
        url = c_presign(build_dir, stack, "PUT", key, sub=sub)
        r = requests.put(url, data=blob, timeout=30)
        assert r.status_code == 200, r.text
        parts.append({"PartNumber": n, "ETag": r.headers["ETag"]})
    # a part URL is bound to its part number
    url = c_presign(build_dir, stack, "PUT", key,
                    sub=f"partNumber=1&uploadId={urllib.parse.quote(uid, safe='')}")
    assert requests.put(url.replace("partNumber=1", "partNumber=2"), data=b"x",
                        timeout=10).status_code == 403
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid,
                                 MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"".join(blobs)


def test_real_refusals(build_dir, stack, s3, bucket):
    key = f"sigv4/{time.time_ns()}/refuse.txt"
    s3.put_object(Bucket=bucket, Key=key, Body=b"keep")
    url = c_presign(build_dir, stack, "GET", key)
    assert requests.get(url, timeout=10).status_code == 200
    assert requests.get(_tamper(url), timeout=10).status_code == 403
    # another key, method, or a longer lifetime under the same signature
    assert requests.get(url.replace("refuse.txt", "refusf.txt"), timeout=10).status_code == 403
    assert requests.put(url, data=b"evil", timeout=10).status_code == 403
    assert requests.delete(url, timeout=10).status_code == 403
    assert requests.get(url.replace("X-Amz-Expires=300", "X-Amz-Expires=301"),
                        timeout=10).status_code == 403
    # expired: signed two hours ago for 60 s
    past = (datetime.datetime.utcnow() - datetime.timedelta(hours=2)).strftime("%Y%m%dT%H%M%SZ")
    old = c_presign(build_dir, stack, "GET", key, expires=60, t=past)
    assert requests.get(old, timeout=10).status_code == 403
    # a short lifetime that does run out while we wait
    short = c_presign(build_dir, stack, "GET", key, expires=1)
    assert requests.get(short, timeout=10).status_code == 200
    time.sleep(2.1)
    assert requests.get(short, timeout=10).status_code == 403
    # wrong secret
    t = list(_target(stack))
    t[5] = t[5][:-1] + ("A" if t[5][-1] != "A" else "B")
    wrong = _run_tool(build_dir, [presign_line(*t, "GET", key, t=_now())])[0]
    assert requests.get(wrong, timeout=10).status_code == 403
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"keep"


def test_expiry_bounds_rejected_by_signer(build_dir, stack):
    for bad in (0, -1, 604801, 10 ** 9):
        out = _run_tool(build_dir, [presign_line(*_target(stack), "GET", "k", expires=bad,
                                                 t=_now())])[0]
        assert out.startswith("ERR 22 ") and "604800" in out, out
    assert _run_tool(build_dir, [presign_line(*_target(stack), "GET", "k", expires=604800,
                                              t=_now())])[0].startswith("http")


# ---------------- assetfs-broker sign ----------------

def _broker_sign(build_dir, stack, *args):
    env = dict(os.environ)
    env.update(stack)
    return subprocess.run([os.path.join(build_dir, "assetfs-broker"), "sign", *args], env=env,
                          capture_output=True, text=True, timeout=30)


def _broker_dispatches_sign(build_dir, stack):
    r = _broker_sign(build_dir, stack, "--method", "GET", "--key", "probe")
    return r.returncode == 0 and r.stdout.startswith("http")


def test_broker_sign_command(build_dir, stack, s3, bucket):
    if not _broker_dispatches_sign(build_dir, stack):
        pytest.skip("assetfs-broker does not dispatch `sign` yet")
    key = f"sigv4/{time.time_ns()}/cli é+.txt"
    r = _broker_sign(build_dir, stack, "--method", "PUT", "--key", key, "--content-type",
                     "text/plain")
    assert r.returncode == 0, r.stderr
    url = r.stdout.strip()
    assert "\n" not in url and "X-Amz-SignedHeaders=content-type%3Bhost" in url
    assert requests.put(url, data=b"cli", headers={"Content-Type": "text/plain"},
                        timeout=10).status_code == 200
    r = _broker_sign(build_dir, stack, "--method", "GET", "--key", key, "--expires", "120")
    assert r.returncode == 0 and "X-Amz-Expires=120" in r.stdout
    assert requests.get(r.stdout.strip(), timeout=10).content == b"cli"
    # --time makes the output reproducible, and equal to the vector tool's
    r1 = _broker_sign(build_dir, stack, "--method", "HEAD", "--key", key, "--time",
                      "20300101T000000Z", "--expires", "60")
    want = _run_tool(build_dir, [presign_line(*_target(stack), "HEAD", key, expires=60,
                                              t="20300101T000000Z")])[0]
    assert r1.stdout.strip() == want
    r = _broker_sign(build_dir, stack, "--method", "DELETE", "--key", key)
    assert requests.delete(r.stdout.strip(), timeout=10).status_code == 204
    # usage errors: exit 2 with a message, nothing on stdout
    for args in (["--method", "GET"], ["--key", "k"], ["--method", "POST", "--key", "k"],
                 ["--method", "GET", "--key", "k", "--expires", "604801"],
                 ["--method", "GET", "--key", "k", "--expires", "0"],
                 ["--method", "GET", "--key", "k", "--expires", "12x"],
                 ["--method", "GET", "--key", "k", "--time", "yesterday"],
                 ["--method", "GET", "--key", "k", "--bogus"], ["--method"]):
        r = _broker_sign(build_dir, stack, *args)
        assert r.returncode == 2, (args, r.returncode, r.stdout, r.stderr)
        assert r.stdout == "" and r.stderr.strip(), args
