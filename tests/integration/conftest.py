"""Shared fixtures for the integration suite: the real stack (FerretDB + versitygw),
independent clients (pymongo, boto3), and the built binaries.

tests/run brings the stack up once and points ASSETFS_STACK_DIR at it; run alone,
this conftest brings up its own stack for the session and takes it down at the end.
Every process a test starts is recorded by PID and stopped by the fixture that
started it.
"""
import os
import shlex
import subprocess
import uuid

import boto3
import pymongo
import pytest
from botocore.config import Config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytest_plugins = ["procs", "broker_fixtures", "fs_fixtures"]


def _read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("export "):
                k, v = line[len("export "):].split("=", 1)
                env[k] = shlex.split(v)[0] if v else ""
    return env


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """dict of the stack's ASSETFS_*/AWS_* variables."""
    d = os.environ.get("ASSETFS_STACK_DIR")
    own = None
    if not d:
        own = str(tmp_path_factory.mktemp("stack"))
        subprocess.run([os.path.join(REPO, "tests/stack/up"), own], check=True, timeout=1800)
        d = own
    try:
        yield _read_env(os.path.join(d, "env"))
    finally:
        if own:
            subprocess.run([os.path.join(REPO, "tests/stack/down"), own], check=False, timeout=60)


@pytest.fixture(scope="session")
def build_dir():
    d = os.environ.get("ASSETFS_BUILD_DIR", os.path.join(REPO, "build"))
    for exe in ("assetfs", "assetfs-broker"):
        assert os.access(os.path.join(d, exe), os.X_OK), f"{exe} not built in {d} (run tests/run)"
    return d


@pytest.fixture(scope="session")
def mongo_client(stack):
    c = pymongo.MongoClient(stack["ASSETFS_MONGO_URI"])
    yield c
    c.close()


@pytest.fixture
def dbname(mongo_client):
    """A fresh database per test, dropped afterwards, so tests never see each other."""
    name = "t_" + uuid.uuid4().hex[:12]
    yield name
    mongo_client.drop_database(name)


@pytest.fixture
def db(mongo_client, dbname):
    return mongo_client[dbname]


@pytest.fixture(scope="session")
def s3(stack):
    return boto3.client(
        "s3",
        endpoint_url=stack["ASSETFS_S3_ENDPOINT"],
        region_name=stack["ASSETFS_S3_REGION"],
        aws_access_key_id=stack["ASSETFS_S3_ACCESS_KEY"],
        aws_secret_access_key=stack["ASSETFS_S3_SECRET_KEY"],
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )


@pytest.fixture(scope="session")
def bucket(stack):
    return stack["ASSETFS_S3_BUCKET"]
