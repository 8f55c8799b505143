//! Memory of the engines' threads: an arena of the process's allocator
//! (jemalloc, `src/main.rs`) that keeps the pages its thread frees until the
//! thread says its job is done.
//!
//! Why: every run of a model allocates its intermediate tensors and frees
//! them at the end, and the next run asks for the same sizes again.
//! jemalloc's decay returns freed pages to the system when the count of free
//! pages has not grown over its decay time, which is exactly the case of a
//! steady stream of runs, so depending on how its epochs fall against the
//! runs it can hand the same buffers back to the kernel run after run and
//! fault them in again: measured on 45 minutes, the diarizer alone spent
//! 17.8 s of 108 s in the kernel (9.4 million page faults) where it
//! otherwise spends under 2 s, and 2 of 13 whole-pipeline runs had the same
//! (README "Memory"). An engine thread bound to a [`KeptPages`] arena keeps
//! what it frees (its working set, reused run after run) and returns it all
//! at once when [`KeptPages::release`] is called after each job; other
//! threads keep jemalloc's decay.
//!
//! Where jemalloc is not the allocator (other targets), [`KeptPages::bind`]
//! returns `None` and nothing changes.

use std::sync::Mutex;

/// Arenas of threads that ended, for the next engine thread (jemalloc never
/// destroys an arena that may still hold live allocations, so they are reused).
#[derive(Debug)]
struct Spare(Mutex<Vec<u32>>);

static SPARE: Spare = Spare(Mutex::new(Vec::new()));

impl Spare {
    fn take(&self) -> Option<u32> {
        self.0.lock().ok().and_then(|mut s| s.pop())
    }
    fn give(&self, arena: u32) {
        if let Ok(mut s) = self.0.lock() {
            s.push(arena);
        }
    }
}

/// The calling thread's arena that keeps freed pages (see the module's text).
/// Dropped (on the thread's way out), it returns its pages and its arena is
/// kept for the next engine thread.
#[derive(Debug)]
pub struct KeptPages {
    arena: u32,
    spare: &'static Spare,
}

impl KeptPages {
    /// Binds the calling thread to an arena that keeps the pages it frees.
    /// `None` where the allocator cannot do it (not jemalloc); the thread
    /// then allocates as before.
    pub fn bind() -> Option<KeptPages> {
        KeptPages::bind_from(&SPARE)
    }

    fn bind_from(spare: &'static Spare) -> Option<KeptPages> {
        let arena = match spare.take() {
            Some(a) => a,
            None => {
                let a = sys::create_arena()?;
                // -1: freed pages are never returned by decay, only by release()
                sys::set_decay(a, -1)?;
                a
            }
        };
        if sys::bind_thread(arena).is_none() {
            spare.give(arena);
            return None;
        }
        Some(KeptPages { arena, spare })
    }

    /// Returns every free page of the arena to the system: call once a job is
    /// done, so that an idle server holds only what is in use.
    pub fn release(&self) {
        sys::purge(self.arena);
    }

    /// jemalloc's index of the arena.
    pub fn arena(&self) -> u32 {
        self.arena
    }
}

impl Drop for KeptPages {
    fn drop(&mut self) {
        self.release();
        self.spare.give(self.arena);
    }
}

/// Whether the calling thread allocates from an arena that keeps what it
/// frees (one of [`KeptPages`]'s).
pub fn this_thread_keeps_freed_pages() -> bool {
    sys::thread_arena().is_some_and(|a| sys::decay(a) == Some(-1))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod sys {
    use std::ffi::{c_void, CString};
    use std::ptr;

    use tikv_jemalloc_sys::mallctl;

    /// jemalloc's `mallctl(key)`: reads its value into `old` and writes
    /// `new`, each when given. True on success.
    ///
    /// # Safety
    /// `T` must be the C type jemalloc documents for `key` (`()` for a key
    /// that takes and returns nothing).
    unsafe fn ctl<T>(key: &str, old: Option<&mut T>, new: Option<&mut T>) -> bool {
        let key = CString::new(key).expect("no NUL in a mallctl name");
        let size = std::mem::size_of::<T>();
        let mut old_len = size;
        let (oldp, oldlenp) = match old {
            Some(v) => (v as *mut T as *mut c_void, &mut old_len as *mut usize),
            None => (ptr::null_mut(), ptr::null_mut()),
        };
        let (newp, newlen) = match new {
            Some(v) => (v as *mut T as *mut c_void, size),
            None => (ptr::null_mut(), 0),
        };
        mallctl(key.as_ptr(), oldp, oldlenp, newp, newlen) == 0
    }

    /// Reads `key`'s value. Safety: as [`ctl`]'s.
    unsafe fn read<T: Default>(key: &str) -> Option<T> {
        let mut v = T::default();
        ctl(key, Some(&mut v), None).then_some(v)
    }

    /// Writes `key`'s value. Safety: as [`ctl`]'s.
    unsafe fn write<T>(key: &str, mut v: T) -> Option<()> {
        ctl(key, None, Some(&mut v)).then_some(())
    }

    pub fn create_arena() -> Option<u32> {
        // SAFETY: "arenas.create" returns an unsigned
        unsafe { read::<u32>("arenas.create") }
    }

    pub fn set_decay(arena: u32, ms: isize) -> Option<()> {
        for key in ["dirty_decay_ms", "muzzy_decay_ms"] {
            // SAFETY: an arena's decay times are ssize_t
            unsafe { write::<isize>(&format!("arena.{arena}.{key}"), ms)? };
        }
        Some(())
    }

    pub fn bind_thread(arena: u32) -> Option<()> {
        // SAFETY: "thread.arena" is an unsigned
        unsafe { write::<u32>("thread.arena", arena) }
    }

    pub fn thread_arena() -> Option<u32> {
        // SAFETY: "thread.arena" is an unsigned
        unsafe { read::<u32>("thread.arena") }
    }

    pub fn decay(arena: u32) -> Option<isize> {
        // SAFETY: an arena's decay times are ssize_t
        unsafe { read::<isize>(&format!("arena.{arena}.dirty_decay_ms")) }
    }

    pub fn purge(arena: u32) {
        // SAFETY: "arena.<i>.purge" takes and returns nothing
        if !unsafe { ctl::<()>(&format!("arena.{arena}.purge"), None, None) } {
            tracing::debug!(arena, "jemalloc arena purge failed");
        }
    }

    /// jemalloc's count of the arena's free pages kept (not yet returned).
    #[cfg(test)]
    pub fn dirty_pages(arena: u32) -> Option<usize> {
        // SAFETY: "epoch" is a uint64_t (written to refresh the stats),
        // "stats.arenas.<i>.pdirty" a size_t
        unsafe {
            write::<u64>("epoch", 1)?;
            read::<usize>(&format!("stats.arenas.{arena}.pdirty"))
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod sys {
    pub fn create_arena() -> Option<u32> {
        None
    }
    pub fn set_decay(_: u32, _: isize) -> Option<()> {
        None
    }
    pub fn bind_thread(_: u32) -> Option<()> {
        None
    }
    pub fn purge(_: u32) {}
    pub fn thread_arena() -> Option<u32> {
        None
    }
    pub fn decay(_: u32) -> Option<isize> {
        None
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Frees 64 blocks of 1 MiB, each written (so that its pages are real).
    fn churn() {
        let blocks: Vec<Vec<u8>> = (0..64).map(|_| vec![1u8; 1 << 20]).collect();
        std::hint::black_box(&blocks);
    }

    /// Each test's own spare arenas (other tests' engine threads take and
    /// give back the process's meanwhile).
    static FRESH: Spare = Spare(Mutex::new(Vec::new()));
    static TEST_SPARE: Spare = Spare(Mutex::new(Vec::new()));

    #[test]
    fn a_bound_thread_keeps_what_it_frees_until_released() {
        std::thread::spawn(|| {
            assert!(!this_thread_keeps_freed_pages());
            let kept = KeptPages::bind_from(&FRESH).expect("jemalloc is the allocator here");
            assert!(this_thread_keeps_freed_pages());
            churn();
            let dirty = sys::dirty_pages(kept.arena()).unwrap();
            // 64 MiB freed: at least most of it still held (4 KiB pages)
            assert!(dirty >= 48 * 256, "only {dirty} pages kept");
            kept.release();
            assert_eq!(sys::dirty_pages(kept.arena()), Some(0));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn an_ended_threads_arena_serves_the_next_thread() {
        let bind = || KeptPages::bind_from(&TEST_SPARE).unwrap().arena();
        let first = std::thread::spawn(bind).join().unwrap();
        // the first thread's guard was dropped on its way out: its arena is spare
        assert_eq!(*TEST_SPARE.0.lock().unwrap(), [first]);
        let second = std::thread::spawn(bind).join().unwrap();
        assert_eq!(second, first, "the spare arena was not reused");
    }
}
