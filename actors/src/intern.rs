//! Interned text shared by every resident journey.
//!
//! A million resident journeys repeat a handful of strings: event types
//! (`contact.message`) and sites (`north`) on every timeline entry. [`intern`]
//! hands out one shared `Arc<str>` per distinct text, so an entry holds a pointer
//! instead of its own copy (measured in docs/benchmarks.md, Passivation). The table
//! is bounded: unknown event types are free text from clients, so past
//! [`MAX_INTERNED`] distinct strings new ones are allocated per use, not kept.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

/// Distinct strings kept in the table (event types and sites are a few dozen).
pub const MAX_INTERNED: usize = 4_096;

fn table() -> &'static Mutex<HashSet<Arc<str>>> {
    static TABLE: OnceLock<Mutex<HashSet<Arc<str>>>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(HashSet::new()))
}

/// The shared copy of `s` (a fresh one once the table is full).
pub fn intern(s: &str) -> Arc<str> {
    // A poisoned lock only means another thread panicked while holding it; the set
    // itself is still consistent (inserts are single calls).
    let mut t = table().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = t.get(s) {
        return known.clone();
    }
    let new: Arc<str> = Arc::from(s);
    if t.len() < MAX_INTERNED {
        t.insert(new.clone());
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_text_interned_twice_is_one_allocation() {
        let a = intern("contact.message");
        let b = intern(&String::from("contact.message"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a, "contact.message");
    }

    #[test]
    fn different_texts_stay_different() {
        assert_ne!(&*intern("north"), &*intern("south"));
    }
}
