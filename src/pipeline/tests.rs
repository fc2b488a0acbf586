//! The pipeline's round trips: our writer against decoders we did not write, and back.

use super::*;
use sha2::{Digest as _, Sha256};

fn roundtrip(c: Compression) {
    let data: Vec<u8> = (0..300_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    let mut w = StoreWriter::new(Vec::new(), c, None, None).unwrap();
    for chunk in data.chunks(7000) {
        w.write_all(chunk).unwrap();
    }
    let (stored, digest) = w.finish().unwrap();
    assert_eq!(digest.plain_bytes, data.len() as u64);
    assert_eq!(digest.stored_bytes, stored.len() as u64);
    assert_eq!(
        digest.stored_sha256.as_deref(),
        Some(hex::encode(Sha256::digest(&stored)).as_str())
    );
    assert_eq!(
        digest.stored_blake3,
        blake3::hash(&stored).to_hex().to_string()
    );
    assert_eq!(
        digest.plain_blake3,
        blake3::hash(&data).to_hex().to_string()
    );

    // A decoder we did not write must read what we wrote.
    let independent = match c {
        Compression::Gzip => Some("gzip"),
        Compression::Zstd => Some("zstd"),
        Compression::None => None,
    };
    if let Some(tool) = independent {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("stored");
        std::fs::write(&f, &stored).unwrap();
        let out = std::process::Command::new(tool)
            .arg("-dc")
            .arg(&f)
            .output()
            .unwrap_or_else(|e| panic!("{tool} must be installed: {e}"));
        assert!(out.status.success(), "{tool} -dc failed");
        assert!(out.stdout == data, "{tool} -dc gives other bytes");
    }

    let mut r = PlainReader::new(&stored[..], c).unwrap();
    let mut back = Vec::new();
    r.read_to_end(&mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(r.finish().unwrap(), read_back(&digest));

    // Records of schema 1-2 keep SHA-256: the reader computes that when asked.
    let mut r = PlainReader::new(&stored[..], c)
        .unwrap()
        .hashing_plain(PlainAlgo::Sha256)
        .unwrap();
    io::copy(&mut r, &mut io::sink()).unwrap();
    let legacy = r.finish().unwrap().plain_sum.unwrap();
    assert_eq!(legacy.algo, PlainAlgo::Sha256);
    assert_eq!(legacy.hex, hex::encode(Sha256::digest(&data)));
}

fn read_back(d: &Digest) -> ReadBack {
    ReadBack {
        plain_bytes: d.plain_bytes,
        plain_sum: Some(PlainSum {
            algo: PlainAlgo::Blake3,
            hex: d.plain_blake3.clone(),
        }),
        stored: StoredSums {
            bytes: d.stored_bytes,
            sha256: d.stored_sha256.clone(),
            blake3: Some(d.stored_blake3.clone()),
        },
    }
}

#[test]
fn every_compression_round_trips_with_matching_digests() {
    roundtrip(Compression::Gzip);
    roundtrip(Compression::Zstd);
    roundtrip(Compression::None);
}

#[test]
fn truncated_streams_fail_to_decompress() {
    for c in [Compression::Gzip, Compression::Zstd] {
        let mut w = StoreWriter::new(Vec::new(), c, None, None).unwrap();
        w.write_all(&vec![7u8; 100_000]).unwrap();
        let (stored, _) = w.finish().unwrap();
        let cut = &stored[..stored.len() - 6];
        let mut r = PlainReader::new(cut, c).unwrap();
        let mut back = Vec::new();
        assert!(
            r.read_to_end(&mut back).is_err(),
            "{c} truncated stream decoded"
        );
    }
}

#[test]
fn sealed_streams_round_trip_and_keep_no_plaintext() {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    let mut keyfile = tempfile::NamedTempFile::new().unwrap();
    writeln!(keyfile, "{}", id.to_string().expose_secret()).unwrap();
    let r = Recipients::parse(Some(&id.to_public().to_string()), None)
        .unwrap()
        .unwrap();
    let ids = Identities::load(keyfile.path()).unwrap();
    let data = b"-- secret table contents\n".repeat(5000);
    for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let mut w = StoreWriter::new(Vec::new(), c, None, Some(&r)).unwrap();
        w.write_all(&data).unwrap();
        assert!(w.tail().ends_with(b"contents\n"));
        let (stored, digest) = w.finish().unwrap();
        assert!(stored.starts_with(b"age-encryption.org/v1\n"));
        assert!(!stored.windows(6).any(|x| x == b"secret"), "{c}: plaintext");
        assert_eq!(
            digest.stored_sha256.as_deref(),
            Some(hex::encode(Sha256::digest(&stored)).as_str())
        );
        let how = Opening {
            compression: c,
            unseal: Some(&ids),
            sealed: true,
        };
        let mut rd = PlainReader::open(&stored[..], how).unwrap();
        let mut back = Vec::new();
        rd.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(rd.finish().unwrap(), read_back(&digest));
        let no_id = Opening {
            unseal: None,
            ..how
        };
        assert!(matches!(
            PlainReader::open(&stored[..], no_id),
            Err(OpenError::NoIdentity)
        ));
    }
}

#[test]
fn levels_are_checked() {
    assert!(Compression::Gzip.check_level(9).is_ok());
    assert!(Compression::Gzip.check_level(10).is_err());
    assert!(Compression::Zstd.check_level(19).is_ok());
    assert!(Compression::None.check_level(1).is_err());
}
