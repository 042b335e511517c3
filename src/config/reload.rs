//! What a SIGHUP reload keeps: the sections it cannot rebuild stay as they run, in
//! one place for the dataplane's reload (which applies the rest and logs the notes)
//! and the server's check of the result before anything applies.

use super::{Config, ConfigError, Limits, SyncConfig, prefix, validate};

impl Config {
    /// Puts back from `running` what a reload cannot rebuild: `[listen]` (sockets and
    /// addresses; `forward_keepalives` applies now), `[hep]`, `[[peer]]` (fixed
    /// endpoints and sockets), `[vrrp]` (its own thread), and all of `[limits]` when a
    /// table size changed (the per-source defaults are shares of the sizes: computed
    /// from sizes that do not apply, they could let one source fill a table), and
    /// `[sync]`'s presence and addresses (its key rotates: the sync link's business).
    /// One note per section kept.
    pub fn keep_restart_only(&mut self, running: &Config) -> Vec<String> {
        let mut notes = Vec::new();
        let mut listen = running.listen.clone();
        listen.forward_keepalives = self.listen.forward_keepalives;
        keep(
            &mut notes,
            &mut self.listen,
            listen,
            "listen changes need a restart (forward_keepalives applies now); kept the running [listen]",
        );
        keep(
            &mut notes,
            &mut self.hep,
            running.hep.clone(),
            "hep changes need a restart; kept the running [hep]",
        );
        keep(
            &mut notes,
            &mut self.peers,
            running.peers.clone(),
            "peer changes need a restart; kept the running [[peer]]s",
        );
        keep(
            &mut notes,
            &mut self.vrrp,
            running.vrrp.clone(),
            "vrrp changes need a restart; kept the running [vrrp]",
        );
        let sizes = |l: &Limits| {
            (
                l.max_flows,
                l.max_dialogs,
                l.max_pins_per_flow,
                l.max_lingering_records,
            )
        };
        if sizes(&self.limits) != sizes(&running.limits) {
            notes.push(
                "limits.max_flows/max_dialogs/max_pins_per_flow/max_lingering_records changes need a restart; kept the running [limits] (per-source limits too: their defaults derive from the sizes)"
                    .to_string(),
            );
            self.limits = running.limits.clone();
        }
        notes.extend(keep_sync(&mut self.sync, &running.sync));
        notes
    }

    /// This config as a reload would apply it over `started` (what it keeps, and the
    /// sync addresses) must still hold: no backend that is a public address of ours or
    /// of the other family than the relay addresses, nothing inside the relay prefix.
    pub fn check_with_kept(&self, started: &Config) -> Result<(), ConfigError> {
        let mut merged = self.clone();
        merged.keep_restart_only(started);
        // A [sync] the file adds or removes applies at the next restart: check the
        // file's own, as it will run then.
        if self.sync.is_some() != started.sync.is_some() {
            merged.sync.clone_from(&self.sync);
        }
        for (i, b) in merged.backends.iter().enumerate() {
            validate::check_backend_against_listen(i, b.addr, &merged.listen)?;
        }
        prefix::check_outside_prefix(&merged)?;
        super::endpoints::check_own_endpoints(&merged)
    }
}

/// A section a reload cannot rebuild: if the new config changes it, `note` says so
/// and the running one is put back, so the next reload compares against what runs.
fn keep<T: PartialEq>(notes: &mut Vec<String>, new: &mut T, running: T, note: &str) {
    if *new != running {
        notes.push(note.to_string());
        *new = running;
    }
}

/// `[sync]`'s presence and addresses need a restart: `new` gets the running ones back,
/// with a note each (the key rotates: the sync link's business).
pub fn keep_sync(new: &mut Option<SyncConfig>, running: &Option<SyncConfig>) -> Vec<String> {
    let mut notes = Vec::new();
    match (running, new.as_mut()) {
        (None, None) => {}
        (Some(old), Some(n)) => {
            if (n.listen, n.peer) != (old.listen, old.peer) {
                notes.push(format!(
                    "sync.listen/peer changed: restart to apply; still {} <-> {}",
                    old.listen, old.peer
                ));
                (n.listen, n.peer) = (old.listen, old.peer);
            }
            let sizes =
                |c: &SyncConfig| (c.max_turn_changes, c.max_pending_changes, c.receive_buffer);
            if sizes(n) != sizes(old) {
                notes.push(format!(
                    "sync.max_turn_changes/max_pending_changes/receive_buffer changed: \
                     restart to apply; still {} / {} / {}",
                    old.max_turn_changes, old.max_pending_changes, old.receive_buffer
                ));
                (n.max_turn_changes, n.max_pending_changes, n.receive_buffer) = sizes(old);
            }
        }
        _ => {
            notes.push("[sync] added or removed: restart to apply; kept the running one".into());
            new.clone_from(running);
        }
    }
    notes
}
