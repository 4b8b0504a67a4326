//! The Merkle tree over the audit chain (RFC 6962 / RFC 9162 hashing, via the `ct-merkle`
//! crate), so one entry can be checked against a signed checkpoint without the whole chain
//! (an inclusion proof), and each checkpoint can be checked to extend the previous one (a
//! consistency proof) — the way Certificate Transparency logs let an outsider audit them.
//!
//! Leaf `i` (0-based) is the 32-byte hash of chain entry `seq = i + 1`: the tree commits to the
//! chain's hashes, and each hash already commits to its entry's content and to every entry
//! before it. Roots and proofs travel as lowercase hex (a proof is its 32-byte nodes
//! concatenated, in `ct-merkle`'s order, which is RFC 9162's).
//!
//! Pure: values in, values out. It never reads the store; the gateway feeds it hashes.

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use sha2::Sha256;
use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum MerkleError {
    #[error("{what}: not a 32-byte hex hash")]
    Hash { what: &'static str },
    #[error("{what}: not hex")]
    Proof { what: &'static str },
    #[error("entry #{seq} is not in a tree of {size} entries")]
    OutOfRange { seq: i64, size: u64 },
    #[error("entry #{seq}: the inclusion proof does not lead to the root of {size} entries")]
    NotIncluded { seq: i64, size: u64 },
    #[error(
        "the tree of {new_size} entries does not extend the tree of {old_size}: the chain was rewritten between them"
    )]
    NotConsistent { old_size: u64, new_size: u64 },
    #[error("a tree of {size} entries cannot prove {what}")]
    Size { size: u64, what: &'static str },
}

fn hash32(hex_text: &str, what: &'static str) -> Result<[u8; 32], MerkleError> {
    hex::decode(hex_text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(MerkleError::Hash { what })
}

fn root_of(root_hex: &str, size: u64) -> Result<RootHash<Sha256>, MerkleError> {
    let bytes = hash32(root_hex, "root")?;
    Ok(RootHash::new(bytes.into(), size))
}

/// The tree over the chain's first `len()` entries.
#[derive(Debug, Clone, Default)]
pub struct ChainTree {
    tree: MemoryBackedTree<Sha256, [u8; 32]>,
}

impl ChainTree {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many entries the tree covers (the `seq` of the last one).
    pub fn len(&self) -> u64 {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Appends the hash of entry `len() + 1`.
    pub fn push(&mut self, entry_hash_hex: &str) -> Result<(), MerkleError> {
        self.tree.push(hash32(entry_hash_hex, "entry hash")?);
        Ok(())
    }

    /// The hash the tree has as leaf for entry `seq`, hex.
    pub fn leaf(&self, seq: i64) -> Option<String> {
        let idx = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.tree.get(idx).map(hex::encode)
    }

    /// The RFC 6962 root (SHA-256 of the empty string for an empty tree).
    pub fn root(&self) -> String {
        hex::encode(self.tree.root().as_bytes())
    }

    /// The inclusion proof of entry `seq` in the tree as it is now (`len()` entries).
    pub fn inclusion(&self, seq: i64) -> Result<String, MerkleError> {
        let size = self.len();
        let idx = seq
            .checked_sub(1)
            .and_then(|i| u64::try_from(i).ok())
            .filter(|i| *i < size)
            .ok_or(MerkleError::OutOfRange { seq, size })?;
        let idx = usize::try_from(idx).map_err(|_| MerkleError::OutOfRange { seq, size })?;
        Ok(hex::encode(self.tree.prove_inclusion(idx).as_bytes()))
    }

    /// The consistency proof that the tree as it is now extends its first `old_size` entries.
    pub fn consistency(&self, old_size: u64) -> Result<String, MerkleError> {
        let size = self.len();
        if old_size == 0 || old_size > size {
            return Err(MerkleError::Size {
                size,
                what: "consistency with an empty or larger tree",
            });
        }
        if old_size == size {
            return Ok(String::new());
        }
        let additions = usize::try_from(size - old_size).map_err(|_| MerkleError::Size {
            size,
            what: "that many additions",
        })?;
        Ok(hex::encode(
            self.tree.prove_consistency(additions).as_bytes(),
        ))
    }
}

/// Checks that entry `seq` with hash `entry_hash_hex` is leaf `seq - 1` of the tree of `size`
/// entries whose root is `root_hex`.
pub fn verify_inclusion(
    root_hex: &str,
    size: u64,
    seq: i64,
    entry_hash_hex: &str,
    proof_hex: &str,
) -> Result<(), MerkleError> {
    let root = root_of(root_hex, size)?;
    let leaf = hash32(entry_hash_hex, "entry hash")?;
    let idx = seq
        .checked_sub(1)
        .and_then(|i| u64::try_from(i).ok())
        .filter(|i| *i < size)
        .ok_or(MerkleError::OutOfRange { seq, size })?;
    let bytes = hex::decode(proof_hex).map_err(|_| MerkleError::Proof {
        what: "inclusion proof",
    })?;
    let proof = InclusionProof::<Sha256>::try_from_bytes(bytes)
        .map_err(|_| MerkleError::NotIncluded { seq, size })?;
    root.verify_inclusion(&leaf, idx, &proof)
        .map_err(|_| MerkleError::NotIncluded { seq, size })
}

/// Checks that the tree of `new_size` entries (root `new_root_hex`) extends the tree of
/// `old_size` entries (root `old_root_hex`): nothing in the first `old_size` entries changed.
pub fn verify_consistency(
    old_size: u64,
    old_root_hex: &str,
    new_size: u64,
    new_root_hex: &str,
    proof_hex: &str,
) -> Result<(), MerkleError> {
    let not = MerkleError::NotConsistent { old_size, new_size };
    if old_size == new_size {
        return if old_root_hex == new_root_hex && proof_hex.is_empty() {
            Ok(())
        } else {
            Err(not)
        };
    }
    let old = root_of(old_root_hex, old_size)?;
    let new = root_of(new_root_hex, new_size)?;
    let bytes = hex::decode(proof_hex).map_err(|_| MerkleError::Proof {
        what: "consistency proof",
    })?;
    let proof = ConsistencyProof::<Sha256>::try_from_bytes(bytes).map_err(|_| not.clone())?;
    new.verify_consistency(&old, &proof).map_err(|_| not)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn h(i: u64) -> String {
        hex::encode(Sha256::digest(i.to_be_bytes()))
    }

    fn tree(n: u64) -> ChainTree {
        let mut t = ChainTree::new();
        for i in 0..n {
            t.push(&h(i)).unwrap();
        }
        t
    }

    #[test]
    fn roots_follow_rfc6962() {
        // Empty tree: SHA-256 of nothing. One leaf: SHA-256(0x00 || leaf).
        assert_eq!(tree(0).root(), hex::encode(Sha256::digest(b"")));
        let leaf = hex::decode(h(0)).unwrap();
        let mut one = vec![0u8];
        one.extend_from_slice(&leaf);
        assert_eq!(tree(1).root(), hex::encode(Sha256::digest(&one)));
        // Two leaves: SHA-256(0x01 || H(leaf0) || H(leaf1)).
        let lh = |i: u64| {
            let mut v = vec![0u8];
            v.extend_from_slice(&hex::decode(h(i)).unwrap());
            Sha256::digest(&v).to_vec()
        };
        let mut two = vec![1u8];
        two.extend_from_slice(&lh(0));
        two.extend_from_slice(&lh(1));
        assert_eq!(tree(2).root(), hex::encode(Sha256::digest(&two)));
    }

    #[test]
    fn every_entry_proves_inclusion_and_nothing_else_does() {
        for n in 1..=33u64 {
            let t = tree(n);
            let root = t.root();
            for seq in 1..=n as i64 {
                let p = t.inclusion(seq).unwrap();
                let leaf = h(seq as u64 - 1);
                verify_inclusion(&root, n, seq, &leaf, &p).unwrap();
                // Another entry's hash, another position, another root: refused.
                assert!(verify_inclusion(&root, n, seq, &h(999), &p).is_err());
                if n > 1 {
                    let other = if seq == 1 { 2 } else { seq - 1 };
                    assert!(verify_inclusion(&root, n, other, &leaf, &p).is_err());
                }
                assert!(verify_inclusion(&tree(n + 1).root(), n, seq, &leaf, &p).is_err());
            }
            assert!(t.inclusion(0).is_err() && t.inclusion(n as i64 + 1).is_err());
        }
    }

    #[test]
    fn consistency_between_every_pair_of_sizes() {
        for new in 1..=20u64 {
            let t = tree(new);
            for old in 1..=new {
                let p = t.consistency(old).unwrap();
                verify_consistency(old, &tree(old).root(), new, &t.root(), &p).unwrap();
            }
        }
        // A rewritten past is caught: the old tree had a different entry 3.
        let t = tree(10);
        let mut forged = ChainTree::new();
        for i in 0..5 {
            forged.push(&h(if i == 2 { 77 } else { i })).unwrap();
        }
        let p = t.consistency(5).unwrap();
        assert!(matches!(
            verify_consistency(5, &forged.root(), 10, &t.root(), &p),
            Err(MerkleError::NotConsistent { .. })
        ));
        // Same size, different roots: not consistent.
        assert!(verify_consistency(10, &forged.root(), 10, &t.root(), "").is_err());
        assert!(verify_consistency(10, &t.root(), 10, &t.root(), "").is_ok());
        // Malformed input is an error, never a panic.
        assert!(verify_consistency(5, "zz", 10, &t.root(), &p).is_err());
        assert!(verify_consistency(5, &tree(5).root(), 10, &t.root(), "abc").is_err());
        assert!(verify_consistency(11, &tree(5).root(), 10, &t.root(), &p).is_err());
        assert!(verify_inclusion(&t.root(), 10, 3, &h(2), "00").is_err());
        assert!(t.consistency(0).is_err() && t.consistency(11).is_err());
    }
}
