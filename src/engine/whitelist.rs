//! The whitelist: prefixes never counted or banned, read on every request.
//!
//! Operators whitelist every customer PBX and carrier trunk, so it must hold
//! tens of thousands of prefixes, and a lookup must cost the same with ten
//! of them or with all of them. The prefixes are kept in an open-addressing
//! hash set of (masked address, prefix length), and a lookup masks the
//! address once per prefix length in use in its family and probes the set:
//! a cost that grows with the number of distinct lengths (rarely more than
//! a few), not with the number of entries.
//!
//! Reads take no lock, since every worker reads on every request. The set
//! is double-buffered: writers (start-up, MI, a database reload: rare)
//! serialise on a robust mutex, rebuild the buffer readers are not using
//! from the full list and then flip the active index. Each buffer has a
//! sequence number, odd while it is rebuilt, so a reader still on a buffer
//! that is being rebuilt (it was overtaken by two whole writes) notices and
//! retries: readers practically never retry, and never wait for a writer. A
//! writer killed mid-rebuild leaves only the inactive buffer torn, which no
//! reader follows the active index to; the next writer rebuilds it from
//! scratch. Every shared word is an atomic, so a read racing a write is
//! well-defined (and then discarded).
//!
//! Memory, fixed at start-up by `max_whitelist`: each buffer holds, per
//! allowed entry, a 16-byte address, a 1-byte prefix length and at least
//! two 8-byte slots (a power of two, so the set is at most half full and
//! probes stay short). That is 66 bytes per entry for both buffers when
//! `max_whitelist` is a power of two (4.1 MiB for the default 65,536), up
//! to 98 just above one.

use std::collections::HashSet;
use std::io;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use super::ip::{Cidr, IpKey};
use crate::shm::{Region, ShmMutex};

/// One prefix's masked address, in two halves. Its length is in its slot
/// (where a probe compares it before reading the entry) and in the
/// buffer's packed array of lengths (for listing).
#[derive(Default)]
struct WlEntry {
    hi: AtomicU64,
    lo: AtomicU64,
}

/// Prefix lengths packed per 64-bit word, one byte each.
const PER_WORD: usize = 8;

/// A slot: the entry's index plus one in the low 32 bits (0: empty), its
/// prefix length in the next 8, and the top 24 bits of its hash in the
/// rest, so a probe that meets another entry's slot rarely reads that
/// entry.
const INDEX_BITS: u64 = 0xffff_ffff;
const TAG_SHIFT: u32 = 40;

/// Prefix lengths 0 ..= 128 as bits.
const LENGTH_WORDS: usize = 3;

/// The IPv4-mapped range, `::ffff:0:0/96`, where IPv4 lives.
const V4_SPACE: u128 = 0xffff << 32;
const V4_PREFIX: u8 = 96;

/// Which length masks a prefix goes in: [IPv4, IPv6]. An IPv4 prefix can
/// contain no IPv6 address, and an IPv6 one no IPv4 address unless it
/// contains the whole mapped range (`::/0`, `::/8`), so a lookup probes
/// only the lengths of its own family: with IPv4 /24s and IPv6 /48s
/// whitelisted, one probe, not two.
fn families(c: &Cidr) -> [bool; 2] {
    let a = c.addr.as_u128();
    let inside_v4 = c.prefix >= V4_PREFIX && a & IpKey::mask(V4_PREFIX) == V4_SPACE;
    let around_v4 = c.prefix <= V4_PREFIX && V4_SPACE & IpKey::mask(c.prefix) == a;
    [inside_v4 || around_v4, !inside_v4]
}

/// The family of an address: 0 for IPv4(-mapped), 1 for IPv6.
fn family(a: u128) -> usize {
    (a & IpKey::mask(V4_PREFIX) != V4_SPACE) as usize
}

/// The fixed part of one buffer.
#[derive(Default)]
struct WlHead {
    /// Odd while a writer rebuilds the buffer.
    seq: AtomicU64,
    /// Entries held: the first `len` of the buffer's entries, in the order
    /// they were added.
    len: AtomicU64,
    /// Per family (see `families`), bit p set when some entry is a /p:
    /// the lengths a lookup probes.
    lengths: [[AtomicU64; LENGTH_WORDS]; 2],
    /// Slots in use, less one: the set is sized for the entries held, not
    /// for `max_whitelist`, so a short list is probed in a few hot cache
    /// lines rather than at random over the whole allocation.
    mask: AtomicU64,
}

/// Fewest slots in use: two cache lines.
const MIN_SLOTS: usize = 16;

/// One copy of the whole whitelist: the entries in order (for listing and
/// the rare scan) and the hash set over them.
struct Buffer {
    head: &'static WlHead,
    slots: &'static [AtomicU64],
    entries: &'static [WlEntry],
    /// The entries' prefix lengths, `PER_WORD` to a word.
    prefixes: &'static [AtomicU64],
}

pub struct Whitelist {
    lock: &'static ShmMutex,
    /// Index (0 or 1) of the buffer readers use.
    active: &'static AtomicU64,
    bufs: [Buffer; 2],
    /// Hash keys drawn once before the fork, so every process hashes alike.
    keys: [u64; 4],
    capacity: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum WhitelistError {
    /// The change would leave more entries than `max_whitelist` allows.
    Full {
        capacity: usize,
    },
    Lock(String),
}

impl std::fmt::Display for WhitelistError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WhitelistError::Full { capacity } => write!(
                f,
                "whitelist full: at most {capacity} entries (modparam max_whitelist)"
            ),
            WhitelistError::Lock(e) => write!(f, "whitelist lock failed: {e}"),
        }
    }
}

/// Slots of one buffer's hash set: at most half of them ever in use.
fn slot_count(capacity: usize) -> usize {
    (capacity.max(1) * 2).next_power_of_two()
}

/// The set bits of a length mask, longest prefix first.
fn lengths_of(mut words: [u64; LENGTH_WORDS]) -> impl Iterator<Item = u8> {
    let mut w = LENGTH_WORDS;
    std::iter::from_fn(move || {
        while w > 0 {
            let word = &mut words[w - 1];
            if *word != 0 {
                let bit = 63 - word.leading_zeros();
                *word &= !(1u64 << bit);
                return Some(((w - 1) * 64) as u8 + bit as u8);
            }
            w -= 1;
        }
        None
    })
}

/// The 128-bit product of `a` and `b`, its halves xored, so that the low
/// bits (the home slot) depend on the high bits of the inputs too.
fn fold_mul(a: u64, b: u64) -> u64 {
    let m = a as u128 * b as u128;
    m as u64 ^ (m >> 64) as u64
}

/// A slot's bits above the index, for an entry of hash `h` and length
/// `prefix`.
fn slot_key(h: u64, prefix: u8) -> u64 {
    (h >> TAG_SHIFT) << TAG_SHIFT | (prefix as u64) << 32
}

fn halves(a: u128) -> (u64, u64) {
    ((a >> 64) as u64, a as u64)
}

impl Buffer {
    fn alloc(region: &mut Region, capacity: usize) -> io::Result<Buffer> {
        Ok(Buffer {
            head: region.alloc()?,
            slots: region.alloc_slice(slot_count(capacity))?,
            entries: region.alloc_slice(capacity)?,
            prefixes: region.alloc_slice(capacity.div_ceil(PER_WORD))?,
        })
    }

    /// Entries held; bounded, as a reader racing a rebuild may read anything.
    fn len(&self) -> usize {
        (self.head.len.load(Ordering::Relaxed) as usize).min(self.entries.len())
    }

    /// Always within the slots (which are a power of two), whatever a
    /// reader racing a rebuild reads.
    fn mask(&self) -> usize {
        self.head.mask.load(Ordering::Relaxed) as usize & (self.slots.len() - 1)
    }

    fn lengths(&self, family: usize) -> [u64; LENGTH_WORDS] {
        std::array::from_fn(|i| self.head.lengths[family][i].load(Ordering::Relaxed))
    }

    /// The lengths in use in either family.
    fn all_lengths(&self) -> [u64; LENGTH_WORDS] {
        let (v4, v6) = (self.lengths(0), self.lengths(1));
        std::array::from_fn(|i| v4[i] | v6[i])
    }

    fn entry(&self, i: usize) -> Cidr {
        let e = &self.entries[i];
        let addr =
            (e.hi.load(Ordering::Relaxed) as u128) << 64 | e.lo.load(Ordering::Relaxed) as u128;
        let word = self.prefixes[i / PER_WORD].load(Ordering::Relaxed);
        Cidr {
            addr: IpKey(addr.to_be_bytes()),
            // A torn read may hold anything; a stored prefix is at most 128.
            prefix: ((word >> (8 * (i % PER_WORD))) as u8).min(128),
        }
    }

    fn list(&self) -> Vec<Cidr> {
        (0..self.len()).map(|i| self.entry(i)).collect()
    }

    /// True when the masked address `addr` is whitelisted as a /`prefix`.
    /// `h` is its hash.
    fn find(&self, h: u64, addr: u128, prefix: u8) -> bool {
        let (hi, lo) = halves(addr);
        let mask = self.mask();
        let want = slot_key(h, prefix);
        let mut i = h as usize & mask;
        // Bounded by the table size: a reader racing a rebuild may meet a
        // table in any state, even one with no empty slot left.
        for _ in 0..=mask {
            let s = self.slots[i].load(Ordering::Relaxed);
            if s == 0 {
                return false;
            }
            if s & !INDEX_BITS == want {
                // Checked: an index read mid-rebuild may be anything.
                if let Some(e) = self
                    .entries
                    .get(((s & INDEX_BITS) as usize).wrapping_sub(1))
                {
                    if e.lo.load(Ordering::Relaxed) == lo && e.hi.load(Ordering::Relaxed) == hi {
                        return true;
                    }
                }
            }
            i = (i + 1) & mask;
        }
        false
    }
}

/// Unlocks the writers' mutex on every way out of a write, unwinding too.
struct Held<'a>(&'a ShmMutex);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.unlock();
    }
}

impl Whitelist {
    /// Shared bytes for a whitelist of at most `capacity` entries (see the
    /// module comment: 66 to 98 per entry).
    pub fn shm_bytes(capacity: usize) -> usize {
        let capacity = capacity.max(1);
        let buffer = std::mem::size_of::<WlHead>()
            + slot_count(capacity) * std::mem::size_of::<AtomicU64>()
            + capacity * std::mem::size_of::<WlEntry>()
            + capacity.div_ceil(PER_WORD) * std::mem::size_of::<AtomicU64>();
        std::mem::size_of::<ShmMutex>() + std::mem::size_of::<AtomicU64>() + 2 * buffer + 256
    }

    /// Maps a whitelist of at most `capacity` entries. Call before forking.
    pub fn new(region: &mut Region, capacity: usize) -> io::Result<Whitelist> {
        // A slot holds an entry's index plus one in 32 bits.
        if capacity == 0 || capacity >= u32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("whitelist capacity {capacity} out of range"),
            ));
        }
        let lock = region.alloc::<ShmMutex>()?;
        lock.init()?;
        let active = region.alloc()?;
        let bufs = [
            Buffer::alloc(region, capacity)?,
            Buffer::alloc(region, capacity)?,
        ];
        // Odd, so that no multiply by a key loses its low bits.
        let keys = crate::shm::random_seeds().map(|k| k | 1);
        Ok(Whitelist {
            lock,
            active,
            bufs,
            keys,
            capacity,
        })
    }

    /// Most entries held (`max_whitelist`).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Two folded multiplies (ahash's fallback mixing, without the cost of
    /// its streaming interface): this runs on every request, once per
    /// prefix length in use. One multiply alone clusters runs of
    /// consecutive hosts; two spread them as evenly as random keys would.
    /// The keys are drawn at start-up, so nobody can pick addresses that
    /// collide in advance.
    fn hash(&self, addr: u128, prefix: u8) -> u64 {
        let (hi, lo) = halves(addr);
        let [k0, k1, k2, k3] = self.keys;
        fold_mul(fold_mul(hi ^ k0, lo ^ k1) ^ prefix as u64 ^ k2, k3)
    }

    /// Runs `f` over the active buffer until it ran over a buffer no writer
    /// touched meanwhile; `f` must tolerate reading a torn buffer (its
    /// result is then discarded).
    fn read<R>(&self, mut f: impl FnMut(&Buffer) -> R) -> R {
        loop {
            let b = &self.bufs[self.active.load(Ordering::Acquire) as usize & 1];
            let s1 = b.head.seq.load(Ordering::Acquire);
            // Odd: the active index moved on and a writer is rebuilding
            // this one already; the next load of the index finds the other.
            if s1 & 1 == 0 {
                let r = f(b);
                fence(Ordering::Acquire);
                if b.head.seq.load(Ordering::Relaxed) == s1 {
                    return r;
                }
            }
            std::hint::spin_loop();
        }
    }

    pub fn contains(&self, ip: &IpKey) -> bool {
        let a = ip.as_u128();
        self.read(|b| {
            lengths_of(b.lengths(family(a))).any(|p| {
                let m = a & IpKey::mask(p);
                b.find(self.hash(m, p), m, p)
            })
        })
    }

    /// A whitelisted prefix sharing any address with `target` (inside it
    /// or around it), if there is one; the most specific one around it
    /// first.
    pub fn overlapping(&self, target: &Cidr) -> Option<Cidr> {
        let target = Cidr::new(target.addr, target.prefix);
        let a = target.addr.as_u128();
        self.read(|b| {
            // Not a per-request path: the lengths of both families, rather
            // than working out which a target spanning them needs.
            let lengths = b.all_lengths();
            let around = lengths_of(lengths)
                .filter(|&p| p <= target.prefix)
                .find_map(|p| {
                    let m = a & IpKey::mask(p);
                    b.find(self.hash(m, p), m, p).then(|| Cidr {
                        addr: IpKey(m.to_be_bytes()),
                        prefix: p,
                    })
                });
            if around.is_some() {
                return around;
            }
            // Inside the target: a ban on a prefix with longer whitelist
            // entries in use. Bans on prefixes are rare, and this is not a
            // per-request path, so a scan of the entries will do.
            if lengths_of(lengths)
                .next()
                .is_some_and(|p| p > target.prefix)
            {
                return (0..b.len())
                    .map(|i| b.entry(i))
                    .find(|c| c.prefix > target.prefix && target.contains(&c.addr));
            }
            None
        })
    }

    /// Every entry, in the order they were added.
    pub fn list(&self) -> Vec<Cidr> {
        self.read(Buffer::list)
    }

    pub fn len(&self) -> usize {
        self.read(Buffer::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies `f` to the current list under the writers' lock; when it
    /// reports a change, publishes the new list. `f` returns its result and
    /// whether it changed the list.
    fn write<R>(&self, f: impl FnOnce(&mut Vec<Cidr>) -> (R, bool)) -> Result<R, WhitelistError> {
        // Whoever held the lock before a crash left at most the inactive
        // buffer torn, which `rebuild` detects: nothing to repair here.
        self.lock
            .lock()
            .map_err(|e| WhitelistError::Lock(e.to_string()))?;
        let _held = Held(self.lock);
        let cur = self.active.load(Ordering::Acquire) as usize & 1;
        // Writers alone change buffers, and never the active one: no
        // sequence to check.
        let mut list = self.bufs[cur].list();
        let (r, changed) = f(&mut list);
        if !changed {
            return Ok(r);
        }
        if list.len() > self.capacity {
            return Err(WhitelistError::Full {
                capacity: self.capacity,
            });
        }
        self.rebuild(&self.bufs[cur ^ 1], &list);
        self.active.store((cur ^ 1) as u64, Ordering::Release);
        Ok(r)
    }

    /// Makes the inactive buffer `b` hold exactly `list` (distinct, masked
    /// prefixes, at most `capacity` of them). O(entries): only the slots
    /// the buffer's previous list used are cleared, unless a writer died
    /// rebuilding it.
    fn rebuild(&self, b: &Buffer, list: &[Cidr]) {
        let s = b.head.seq.load(Ordering::Relaxed);
        let torn = s & 1 == 1;
        let odd = s | 1;
        b.head.seq.store(odd, Ordering::Relaxed);
        // Orders the odd sequence before every store below: a reader that
        // sees any of them sees the odd (or a later) sequence after its
        // acquire fence, and retries.
        fence(Ordering::Release);
        if torn {
            for s in b.slots {
                s.store(0, Ordering::Relaxed);
            }
        } else {
            // With linear probing and no deletions, each entry sits in the
            // run of occupied slots that starts at its home slot, and each
            // run starts at some entry's home: clearing from every home to
            // the first empty slot empties the table, each slot once. Slots
            // past the mask were never used since the last full clear.
            let mask = b.mask();
            for i in 0..b.len() {
                let c = b.entry(i);
                let mut j = self.hash(c.addr.as_u128(), c.prefix) as usize & mask;
                while b.slots[j].load(Ordering::Relaxed) != 0 {
                    b.slots[j].store(0, Ordering::Relaxed);
                    j = (j + 1) & mask;
                }
            }
        }
        let mask = (list.len() * 2)
            .next_power_of_two()
            .max(MIN_SLOTS)
            .min(b.slots.len())
            - 1;
        let mut lengths = [[0u64; LENGTH_WORDS]; 2];
        for (i, c) in list.iter().enumerate() {
            let a = c.addr.as_u128();
            let (hi, lo) = halves(a);
            let e = &b.entries[i];
            e.hi.store(hi, Ordering::Relaxed);
            e.lo.store(lo, Ordering::Relaxed);
            let h = self.hash(a, c.prefix);
            let mut j = h as usize & mask;
            while b.slots[j].load(Ordering::Relaxed) != 0 {
                j = (j + 1) & mask;
            }
            b.slots[j].store(slot_key(h, c.prefix) | (i as u64 + 1), Ordering::Relaxed);
            for (f, in_family) in families(c).into_iter().enumerate() {
                if in_family {
                    lengths[f][c.prefix as usize / 64] |= 1 << (c.prefix % 64);
                }
            }
        }
        for (w, chunk) in b.prefixes.iter().zip(list.chunks(PER_WORD)) {
            let packed = chunk
                .iter()
                .rev()
                .fold(0u64, |acc, c| acc << 8 | c.prefix as u64);
            w.store(packed, Ordering::Relaxed);
        }
        for (ws, vs) in b.head.lengths.iter().zip(lengths) {
            for (w, v) in ws.iter().zip(vs) {
                w.store(v, Ordering::Relaxed);
            }
        }
        b.head.len.store(list.len() as u64, Ordering::Relaxed);
        b.head.mask.store(mask as u64, Ordering::Relaxed);
        b.head.seq.store(odd + 1, Ordering::Release);
    }

    /// Adds a prefix; false if it was already present.
    pub fn add(&self, c: Cidr) -> Result<bool, WhitelistError> {
        let c = Cidr::new(c.addr, c.prefix);
        self.write(|v| {
            if v.contains(&c) {
                (false, false)
            } else {
                v.push(c);
                (true, true)
            }
        })
    }

    /// Replaces the whole list at once (readers see the old or the new list,
    /// never a mix). A prefix listed twice is kept once, where it first
    /// appears.
    pub fn replace(&self, list: Vec<Cidr>) -> Result<(), WhitelistError> {
        let mut seen = HashSet::with_capacity(list.len());
        let list: Vec<Cidr> = list
            .into_iter()
            .map(|c| Cidr::new(c.addr, c.prefix))
            .filter(|c| seen.insert(*c))
            .collect();
        self.write(|v| {
            *v = list;
            ((), true)
        })
    }

    /// Removes a prefix; false if it was not present.
    pub fn remove(&self, c: &Cidr) -> Result<bool, WhitelistError> {
        let c = Cidr::new(c.addr, c.prefix);
        self.write(|v| {
            let before = v.len();
            v.retain(|x| *x != c);
            let removed = v.len() != before;
            (removed, removed)
        })
    }
}

crate::shm_safe!(WlEntry, WlHead);
