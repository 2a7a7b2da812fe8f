//! The keys whose values differ between two ordered maps, in one merged walk: a change
//! check that costs a comparison per entry and no allocation besides its answer (the
//! node agent compares its last table or status with the new one on every change).

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Keys present in one map only, or in both with different values, in key order.
pub fn changed_keys<K: Ord + Clone, V: PartialEq>(
    a: &BTreeMap<K, V>,
    b: &BTreeMap<K, V>,
) -> Vec<K> {
    let mut out = Vec::new();
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    loop {
        let step = match (a.peek(), b.peek()) {
            (None, None) => return out,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
        };
        match step {
            Ordering::Less => out.extend(a.next().map(|(k, _)| k.clone())),
            Ordering::Greater => out.extend(b.next().map(|(k, _)| k.clone())),
            Ordering::Equal => {
                if let (Some((k, va)), Some((_, vb))) = (a.next(), b.next())
                    && va != vb
                {
                    out.push(k.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_removed_and_changed_keys_in_order() {
        let a: BTreeMap<u8, &str> = [(1, "x"), (2, "y"), (4, "z"), (6, "w")].into();
        let b: BTreeMap<u8, &str> = [(2, "y"), (3, "n"), (4, "Z"), (7, "v")].into();
        assert_eq!(changed_keys(&a, &b), vec![1, 3, 4, 6, 7]);
        assert_eq!(changed_keys(&b, &a), vec![1, 3, 4, 6, 7]);
        assert!(changed_keys(&a, &a.clone()).is_empty());
        assert_eq!(changed_keys(&BTreeMap::new(), &a), vec![1, 2, 4, 6]);
    }
}
