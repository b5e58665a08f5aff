//! One anonymous `MAP_SHARED` mapping, created before OpenSIPS forks.
//!
//! Every process forked afterwards sees the same pages at the same address,
//! so the region is the only place where cross-process state lives. It is a
//! bump allocator: everything is carved out once at start-up and never freed,
//! which is what keeps memory bounded however many sources attack.

use std::io;
use std::ptr::NonNull;

use super::ShmSafe;

/// A shared anonymous mapping with a bump allocator over it.
pub struct Region {
    base: NonNull<u8>,
    len: usize,
    used: usize,
}

// SAFETY: the region is plain memory; every structure placed in it carries
// its own synchronisation (process-shared mutexes or atomics).
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Region {
    /// Maps `len` bytes of zeroed memory shared with every future child.
    pub fn new(len: usize) -> io::Result<Region> {
        let len = len.max(4096);
        // SAFETY: anonymous mapping, no file descriptor, checked result.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Region {
            base: NonNull::new(p.cast()).expect("mmap returned null"),
            len,
            used: 0,
        })
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes handed out so far.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Reserves `count` values of `T`, each initialised to `T::default()`.
    pub fn alloc_slice<T: ShmSafe + Default>(&mut self, count: usize) -> io::Result<&'static [T]> {
        const {
            assert!(
                !std::mem::needs_drop::<T>(),
                "a type with a destructor owns process-local memory and cannot live in shared memory"
            )
        };
        let align = std::mem::align_of::<T>();
        let start = (self.used + align - 1) & !(align - 1);
        let bytes = std::mem::size_of::<T>()
            .checked_mul(count)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "size overflow"))?;
        let end = start
            .checked_add(bytes)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, "shared region exhausted"))?;
        self.used = end;
        // SAFETY: [start, end) is inside the mapping, aligned for T and handed
        // out exactly once; every element is written before the slice is
        // formed. The mapping is never unmapped while the process lives,
        // hence 'static.
        unsafe {
            let p = self.base.as_ptr().add(start).cast::<T>();
            for i in 0..count {
                p.add(i).write(T::default());
            }
            Ok(std::slice::from_raw_parts(p, count))
        }
    }

    /// Reserves one `T`, initialised to `T::default()`.
    pub fn alloc<T: ShmSafe + Default>(&mut self) -> io::Result<&'static T> {
        Ok(&self.alloc_slice::<T>(1)?[0])
    }
}
