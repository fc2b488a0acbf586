#!/usr/bin/env python3
"""Independent S3 client for stackback's tests (boto3, not our code).

Environment: S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION.
  populate BUCKET [--bulk N] [--big-mib N]   create BUCKET and fill it with awkward objects
  dump BUCKET                                one JSON line per object, sorted by key
  put BUCKET KEY TEXT                        put one small object
  putfile BUCKET KEY PATH                    upload a local file (multipart when large)
  delete BUCKET KEY                          delete one object
  mkbucket BUCKET                            create an empty bucket
  buckets PREFIX                             names of the buckets starting with PREFIX, one a line
  presign BUCKET KEY                         a GET URL signed for S3_ENDPOINT, valid 10 minutes
  uploads BUCKET                             one JSON line per multipart upload not yet completed
"""
import concurrent.futures
import hashlib
import json
import os
import sys

import boto3
from botocore.config import Config

os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")


def client():
    return boto3.client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT"],
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5},
            max_pool_connections=32,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


AWKWARD = [
    # key, body, content type, extra args
    ("nested/prefix/a/b/c.pdf", b"%PDF-1.4 nested\n" * 100, "application/pdf", {"Metadata": {"owner": "alice", "course": "cos-301"}}),
    ("a//b", b"double slash", "text/plain; charset=utf-8", {}),
    ("./x", b"dot slash", "text/plain", {}),
    ("../x", b"dot dot slash", "text/plain", {}),
    ("/leading-slash.txt", b"leading slash", "text/plain", {}),
    ("long/" + "k" * 150 + ".pdf", b"long key", "application/pdf", {}),
    ("dirmarker/", b"", "application/x-directory", {}),
    ("empty.bin", b"", "application/octet-stream", {}),
    ("unicode/\u00fcber/\u6771\u4eac report.pdf", "unicode \u00fc".encode(), "application/pdf", {"Metadata": {"lang": "de"}}),
    ("emoji/\U0001F389 party.txt", b"emoji", "text/plain", {}),
    ("spaces and+plus=sign&amp.txt", b"specials", "text/plain", {}),
    ("conflict", b"file at a prefix", "text/plain", {}),
    ("conflict/child.txt", b"child of a file", "text/plain", {}),
    ("headers/styled.css", b"body{}", "text/css", {"CacheControl": "max-age=3600", "ContentDisposition": "attachment; filename=\"styled.css\"", "ContentLanguage": "en", "Metadata": {"x-build": "42"}}),
    ("images/logo.png", bytes(range(256)) * 40, "image/png", {}),
    ("data/report.json", json.dumps({"ok": True}).encode(), "application/json", {"Metadata": {"a": "1", "b": "two"}}),
]


def populate(bucket, bulk, big_mib):
    c = client()
    c.create_bucket(Bucket=bucket)

    def put(item):
        key, body, ctype, extra = item
        c.put_object(Bucket=bucket, Key=key, Body=body, ContentType=ctype, **extra)

    items = list(AWKWARD)
    for i in range(bulk):
        items.append((f"bulk/{i // 100:02d}/object-{i:05d}.txt", f"bulk object {i}\n".encode() * (1 + i % 7), "text/plain", {"Metadata": {"n": str(i)}}))
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(put, items))
    if big_mib:
        from boto3.s3.transfer import TransferConfig

        path = f"/tmp/stackback-big-{os.getpid()}.bin"
        with open(path, "wb") as f:
            block = hashlib.sha256(b"seed").digest() * 32768  # 1 MiB
            for i in range(big_mib):
                f.write(hashlib.sha256(str(i).encode()).digest() + block[32:])
        try:
            c.upload_file(path, bucket, "big/video.bin", ExtraArgs={"ContentType": "video/mp4", "Metadata": {"size": "big"}},
                          Config=TransferConfig(multipart_chunksize=16 << 20))
        finally:
            os.remove(path)


def dump(bucket):
    c = client()
    keys = []
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [o["Key"] for o in page.get("Contents", [])]

    def describe(key):
        o = c.get_object(Bucket=bucket, Key=key)
        h = hashlib.sha256()
        for chunk in o["Body"].iter_chunks(1 << 20):
            h.update(chunk)
        return {
            "key": key,
            "size": o["ContentLength"],
            "sha256": h.hexdigest(),
            "content_type": o.get("ContentType"),
            "metadata": o.get("Metadata", {}),
            "cache_control": o.get("CacheControl"),
            "content_disposition": o.get("ContentDisposition"),
            "content_language": o.get("ContentLanguage"),
        }

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        rows = list(pool.map(describe, keys))
    for r in sorted(rows, key=lambda r: r["key"]):
        print(json.dumps(r, sort_keys=True, ensure_ascii=False))


def main():
    cmd, bucket = sys.argv[1], sys.argv[2]
    if cmd == "populate":
        args = sys.argv[3:]
        bulk = int(args[args.index("--bulk") + 1]) if "--bulk" in args else 0
        big = int(args[args.index("--big-mib") + 1]) if "--big-mib" in args else 0
        populate(bucket, bulk, big)
    elif cmd == "dump":
        dump(bucket)
    elif cmd == "put":
        client().put_object(Bucket=bucket, Key=sys.argv[3], Body=sys.argv[4].encode(), ContentType="text/plain")
    elif cmd == "putfile":
        from boto3.s3.transfer import TransferConfig

        client().upload_file(sys.argv[4], bucket, sys.argv[3], Config=TransferConfig(multipart_chunksize=16 << 20))
    elif cmd == "delete":
        client().delete_object(Bucket=bucket, Key=sys.argv[3])
    elif cmd == "presign":
        print(client().generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": sys.argv[3]}, ExpiresIn=600))
    elif cmd == "mkbucket":
        client().create_bucket(Bucket=bucket)
    elif cmd == "buckets":
        for b in client().list_buckets().get("Buckets", []):
            if b["Name"].startswith(bucket):
                print(b["Name"])
    elif cmd == "uploads":
        for page in client().get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
            for u in page.get("Uploads", []):
                print(json.dumps({"key": u["Key"], "upload_id": u["UploadId"]}, sort_keys=True))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
