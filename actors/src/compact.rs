//! Small sorted collections for state that a million resident actors hold.
//!
//! A `BTreeMap` allocates a whole leaf node (room for 11 entries) for its first
//! entry, and `Vec`/`VecDeque` double their capacity: for a journey with one
//! contact and one appointment that was most of its memory (measured in
//! `docs/benchmarks.md`, Passivation). These keep their entries in one sorted
//! vector and grow by about a quarter, so a small journey costs little more than
//! its entries. Iteration is in key order, as with the `BTreeMap`s they replace.

use std::borrow::Borrow;
use std::collections::VecDeque;

/// Reserves room for one more element, growing by about a quarter rather than
/// doubling (lookups and inserts stay cheap at the sizes journeys are bounded to).
pub fn reserve_one<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len() / 4 + 1);
    }
}

/// As [`reserve_one`], for a `VecDeque`.
pub fn reserve_one_deque<T>(v: &mut VecDeque<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len() / 4 + 1);
    }
}

/// A value that carries its own key (so the key is not stored twice).
pub trait Keyed {
    /// The key type.
    type Key: Ord;
    /// The value's key.
    fn key(&self) -> &Self::Key;
}

/// A map of values sorted by the key each carries, in one vector.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedVec<V> {
    /// The values, sorted by key, keys unique.
    items: Vec<V>,
}

impl<V> Default for KeyedVec<V> {
    fn default() -> Self {
        KeyedVec { items: Vec::new() }
    }
}

impl<V: Keyed> KeyedVec<V> {
    /// An empty map (allocates nothing).
    pub fn new() -> Self {
        KeyedVec::default()
    }

    fn find<Q>(&self, key: &Q) -> Result<usize, usize>
    where
        V::Key: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.items.binary_search_by(|v| v.key().borrow().cmp(key))
    }

    /// The value with this key.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        V::Key: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|i| &self.items[i])
    }

    /// The value with this key, to change (not its key: the order depends on it).
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        V::Key: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|i| &mut self.items[i])
    }

    /// True when a value has this key.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        V::Key: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).is_ok()
    }

    /// The value with this key, inserting `make()` (which must carry that key) first
    /// when there is none.
    pub fn get_or_insert_with(&mut self, key: &V::Key, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.find(key) {
            Ok(i) => i,
            Err(i) => {
                let v = make();
                debug_assert!(v.key() == key, "inserted value must carry its key");
                reserve_one(&mut self.items);
                self.items.insert(i, v);
                i
            }
        };
        &mut self.items[i]
    }

    /// Removes and returns the value with this key.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        V::Key: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|i| self.items.remove(i))
    }

    /// Values in key order.
    pub fn values(&self) -> std::slice::Iter<'_, V> {
        self.items.iter()
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// A set kept as one sorted vector without duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortedVecSet<T> {
    /// The elements, sorted, unique.
    items: Vec<T>,
}

impl<T> Default for SortedVecSet<T> {
    fn default() -> Self {
        SortedVecSet { items: Vec::new() }
    }
}

impl<T: Ord> SortedVecSet<T> {
    /// An empty set (allocates nothing).
    pub fn new() -> Self {
        SortedVecSet::default()
    }

    /// Adds an element; false when it was there already.
    pub fn insert(&mut self, item: T) -> bool {
        match self.items.binary_search(&item) {
            Ok(_) => false,
            Err(i) => {
                reserve_one(&mut self.items);
                self.items.insert(i, item);
                true
            }
        }
    }

    /// Elements in order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl<T: Ord> Extend<T> for SortedVecSet<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        for item in iter {
            self.insert(item);
        }
    }
}

impl<T: Ord> FromIterator<T> for SortedVecSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut items: Vec<T> = iter.into_iter().collect();
        items.sort();
        items.dedup();
        items.shrink_to_fit();
        SortedVecSet { items }
    }
}

impl<'a, T> IntoIterator for &'a SortedVecSet<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Item {
        id: String,
        n: u32,
    }

    impl Keyed for Item {
        type Key = String;
        fn key(&self) -> &String {
            &self.id
        }
    }

    fn item(id: &str, n: u32) -> Item {
        Item { id: id.into(), n }
    }

    #[test]
    fn a_keyed_vec_iterates_in_key_order_and_finds_by_borrowed_key() {
        let mut m = KeyedVec::new();
        for (id, n) in [("c", 3), ("a", 1), ("b", 2)] {
            m.get_or_insert_with(&id.to_string(), || item(id, n));
        }
        m.get_or_insert_with(&"a".to_string(), || item("a", 99)).n += 10;
        let ids: Vec<(&str, u32)> = m.values().map(|v| (v.id.as_str(), v.n)).collect();
        assert_eq!(ids, vec![("a", 11), ("b", 2), ("c", 3)]);
        assert!(m.contains_key("b"));
        assert_eq!(m.remove("b").map(|v| v.n), Some(2));
        assert_eq!(m.get("b"), None);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn small_collections_grow_by_a_quarter_not_by_doubling() {
        let mut v: Vec<u64> = Vec::new();
        for i in 0..5 {
            reserve_one(&mut v);
            v.push(i);
        }
        assert!(v.capacity() <= 6, "capacity {}", v.capacity());
        let mut m = KeyedVec::new();
        m.get_or_insert_with(&"only".to_string(), || item("only", 1));
        assert_eq!(m.items.capacity(), 1);
    }

    #[test]
    fn a_sorted_set_ignores_duplicates_and_stays_sorted() {
        let mut s: SortedVecSet<u32> = [3, 1, 3].into_iter().collect();
        assert!(s.insert(2));
        assert!(!s.insert(1));
        s.extend([5, 0]);
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3, 5]);
    }
}
