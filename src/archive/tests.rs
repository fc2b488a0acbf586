use super::*;

/// An index entry for `body` under `key`, with its BLAKE3 or (as older indexes) without.
pub(crate) fn entry(key: &str, body: &[u8], with_blake3: bool) -> IndexEntry {
    IndexEntry {
        key: key.into(),
        path: key.into(),
        size: body.len() as u64,
        etag: None,
        last_modified: None,
        content_type: None,
        content_encoding: None,
        content_disposition: None,
        content_language: None,
        cache_control: None,
        metadata: BTreeMap::new(),
        sha256: hex::encode(sha2::Sha256::digest(body)),
        blake3: with_blake3.then(|| blake3::hash(body).to_hex().to_string()),
    }
}

fn sums(h: ObjectHasher, body: &[u8]) -> ObjectDigest {
    let mut h = h;
    for c in body.chunks(7) {
        h.update(c);
    }
    h.finish()
}

#[test]
fn an_entry_with_blake3_is_proven_by_blake3_alone() {
    let body = b"%PDF-1.7 the object";
    let want = entry("a.pdf", body, true);
    let d = sums(ObjectHasher::for_entry(&want), body);
    assert_eq!(d.sha256, None, "no SHA-256 pass when the entry has BLAKE3");
    assert_eq!(d.check(&want), Ok(()));
    let bad = sums(ObjectHasher::for_entry(&want), b"%PDF-1.7 the objecT");
    let e = bad.check(&want).unwrap_err();
    assert_eq!(e.algorithm, "blake3");
    assert_eq!(e.recorded, *want.blake3.as_ref().unwrap());
    // The SHA-256 is not consulted: a right SHA-256 beside a wrong BLAKE3 still fails.
    let mut forged = want.clone();
    forged.blake3 = Some("0".repeat(64));
    assert_eq!(
        sums(ObjectHasher::both(), body)
            .check(&forged)
            .unwrap_err()
            .algorithm,
        "blake3"
    );
}

#[test]
fn an_older_entry_is_proven_by_sha256() {
    let body = b"second object";
    let want = entry("b.txt", body, false);
    let d = sums(ObjectHasher::for_entry(&want), body);
    assert_eq!(d.blake3, None);
    assert_eq!(d.check(&want), Ok(()));
    let e = sums(ObjectHasher::for_entry(&want), b"second objecT")
        .check(&want)
        .unwrap_err();
    assert_eq!(
        (e.algorithm, e.recorded.as_str()),
        ("sha256", want.sha256.as_str())
    );
    assert_eq!(sums(ObjectHasher::both(), body).check(&want), Ok(()));
}

#[test]
fn a_sum_that_was_not_taken_never_passes() {
    let body = b"x";
    let new = entry("x", body, true);
    let old = entry("x", body, false);
    let e = sums(ObjectHasher::for_entry(&old), body)
        .check(&new)
        .unwrap_err();
    assert_eq!((e.algorithm, e.actual.as_str()), ("blake3", "not computed"));
    let e = sums(ObjectHasher::for_entry(&new), body)
        .check(&old)
        .unwrap_err();
    assert_eq!((e.algorithm, e.actual.as_str()), ("sha256", "not computed"));
}

#[test]
fn index_lines_with_and_without_blake3_parse() {
    let body = b"body";
    let new = entry("k", body, true);
    let old = entry("k", body, false);
    let text = format!(
        "{}\n{}\n",
        serde_json::to_string(&new).unwrap(),
        serde_json::to_string(&old).unwrap()
    );
    assert!(!text.lines().nth(1).unwrap().contains("blake3"), "{text}");
    assert_eq!(parse_index(text.as_bytes()).unwrap(), vec![new, old]);
}

/// A gzip-less tar of `objects` with the in-archive index last, and the same index as text.
fn archive(objects: &[(&str, &[u8])], stored: &[&[u8]], with_blake3: bool) -> (Vec<u8>, Vec<u8>) {
    let mut index = Vec::new();
    for (key, body) in objects {
        serde_json::to_writer(&mut index, &entry(key, body, with_blake3)).unwrap();
        index.push(b'\n');
    }
    let mut tar = tar::Builder::new(Vec::new());
    for ((key, _), body) in objects.iter().zip(stored) {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o600);
        tar.append_data(&mut h, key, *body).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_size(index.len() as u64);
    h.set_mode(0o600);
    tar.append_data(&mut h, INDEX_ENTRY, index.as_slice())
        .unwrap();
    (tar.into_inner().unwrap(), index)
}

#[test]
fn verify_proves_each_object_by_the_sum_its_index_keeps() {
    let objects: [(&str, &[u8]); 2] = [("a.pdf", b"%PDF first"), ("b/c.txt", b"second")];
    let changed: [&[u8]; 2] = [b"%PDF first", b"secoNd"];
    let tmp = tempfile::tempdir().unwrap();
    for with_blake3 in [true, false] {
        let algorithm = if with_blake3 { "blake3" } else { "sha256" };
        for sidecar in [true, false] {
            let check = |stored: &[&[u8]]| {
                let (tar, index) = archive(&objects, stored, with_blake3);
                let side = tmp.path().join("index.jsonl");
                std::fs::write(&side, &index).unwrap();
                let exp = ArchiveExpectations {
                    index_file: sidecar.then_some(side.as_path()),
                    index_sha256: Some(&hex::encode(sha2::Sha256::digest(&index))),
                    objects: Some(2),
                    hash_objects: true,
                };
                check_archive(ArtifactKind::Objects, &mut tar.as_slice(), &exp)
            };
            let seen = check(&[objects[0].1, objects[1].1]).unwrap();
            assert_eq!(seen.objects, Some(2));
            let e = check(&changed).unwrap_err().to_string();
            assert!(
                e.contains("\"b/c.txt\" differs from the index") && e.contains(algorithm),
                "{algorithm}, sidecar {sidecar}: {e}"
            );
        }
    }
}

#[test]
fn awkward_keys_are_mapped() {
    for k in [
        "a//b",
        "./x",
        "../x",
        "/lead",
        "dir/",
        "",
        "a/./b",
        "tab\there",
        ".stackback/x",
        "a/../../etc/passwd",
    ] {
        assert!(!key_is_plain_path(k), "{k:?}");
    }
    for k in [
        "a",
        "a/b/c.pdf",
        "über/東京.pdf",
        "long/".repeat(40).trim_end_matches('/'),
        "x..y",
        ".hidden",
    ] {
        assert!(key_is_plain_path(k), "{k:?}");
    }
}

#[test]
fn file_and_directory_conflicts_are_mapped() {
    let mut p = PathPlanner::default();
    assert_eq!(p.path_for("a"), "a");
    assert_eq!(p.path_for("a/b"), ".stackback/objects/0000000001");
    assert_eq!(p.path_for("c/d"), "c/d");
    assert_eq!(p.path_for("c"), ".stackback/objects/0000000002");
    assert_eq!(p.path_for("c/e"), "c/e");
    assert_eq!(p.path_for("a//b"), ".stackback/objects/0000000003");
}
