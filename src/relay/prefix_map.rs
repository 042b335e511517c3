//! A set of CIDR prefixes with a value each, looked up by longest prefix: one hash
//! lookup per distinct prefix length present (usually one or two), not one comparison
//! per entry. Used by the access lists and the per-CIDR source limits.

use std::collections::HashMap;

use crate::config::{Cidr, V4_SPACE_LEN, is_v4_bits};

/// A set of prefixes, looked up by the prefix lengths it holds.
#[derive(Debug, Clone)]
pub(crate) struct PrefixMap<V> {
    map: HashMap<Cidr, V, foldhash::fast::RandomState>,
    /// Distinct prefix lengths present, longest first, with how many entries each.
    lens: Vec<(u8, u32)>,
}

impl<V> PrefixMap<V> {
    pub(crate) fn new() -> Self {
        PrefixMap {
            map: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            lens: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Cidr, &V)> {
        self.map.iter()
    }

    pub(crate) fn contains(&self, c: &Cidr) -> bool {
        self.map.contains_key(c)
    }

    pub(crate) fn insert(&mut self, c: Cidr, v: V) {
        if self.map.insert(c, v).is_none() {
            let l = c.bits_len();
            match self.lens.iter_mut().find(|(x, _)| *x == l) {
                Some((_, n)) => *n += 1,
                None => {
                    self.lens.push((l, 1));
                    self.lens.sort_by_key(|&(l, _)| std::cmp::Reverse(l));
                }
            }
        }
    }

    pub(crate) fn remove(&mut self, c: &Cidr) -> Option<V> {
        let v = self.map.remove(c)?;
        if let Some(i) = self.lens.iter().position(|(x, _)| *x == c.bits_len()) {
            self.lens[i].1 -= 1;
            if self.lens[i].1 == 0 {
                self.lens.remove(i);
            }
        }
        Some(v)
    }

    /// The longest prefix holding `bits`, with its value. An IPv4 address is held
    /// only by IPv4 prefixes: IPv6 ones shorter than /96 (`::/0`) cover the space
    /// IPv4 is kept in, but an operator who lists one means IPv6 hosts.
    #[inline]
    pub(crate) fn find(&self, bits: u128) -> Option<(&Cidr, &V)> {
        if self.map.is_empty() {
            return None;
        }
        let v4 = is_v4_bits(bits);
        self.lens
            .iter()
            .take_while(|&&(l, _)| !v4 || l >= V4_SPACE_LEN)
            .find_map(|&(l, _)| self.map.get_key_value(&Cidr::from_bits(bits, l)))
    }

    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        let gone: Vec<Cidr> = self
            .map
            .iter()
            .filter(|(_, v)| !keep(v))
            .map(|(c, _)| *c)
            .collect();
        for c in gone {
            self.remove(&c);
        }
    }
}
