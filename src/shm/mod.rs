//! Cross-process building blocks: the shared mapping and the locks that live
//! in it. This is the only place outside `ffi` that needs `unsafe`, and it
//! knows nothing of OpenSIPS.

mod region;
mod robust_mutex;

pub use region::Region;
pub use robust_mutex::{LockOutcome, Locked, LockedGuard, LockedSlice, ShmMutex, ShmMutexGuard};

/// Types that may live in the shared mapping, where every process reads
/// the same bytes: plain values, atomics and process-shared locks. Not a
/// pointer into one process's heap (a `Vec`, a `String`, a `Box`: another
/// process would follow it into its own, different memory), not a
/// process-local lock (parking_lot, std: their waiters park in one
/// process). [`Region`] only allocates these, and also refuses at compile
/// time any type with a destructor, which catches the heap-owning ones
/// even inside a type marked by mistake.
///
/// Implement it for a struct whose fields all are `ShmSafe`, with
/// [`shm_safe!`](crate::shm_safe).
pub trait ShmSafe {}

/// Marks types as [`ShmSafe`]: `shm_safe!(Ban, SourceState);`.
#[macro_export]
macro_rules! shm_safe {
    ($($t:ty),* $(,)?) => {
        $(impl $crate::shm::ShmSafe for $t {})*
    };
}

shm_safe!(bool, u8, u16, u32, u64, i32, i64, usize);
shm_safe!(
    std::sync::atomic::AtomicU64,
    std::sync::atomic::AtomicU32,
    std::sync::atomic::AtomicI32,
    std::sync::atomic::AtomicBool
);
shm_safe!(ShmMutex);
impl<T: ShmSafe> ShmSafe for std::cell::UnsafeCell<T> {}
impl<T: ShmSafe> ShmSafe for Locked<T> {}
impl<T: ShmSafe, const N: usize> ShmSafe for [T; N] {}

/// Four random 64-bit seeds from the kernel, for hash keys an attacker
/// cannot predict (and so cannot aim collisions at one stripe).
pub fn random_seeds() -> [u64; 4] {
    let mut buf = [0u8; 32];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: writes at most the remaining length into our buffer.
        let n = unsafe { libc::getrandom(buf[got..].as_mut_ptr().cast(), buf.len() - got, 0) };
        if n <= 0 {
            // getrandom cannot fail on Linux >= 3.17 short of EINTR; fall
            // back to time and pid rather than to a fixed key.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let mix = t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32);
            return [
                mix,
                mix.rotate_left(17),
                mix.rotate_left(31),
                mix.rotate_left(47),
            ];
        }
        got += n as usize;
    }
    let w = |i: usize| u64::from_ne_bytes(buf[i * 8..i * 8 + 8].try_into().unwrap());
    [w(0), w(1), w(2), w(3)]
}
