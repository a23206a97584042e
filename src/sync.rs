//! Small synchronisation helpers shared across the crate.

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, ignoring poisoning. Used only for data that stays consistent even if a holder
/// panicked: every critical section in the crate replaces or updates its value whole.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
