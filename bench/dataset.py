#!/usr/bin/env python3
"""Bench-only dataset: a bucket of PDF-like objects, for bench/run.sh (boto3, not our code).

Environment: S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION.
  pdfs BUCKET N [--seed S]   create BUCKET and put N objects of 20-300 KiB into it; prints
                             "OBJECTS BYTES TEXT_OBJECTS IMAGE_OBJECTS" on stdout

A third of the objects (every index divisible by 3) are text-heavy: a "%PDF-1.7" header and
uncompressed page content streams (text operators around lorem sentences), which gzip squeezes
several times. The other two thirds are image-heavy: the same header and a short text page, then
one /DCTDecode image stream of random bytes (an embedded JPEG, incompressible), the shape of
scanned or photographed documents. Each object is generated from its own random.Random seeded with
"SEED-INDEX", so the bucket is byte for byte the same on every run, whatever the thread order.
"""
import concurrent.futures
import os
import random
import sys

import boto3
from botocore.config import Config

os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")

MIN_SIZE = 20 * 1024
MAX_SIZE = 300 * 1024

WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris "
    "nisi aliquip ex ea commodo consequat duis aute irure in reprehenderit voluptate velit esse "
    "cillum fugiat nulla pariatur excepteur sint occaecat cupidatat non proident sunt culpa qui "
    "officia deserunt mollit anim id est laborum schedule course student room lecture semester "
    "invoice total amount due payment reference department faculty exam credit hours monday "
    "tuesday wednesday thursday friday section instructor enrolment capacity building"
).split()


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


def text_lines(seed):
    """4096 lines of a PDF content stream; shared by all objects (a real corpus repeats itself)."""
    rng = random.Random(f"{seed}-lines")
    lines = []
    for i in range(4096):
        sentence = " ".join(rng.choices(WORDS, k=rng.randint(6, 14)))
        lines.append(f"BT /F1 {rng.choice((9, 10, 11, 12))} Tf 72 {720 - (i % 60) * 12} Td ({sentence.capitalize()}.) Tj ET\n".encode())
    return lines


def content_stream(rng, lines, size):
    """About `size` bytes of text operators, made of lines drawn from the pool."""
    picked = rng.choices(lines, k=size // 60 + 1)
    return b"".join(picked)[:size]


def pdf(objects, size):
    """A PDF-shaped file from `objects` (dictionary bytes, stream bytes), padded to `size`."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, (dictionary, stream) in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n<< %s /Length %d >>\nstream\n" % (n, dictionary, len(stream))
        out += stream + b"\nendstream\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    if len(out) < size:  # the generators aim a little low; comments are legal PDF padding
        out[-6:-6] = b"%" + b" " * (size - len(out) - 2) + b"\n"
    return bytes(out)


def make_object(seed, lines, i):
    rng = random.Random(f"{seed}-{i}")
    size = rng.randint(MIN_SIZE, MAX_SIZE)
    if i % 3 == 0:
        # Text-heavy: pages of ~8 KiB content streams.
        kind, objects, left = "text", [], size - 400
        while left > 200:
            n = min(left - 100, 8192)
            objects.append((b"/Type /Page", content_stream(rng, lines, n)))
            left -= n + 100
    else:
        # Image-heavy: one text page (a caption, a title block), then the "JPEG".
        kind = "image"
        text = content_stream(rng, lines, rng.randint(1024, 4096))
        jpeg_len = max(size - len(text) - 600, 1024)
        jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + rng.randbytes(jpeg_len - 11)
        w = rng.choice((1240, 1654, 2480))
        objects = [
            (b"/Type /Page", text),
            (b"/Type /XObject /Subtype /Image /Width %d /Height %d /BitsPerComponent 8 "
             b"/ColorSpace /DeviceRGB /Filter /DCTDecode" % (w, w * 1414 // 1000), jpeg),
        ]
    return f"docs/{i % 50:02d}/doc-{i:05d}.pdf", pdf(objects, size), kind


def pdfs(bucket, n, seed):
    c = client()
    c.create_bucket(Bucket=bucket)
    lines = text_lines(seed)

    def put(i):
        key, body, kind = make_object(seed, lines, i)
        c.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/pdf", Metadata={"kind": kind})
        return len(body), kind

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        done = list(pool.map(put, range(n)))
    total = sum(size for size, _ in done)
    text = sum(1 for _, kind in done if kind == "text")
    print(n, total, text, n - text)


def main():
    args = sys.argv[1:]
    if len(args) < 3 or args[0] != "pdfs":
        sys.exit(__doc__)
    seed = int(args[args.index("--seed") + 1]) if "--seed" in args else 12
    pdfs(args[1], int(args[2]), seed)


if __name__ == "__main__":
    main()
