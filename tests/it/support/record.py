#!/usr/bin/env python3
"""Edits a run record and recomputes its self-checksum the way docs/run-record.md documents it,
as a forger would: what verification must still catch then is the content, not the checksum.

usage: record.py FILE [PATH JSON]...
  PATH is dotted (artifacts.0.stored_sha256); JSON is the new value (a JSON literal).
Schema 2 on: record_sha256 = SHA-256 of the record's compact JSON without that field, keys sorted.
Schema 1: SHA-256 of the compact JSON (fields in file order) with that field "".
"""
import hashlib
import json
import sys

path = sys.argv[1]
with open(path, encoding="utf-8") as f:
    rec = json.load(f)
edits = sys.argv[2:]
for field, value in zip(edits[::2], edits[1::2]):
    *parents, last = field.split(".")
    node = rec
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    node[int(last) if isinstance(node, list) else last] = json.loads(value)
if rec.get("schema", 1) >= 2:
    rec.pop("record_sha256", None)
    canonical = json.dumps(rec, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
else:
    rec["record_sha256"] = ""
    canonical = json.dumps(rec, separators=(",", ":"), ensure_ascii=False)
rec["record_sha256"] = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
with open(path, "w", encoding="utf-8") as f:
    f.write(json.dumps(rec, indent=2, ensure_ascii=False) + "\n")
