//! The backend set as the router sees it: address, rendezvous seed, health, admin
//! state. Slots keep their index for life, so flows and dialogs can refer to a
//! backend by a small integer across config reloads.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::hrw;
use crate::config::Backend;

/// A backend's slot in the [`BackendSet`]. Slots keep their index for life (a
/// reload reuses a slot only once it is vacant), so flows, dialogs, health and
/// metrics refer to a backend by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(u16);

impl BackendId {
    pub const fn new(slot: u16) -> Self {
        BackendId(slot)
    }

    /// Slot `i` of a set; sets hold at most `u16::MAX` backends (config checks).
    pub fn from_index(i: usize) -> Self {
        BackendId(u16::try_from(i).unwrap_or(u16::MAX))
    }

    /// For per-backend arrays.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for BackendId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A static peer (trunk), by its position in the config's `[[peer]]` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId(pub u16);

/// Operator's say over a backend, independent of its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// Takes new flows.
    Enabled,
    /// No new flows; existing ones stay until they move by failback or expire.
    Draining,
    /// No traffic: its flows move to the next choice at once.
    Disabled,
}

impl AdminState {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Enabled => "enabled",
            AdminState::Draining => "draining",
            AdminState::Disabled => "disabled",
        }
    }
}

#[derive(Debug, Clone)]
pub struct BackendSlot {
    pub name: String,
    pub addr: SocketAddr,
    seed: u64,
    /// From health checks (or assumed at start).
    pub up: bool,
    pub admin: AdminState,
    pub tenure: Tenure,
}

/// A slot's place in the config's life: a removed backend drains, then its slot is
/// vacated and may be reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tenure {
    Configured,
    /// Removed by a reload; serves its flows until none is left.
    Removed,
    /// Free for reuse: matches no address, takes no traffic.
    Vacant,
}

impl BackendSlot {
    fn new(b: &Backend) -> Self {
        BackendSlot {
            name: b.name.clone(),
            addr: b.addr,
            seed: hrw::seed(&b.name),
            up: true,
            admin: AdminState::Enabled,
            tenure: Tenure::Configured,
        }
    }

    pub fn is_configured(&self) -> bool {
        self.tenure == Tenure::Configured
    }

    pub fn is_vacant(&self) -> bool {
        self.tenure == Tenure::Vacant
    }

    /// May new flows (and flows leaving a dead home) come here?
    pub fn accepts_new(&self) -> bool {
        self.is_configured() && self.up && self.admin == AdminState::Enabled
    }

    /// May flows that already live here stay?
    pub fn serves(&self) -> bool {
        !self.is_vacant() && self.up && self.admin != AdminState::Disabled
    }
}

/// What a config reload changed, for the health checker and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added(BackendId),
    Readded(BackendId),
    AddressChanged(BackendId),
    Removed(BackendId),
}

#[derive(Debug, Clone, Default)]
pub struct BackendSet {
    slots: Vec<BackendSlot>,
}

impl BackendSet {
    pub fn new(backends: &[Backend]) -> Self {
        BackendSet {
            slots: backends.iter().map(BackendSlot::new).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn get(&self, id: BackendId) -> Option<&BackendSlot> {
        self.slots.get(id.index())
    }

    pub fn get_mut(&mut self, id: BackendId) -> Option<&mut BackendSlot> {
        self.slots.get_mut(id.index())
    }

    pub fn iter(&self) -> impl Iterator<Item = (BackendId, &BackendSlot)> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| (BackendId::from_index(i), s))
    }

    /// Linear: there are few backends, and a scan of a few addresses beats hashing.
    /// A configured backend wins over a removed one at the same address (a backend
    /// renamed by a reload keeps its address: its datagrams are the new name's).
    #[inline]
    pub fn by_addr(&self, a: &SocketAddr) -> Option<BackendId> {
        let mut removed = None;
        for (i, b) in self.slots.iter().enumerate() {
            if b.addr == *a {
                if b.is_configured() {
                    return Some(BackendId::from_index(i));
                }
                if removed.is_none() && !b.is_vacant() {
                    removed = Some(BackendId::from_index(i));
                }
            }
        }
        removed
    }

    pub fn by_name(&self, name: &str) -> Option<BackendId> {
        self.slots
            .iter()
            .position(|b| b.name == name && b.is_configured())
            .map(BackendId::from_index)
    }

    /// The rendezvous seed (a hash of the name) that names a backend to the sync peer.
    pub fn seed_of(&self, id: BackendId) -> u64 {
        self.get(id).map_or(0, |b| b.seed)
    }

    /// The live slot whose name has this seed.
    pub fn by_seed(&self, seed: u64) -> Option<BackendId> {
        self.slots
            .iter()
            .position(|b| b.seed == seed && !b.is_vacant())
            .map(BackendId::from_index)
    }

    pub fn serves(&self, id: BackendId) -> bool {
        self.get(id).is_some_and(BackendSlot::serves)
    }

    /// Highest-random-weight choice among backends that accept new flows.
    pub fn choose(&self, client: &SocketAddr) -> Option<BackendId> {
        self.choose_among(client, &[])
    }

    /// `choose` restricted to the backends named by `seeds` (empty: all).
    pub fn choose_among(&self, client: &SocketAddr, seeds: &[u64]) -> Option<BackendId> {
        let key = hrw::client_key(client);
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, b)| b.accepts_new() && (seeds.is_empty() || seeds.contains(&b.seed)))
            .max_by_key(|(_, b)| hrw::score(key, b.seed))
            .map(|(i, _)| BackendId::from_index(i))
    }

    /// Applies a new backend list (by name). Admin state survives; a removed backend
    /// drains; a re-added one comes back enabled.
    pub fn update(&mut self, new: &[Backend]) -> Vec<Change> {
        let mut changes = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.is_configured() && !new.iter().any(|b| b.name == slot.name) {
                slot.tenure = Tenure::Removed;
                slot.admin = AdminState::Draining;
                changes.push(Change::Removed(BackendId::from_index(i)));
            }
        }
        for b in new {
            let existing = self
                .slots
                .iter()
                .position(|s| s.name == b.name && !s.is_vacant());
            match existing {
                Some(i) => {
                    let s = &mut self.slots[i];
                    if s.tenure == Tenure::Removed {
                        s.tenure = Tenure::Configured;
                        s.admin = AdminState::Enabled;
                        changes.push(Change::Readded(BackendId::from_index(i)));
                    }
                    if s.addr != b.addr {
                        s.addr = b.addr;
                        s.up = true;
                        changes.push(Change::AddressChanged(BackendId::from_index(i)));
                    }
                }
                None => {
                    let slot = BackendSlot::new(b);
                    let i = match self.slots.iter().position(BackendSlot::is_vacant) {
                        Some(i) => {
                            self.slots[i] = slot;
                            i
                        }
                        None => {
                            self.slots.push(slot);
                            self.slots.len() - 1
                        }
                    };
                    changes.push(Change::Added(BackendId::from_index(i)));
                }
            }
        }
        changes
    }

    /// Frees removed backends that no flow calls home any more.
    pub fn vacate_unused(&mut self, flows_per_backend: &[usize]) -> Vec<BackendId> {
        let mut freed = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.tenure == Tenure::Removed && flows_per_backend.get(i).copied().unwrap_or(0) == 0 {
                s.tenure = Tenure::Vacant;
                freed.push(BackendId::from_index(i));
            }
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u16) -> BackendId {
        BackendId::new(i)
    }

    fn b(name: &str, port: u16) -> Backend {
        Backend {
            name: name.into(),
            addr: SocketAddr::from(([10, 0, 0, 1], port)),
        }
    }

    #[test]
    fn reload_keeps_indices_drains_removed_and_reuses_vacant_slots() {
        let mut s = BackendSet::new(&[b("a", 1), b("b", 2)]);
        s.get_mut(id(0)).unwrap().admin = AdminState::Draining;
        let ch = s.update(&[b("a", 1), b("c", 3)]);
        assert_eq!(ch, vec![Change::Removed(id(1)), Change::Added(id(2))]);
        assert_eq!(
            s.get(id(0)).unwrap().admin,
            AdminState::Draining,
            "admin state kept"
        );
        assert!(s.serves(id(1)) && !s.get(id(1)).unwrap().accepts_new());
        assert_eq!(s.vacate_unused(&[5, 3, 0]), Vec::<BackendId>::new());
        assert_eq!(s.vacate_unused(&[5, 0, 0]), vec![id(1)]);
        assert_eq!(s.by_addr(&SocketAddr::from(([10, 0, 0, 1], 2))), None);
        let ch = s.update(&[b("a", 9), b("c", 3), b("d", 4)]);
        assert_eq!(
            ch,
            vec![Change::AddressChanged(id(0)), Change::Added(id(1))]
        );
        assert_eq!(s.get(id(1)).unwrap().name, "d");
        assert_eq!(s.by_name("a"), Some(id(0)));
    }

    /// A backend renamed at the same address: its datagrams are the new name's, while
    /// the old slot drains (it stays removed, and is freed once unused).
    #[test]
    fn a_renamed_backend_owns_its_address() {
        let mut s = BackendSet::new(&[b("a", 1), b("b", 2)]);
        let ch = s.update(&[b("a", 1), b("b2", 2)]);
        assert_eq!(ch, vec![Change::Removed(id(1)), Change::Added(id(2))]);
        assert_eq!(
            s.by_addr(&SocketAddr::from(([10, 0, 0, 1], 2))),
            Some(id(2))
        );
    }
}
