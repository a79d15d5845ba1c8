//! A paged KV cache with optional prefix caching, after vLLM V1's
//! `KVCacheManager`: fixed-size blocks with reference counts, a free queue in
//! eviction order, and a hash → block map of full prompt blocks that stay
//! reusable after their request ends until the space is needed.

use std::collections::{BTreeSet, HashMap};

/// Index of one KV block.
pub type BlockId = u32;

/// The block pool.
#[derive(Debug, Clone)]
pub struct KvCache {
    block_size: u32,
    prefix_caching: bool,
    ref_cnt: Vec<u32>,
    hash: Vec<Option<u64>>,
    stamp: Vec<u64>,
    next_stamp: u64,
    /// Blocks with no reference, ordered by (eviction stamp, id): evicted first to last.
    free: BTreeSet<(u64, BlockId)>,
    cached: HashMap<u64, BlockId>,
}

impl KvCache {
    /// `blocks` blocks of `block_size` tokens each.
    pub fn new(blocks: u32, block_size: u32, prefix_caching: bool) -> Self {
        Self {
            block_size,
            prefix_caching,
            ref_cnt: vec![0; blocks as usize],
            hash: vec![None; blocks as usize],
            stamp: vec![0; blocks as usize],
            next_stamp: 1,
            free: (0..blocks).map(|b| (0, b)).collect(),
            cached: HashMap::new(),
        }
    }

    /// Tokens per block.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Total blocks.
    pub fn num_blocks(&self) -> u32 {
        self.ref_cnt.len() as u32
    }

    /// Blocks available for allocation (unreferenced, cached ones included).
    pub fn free_blocks(&self) -> u32 {
        self.free.len() as u32
    }

    /// Blocks referenced by at least one request.
    pub fn used_blocks(&self) -> u32 {
        self.num_blocks() - self.free_blocks()
    }

    /// vLLM's `kv_cache_usage_perc`: 1 − free / total.
    pub fn usage(&self) -> f64 {
        if self.ref_cnt.is_empty() {
            return 0.0;
        }
        f64::from(self.used_blocks()) / f64::from(self.num_blocks())
    }

    /// Blocks needed to hold `tokens` tokens.
    pub fn blocks_for(&self, tokens: u32) -> u32 {
        tokens.div_ceil(self.block_size)
    }

    /// The longest run of leading `hashes` that is cached (at most `limit` blocks).
    pub fn lookup(&self, hashes: &[u64], limit: usize) -> Vec<BlockId> {
        if !self.prefix_caching {
            return Vec::new();
        }
        hashes
            .iter()
            .take(limit)
            .map_while(|h| self.cached.get(h).copied())
            .collect()
    }

    /// Free blocks that referencing `blocks` would take out of the free pool.
    pub fn unreferenced(&self, blocks: &[BlockId]) -> u32 {
        blocks
            .iter()
            .filter(|&&b| self.ref_cnt[b as usize] == 0)
            .count() as u32
    }

    /// Takes a reference on each of `blocks` (prefix-cache hits).
    pub fn touch(&mut self, blocks: &[BlockId]) {
        for &b in blocks {
            let i = b as usize;
            if self.ref_cnt[i] == 0 {
                self.free.remove(&(self.stamp[i], b));
            }
            self.ref_cnt[i] += 1;
        }
    }

    /// Allocates `n` fresh blocks, evicting cached ones in LRU order; `None`
    /// (and nothing allocated) when fewer than `n` are free.
    pub fn allocate(&mut self, n: u32) -> Option<Vec<BlockId>> {
        if n > self.free_blocks() {
            return None;
        }
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let (_, b) = self.free.pop_first()?;
            let i = b as usize;
            if let Some(h) = self.hash[i].take() {
                self.cached.remove(&h);
            }
            self.ref_cnt[i] = 1;
            out.push(b);
        }
        Some(out)
    }

    /// Marks a full prompt block as reusable under `hash` (prefix caching only).
    pub fn commit(&mut self, block: BlockId, hash: u64) {
        if !self.prefix_caching || self.hash[block as usize].is_some() {
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.cached.entry(hash) {
            e.insert(block);
            self.hash[block as usize] = Some(hash);
        }
    }

    /// Drops one reference on each block. Unreferenced blocks return to the
    /// free queue: uncached ones first in line for reuse, cached ones last
    /// (tail blocks of a request before its head, as vLLM frees in reverse).
    pub fn release(&mut self, blocks: &[BlockId]) {
        for &b in blocks.iter().rev() {
            let i = b as usize;
            self.ref_cnt[i] = self.ref_cnt[i].saturating_sub(1);
            if self.ref_cnt[i] == 0 {
                self.stamp[i] = if self.hash[i].is_some() {
                    self.next_stamp += 1;
                    self.next_stamp
                } else {
                    0
                };
                self.free.insert((self.stamp[i], b));
            }
        }
    }

    /// Checks the pool's internal consistency (for tests): every block is
    /// either referenced or free, never both, and the cache map agrees.
    pub fn check(&self) -> Result<(), String> {
        let referenced = self.ref_cnt.iter().filter(|&&r| r > 0).count();
        if referenced + self.free.len() != self.ref_cnt.len() {
            return Err(format!(
                "{referenced} referenced + {} free != {} blocks",
                self.free.len(),
                self.ref_cnt.len()
            ));
        }
        for &(s, b) in &self.free {
            if self.ref_cnt[b as usize] != 0 || self.stamp[b as usize] != s {
                return Err(format!(
                    "block {b} is in the free queue but referenced or mis-stamped"
                ));
            }
        }
        for (h, &b) in &self.cached {
            if self.hash[b as usize] != Some(*h) {
                return Err(format!(
                    "cache map points {h:x} at block {b}, which holds another hash"
                ));
            }
        }
        Ok(())
    }
}

/// Chained hashes of the full `block_size`-token blocks of a prompt: block i's
/// hash covers tokens 0..(i+1)·block_size, as in vLLM's prefix caching.
pub fn block_hashes(tokens: &[u64], block_size: u32) -> Vec<u64> {
    let bs = block_size.max(1) as usize;
    let mut out = Vec::with_capacity(tokens.len() / bs);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for chunk in tokens.chunks_exact(bs) {
        for &t in chunk {
            h = mix(h ^ t);
        }
        out.push(h);
    }
    out
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_never_exceeds_capacity_and_release_restores() {
        let mut kv = KvCache::new(4, 16, false);
        let a = kv.allocate(3).unwrap();
        assert!(kv.allocate(2).is_none());
        assert_eq!(kv.used_blocks(), 3);
        kv.release(&a);
        assert_eq!(kv.free_blocks(), 4);
        kv.check().unwrap();
    }

    #[test]
    fn cached_blocks_are_reused_then_evicted_lru() {
        let mut kv = KvCache::new(3, 2, true);
        let hs = block_hashes(&[1, 2, 3, 4], 2);
        let a = kv.allocate(2).unwrap();
        kv.commit(a[0], hs[0]);
        kv.commit(a[1], hs[1]);
        kv.release(&a);
        assert_eq!(kv.lookup(&hs, 8), a);
        assert_eq!(kv.unreferenced(&a), 2);
        kv.touch(&a[..1]);
        assert_eq!(kv.free_blocks(), 2);
        kv.release(&a[..1]);
        // Allocating everything evicts the cached blocks.
        let all = kv.allocate(3).unwrap();
        assert!(kv.lookup(&hs, 8).is_empty());
        kv.release(&all);
        kv.check().unwrap();
    }

    #[test]
    fn block_hashes_chain_over_the_prefix() {
        let a = block_hashes(&[1, 2, 3, 4, 5], 2);
        let b = block_hashes(&[1, 2, 9, 4], 2);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0], b[0]);
        assert_ne!(a[1], b[1]);
    }
}
