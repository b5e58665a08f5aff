//! Cross-process building blocks: the shared mapping and the locks that live
//! in it. This is the only place outside `ffi` that needs `unsafe`, and it
//! knows nothing of OpenSIPS.

mod region;
mod robust_mutex;

pub use region::Region;
pub use robust_mutex::{LockOutcome, LockedSlice, ShmMutex, ShmMutexGuard};

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
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let mix = t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32);
            return [mix, mix.rotate_left(17), mix.rotate_left(31), mix.rotate_left(47)];
        }
        got += n as usize;
    }
    let w = |i: usize| u64::from_ne_bytes(buf[i * 8..i * 8 + 8].try_into().unwrap());
    [w(0), w(1), w(2), w(3)]
}
