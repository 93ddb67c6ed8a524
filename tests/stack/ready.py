"""Readiness probes for tests/stack/up: one attempt each, exit 0 when ready."""
import sys


def mongo(uri):
    import pymongo
    c = pymongo.MongoClient(uri, serverSelectionTimeoutMS=300, connectTimeoutMS=300)
    c.admin.command("ping")


def s3(endpoint, region, bucket, key, secret):
    import boto3
    from botocore.config import Config
    s3c = boto3.client("s3", endpoint_url=endpoint, region_name=region,
                       aws_access_key_id=key, aws_secret_access_key=secret,
                       config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                     connect_timeout=1, read_timeout=5))
    names = [b["Name"] for b in s3c.list_buckets().get("Buckets", [])]
    if bucket not in names:
        s3c.create_bucket(Bucket=bucket)
    s3c.head_bucket(Bucket=bucket)


if __name__ == "__main__":
    try:
        {"mongo": mongo, "s3": s3}[sys.argv[1]](*sys.argv[2:])
    except Exception as e:  # noqa: BLE001 - any failure means "not ready yet"
        print(f"not ready: {e}", file=sys.stderr)
        sys.exit(1)
