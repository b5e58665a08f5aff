//! A process-shared robust mutex and the slice it protects.
//!
//! OpenSIPS workers are processes, not threads, so the lock must live in the
//! shared mapping and be usable from any of them (`PTHREAD_PROCESS_SHARED`).
//! It must also survive a worker being killed while holding it
//! (`PTHREAD_MUTEX_ROBUST`): the next locker gets `EOWNERDEAD`, marks the
//! mutex consistent and carries on, so one crash never wedges the others.

use std::cell::UnsafeCell;
use std::io;
use std::ops::{Deref, DerefMut};

/// How a lock was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOutcome {
    /// Normal acquisition.
    Clean,
    /// The previous owner died holding the lock; the data it guards may
    /// hold one half-written entry (entries are plain values, so the worst
    /// case is one stale or torn slot, never a broken invariant of the
    /// table as a whole).
    OwnerDied,
}

/// `pthread_mutex_t` configured process-shared and robust.
#[repr(C)]
pub struct ShmMutex {
    raw: UnsafeCell<libc::pthread_mutex_t>,
}

// SAFETY: pthread mutexes are designed to be shared; the attribute set in
// `init` makes that valid across processes too.
unsafe impl Sync for ShmMutex {}
unsafe impl Send for ShmMutex {}
impl Default for ShmMutex {
    /// An all-zero mutex; [`ShmMutex::init`] makes it process-shared and
    /// robust before first use.
    fn default() -> Self {
        // SAFETY: pthread_mutex_t is a plain C struct; all-zero is glibc's
        // static initialiser and in any case is overwritten by `init`.
        ShmMutex {
            raw: UnsafeCell::new(unsafe { std::mem::zeroed() }),
        }
    }
}

impl ShmMutex {
    /// Initialises the mutex in place. Must run exactly once, before any
    /// process locks it (in practice: in mod_init, before the fork).
    pub fn init(&self) -> io::Result<()> {
        // SAFETY: attr is a local that is initialised by pthread_mutexattr_init
        // before use and destroyed after; `raw` points into the shared
        // mapping and nobody else uses it yet.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            check(libc::pthread_mutexattr_init(&mut attr))?;
            let r = (|| {
                check(libc::pthread_mutexattr_setpshared(
                    &mut attr,
                    libc::PTHREAD_PROCESS_SHARED,
                ))?;
                check(libc::pthread_mutexattr_setrobust(
                    &mut attr,
                    libc::PTHREAD_MUTEX_ROBUST,
                ))?;
                check(libc::pthread_mutex_init(self.raw.get(), &attr))
            })();
            libc::pthread_mutexattr_destroy(&mut attr);
            r
        }
    }

    /// Blocks until the lock is held by this process.
    pub fn lock(&self) -> io::Result<LockOutcome> {
        // SAFETY: the mutex was initialised by `init`.
        match unsafe { libc::pthread_mutex_lock(self.raw.get()) } {
            0 => Ok(LockOutcome::Clean),
            libc::EOWNERDEAD => {
                // SAFETY: we hold the lock (EOWNERDEAD means acquired).
                check(unsafe { libc::pthread_mutex_consistent(self.raw.get()) })?;
                Ok(LockOutcome::OwnerDied)
            }
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }

    /// Releases a lock taken with [`ShmMutex::lock`].
    pub fn unlock(&self) {
        // SAFETY: only called by guards that hold the lock.
        unsafe {
            libc::pthread_mutex_unlock(self.raw.get());
        }
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// A slice in shared memory that may only be touched with its mutex held.
pub struct LockedSlice<T: 'static> {
    mutex: &'static ShmMutex,
    data: &'static [UnsafeCell<T>],
}

// SAFETY: all access to `data` goes through the guard, which holds `mutex`.
unsafe impl<T: Send> Sync for LockedSlice<T> {}
unsafe impl<T: Send> Send for LockedSlice<T> {}

impl<T: 'static> LockedSlice<T> {
    pub fn new(mutex: &'static ShmMutex, data: &'static [UnsafeCell<T>]) -> Self {
        LockedSlice { mutex, data }
    }

    /// Locks and returns a guard giving `&mut [T]`.
    pub fn lock(&self) -> io::Result<ShmMutexGuard<'_, T>> {
        let outcome = self.mutex.lock()?;
        Ok(ShmMutexGuard {
            owner: self,
            outcome,
        })
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn mutex(&self) -> &ShmMutex {
        self.mutex
    }
}

/// Holds a [`LockedSlice`]'s mutex; unlocks on drop (also on unwind).
pub struct ShmMutexGuard<'a, T: 'static> {
    owner: &'a LockedSlice<T>,
    pub outcome: LockOutcome,
}

impl<T> Deref for ShmMutexGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the mutex is held for the guard's lifetime; UnsafeCell<T>
        // has the same layout as T.
        unsafe {
            std::slice::from_raw_parts(self.owner.data.as_ptr().cast::<T>(), self.owner.data.len())
        }
    }
}

impl<T> DerefMut for ShmMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as above, and the guard is the only holder of the lock.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.owner.data.as_ptr() as *mut T,
                self.owner.data.len(),
            )
        }
    }
}

impl<T> Drop for ShmMutexGuard<'_, T> {
    fn drop(&mut self) {
        self.owner.mutex.unlock();
    }
}

/// A value in shared memory behind its own robust mutex, laid out right
/// after it: taking the lock brings the start of the value into the same
/// cache line, so a small header (a hash table bucket's tags) costs no
/// extra memory access.
#[repr(C)]
#[derive(Default)]
pub struct Locked<T> {
    mutex: ShmMutex,
    data: UnsafeCell<T>,
}

// SAFETY: all access to `data` goes through the guard, which holds `mutex`.
unsafe impl<T: Send> Sync for Locked<T> {}
unsafe impl<T: Send> Send for Locked<T> {}

impl<T> Locked<T> {
    /// Makes the mutex process-shared and robust; see [`ShmMutex::init`].
    pub fn init(&self) -> io::Result<()> {
        self.mutex.init()
    }

    pub fn lock(&self) -> io::Result<LockedGuard<'_, T>> {
        let outcome = self.mutex.lock()?;
        Ok(LockedGuard {
            owner: self,
            outcome,
        })
    }
}

/// Holds a [`Locked`]'s mutex; unlocks on drop (also on unwind).
pub struct LockedGuard<'a, T> {
    owner: &'a Locked<T>,
    pub outcome: LockOutcome,
}

impl<T> Deref for LockedGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the mutex is held for the guard's lifetime.
        unsafe { &*self.owner.data.get() }
    }
}

impl<T> DerefMut for LockedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above, and the guard is the only holder of the lock.
        unsafe { &mut *self.owner.data.get() }
    }
}

impl<T> Drop for LockedGuard<'_, T> {
    fn drop(&mut self) {
        self.owner.mutex.unlock();
    }
}
