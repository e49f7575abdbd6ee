//! Per-partition state looked up for every record: a vector indexed by partition number.
//! Partition numbers are small, dense and non-negative (0..partition count), so indexing beats
//! hashing them (SipHash lookups were a visible share of the poll thread's time).

/// Values keyed by partition number.
#[derive(Debug, Clone)]
pub struct PartitionMap<T> {
    slots: Vec<Option<T>>,
}

impl<T> Default for PartitionMap<T> {
    fn default() -> Self {
        Self { slots: Vec::new() }
    }
}

impl<T> PartitionMap<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, partition: i32) -> Option<&T> {
        self.slots.get(usize::try_from(partition).ok()?)?.as_ref()
    }

    pub fn get_mut(&mut self, partition: i32) -> Option<&mut T> {
        self.slots
            .get_mut(usize::try_from(partition).ok()?)?
            .as_mut()
    }

    /// The value of `partition`, inserted with `make` first if there is none.
    ///
    /// # Panics
    /// For a negative partition number (Kafka has none).
    pub fn get_or_insert_with(&mut self, partition: i32, make: impl FnOnce() -> T) -> &mut T {
        self.slot(partition).get_or_insert_with(make)
    }

    /// Sets the value of `partition`; returns the one it replaces.
    ///
    /// # Panics
    /// For a negative partition number (Kafka has none).
    pub fn insert(&mut self, partition: i32, value: T) -> Option<T> {
        self.slot(partition).replace(value)
    }

    /// The slot of `partition`, growing the vector to it.
    fn slot(&mut self, partition: i32) -> &mut Option<T> {
        let index = usize::try_from(partition).expect("partition numbers are not negative");
        if index >= self.slots.len() {
            self.slots.resize_with(index + 1, || None);
        }
        &mut self.slots[index]
    }

    pub fn remove(&mut self, partition: i32) -> Option<T> {
        self.slots.get_mut(usize::try_from(partition).ok()?)?.take()
    }

    /// The partitions that have a value, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = (i32, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| Some((partition_of(index), slot.as_ref()?)))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (i32, &mut T)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(index, slot)| Some((partition_of(index), slot.as_mut()?)))
    }
}

fn partition_of(index: usize) -> i32 {
    i32::try_from(index).expect("indexes come from i32 partition numbers")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_map_of_partitions() {
        let mut map = PartitionMap::new();
        assert_eq!(map.get(3), None);
        assert_eq!(map.insert(3, "c"), None);
        assert_eq!(map.insert(0, "a"), None);
        assert_eq!(
            map.insert(3, "C"),
            Some("c"),
            "replaces and returns the old value"
        );
        assert_eq!(map.get(3), Some(&"C"));
        assert_eq!(map.get(1), None, "a hole stays empty");
        assert_eq!(map.get(100), None, "past the end");
        assert_eq!(map.get(-1), None, "librdkafka's 'unassigned' partition");
        *map.get_or_insert_with(1, || "b") = "B";
        assert_eq!(*map.get_or_insert_with(1, || "unused"), "B");
        assert_eq!(
            map.iter().collect::<Vec<_>>(),
            [(0, &"a"), (1, &"B"), (3, &"C")]
        );
        for (_, value) in map.iter_mut() {
            *value = "x";
        }
        assert_eq!(map.remove(1), Some("x"));
        assert_eq!(map.remove(1), None);
        assert_eq!(map.remove(-5), None);
        assert_eq!(map.iter().map(|(p, _)| p).collect::<Vec<_>>(), [0, 3]);
    }
}
