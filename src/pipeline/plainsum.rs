//! The checksum a run record keeps of an artifact's plain (decompressed) side.
//!
//! Records of schema 3 on keep BLAKE3 (`b3sum` reproduces it): on the project's CPU, with no SHA
//! extensions, it hashes about 3.5 GB/s on one core against SHA-256's 209 MB/s, and every plain
//! byte of a backup is hashed once on the way in and once more by each `verify`. Records of
//! schema 1-2 keep SHA-256; they are still verified against it (on a thread of its own, so the
//! slower hash does not hold up decompression).

use std::fmt;
use std::io;

use super::hasher::Sha256Thread;

/// Which hash a plain checksum uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainAlgo {
    Blake3,
    Sha256,
}

impl PlainAlgo {
    /// The record field's suffix and the name shown in messages.
    pub fn name(self) -> &'static str {
        match self {
            PlainAlgo::Blake3 => "blake3",
            PlainAlgo::Sha256 => "sha256",
        }
    }
}

/// A plain checksum: the hash and its lowercase hex digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainSum {
    pub algo: PlainAlgo,
    pub hex: String,
}

impl fmt::Display for PlainSum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.algo.name(), self.hex)
    }
}

/// An incremental plain checksum of either kind.
pub(super) enum PlainHasher {
    // Boxed: the hasher keeps a stack of chaining values (about 1.9 KB).
    Blake3(Box<blake3::Hasher>),
    Sha256(Sha256Thread),
}

impl PlainHasher {
    pub(super) fn new(algo: PlainAlgo) -> io::Result<Self> {
        Ok(match algo {
            PlainAlgo::Blake3 => PlainHasher::Blake3(Box::default()),
            PlainAlgo::Sha256 => PlainHasher::Sha256(Sha256Thread::new()?),
        })
    }

    pub(super) fn update(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            PlainHasher::Blake3(h) => {
                h.update(data);
                Ok(())
            }
            PlainHasher::Sha256(h) => h.update(data),
        }
    }

    pub(super) fn finish(self) -> io::Result<PlainSum> {
        Ok(match self {
            PlainHasher::Blake3(h) => PlainSum {
                algo: PlainAlgo::Blake3,
                hex: h.finalize().to_hex().to_string(),
            },
            PlainHasher::Sha256(h) => PlainSum {
                algo: PlainAlgo::Sha256,
                hex: h.finish()?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_match_their_one_shot_hashes_for_any_split() {
        use sha2::Digest as _;
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
        for piece in [1usize, 1000, 65_536, 1 << 20, 5 << 20] {
            for algo in [PlainAlgo::Blake3, PlainAlgo::Sha256] {
                let mut h = PlainHasher::new(algo).unwrap();
                for c in data.chunks(piece) {
                    h.update(c).unwrap();
                }
                let want = match algo {
                    PlainAlgo::Blake3 => blake3::hash(&data).to_hex().to_string(),
                    PlainAlgo::Sha256 => hex::encode(sha2::Sha256::digest(&data)),
                };
                assert_eq!(h.finish().unwrap(), PlainSum { algo, hex: want });
            }
        }
    }

    #[test]
    fn blake3_matches_the_published_test_vector() {
        // The BLAKE3 paper's digest of the empty input.
        let h = PlainHasher::new(PlainAlgo::Blake3).unwrap();
        assert_eq!(
            h.finish().unwrap().hex,
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }
}
