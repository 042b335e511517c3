//! The dialog table's rules: which messages open, promote, refresh and end a pin, and
//! how a dialog holds the flow it uses.

use std::time::Instant;

use super::sync::dialog_item;
use super::{Router, RouterSettings};
use crate::relay::dialogs::{Dialog, Marks, Side, Span};
use crate::relay::flows::FlowTable;
use crate::relay::port::RelayPort;
use crate::sip::SipView;

/// Methods that open a dialog: its later requests and responses stay on one backend.
pub(super) fn opens_dialog(method: &[u8]) -> bool {
    matches!(method, b"INVITE" | b"SUBSCRIBE" | b"REFER")
}

/// Keeps a dialog entry alive while its messages flow, and shortens it once the
/// dialog or transaction is over (only retransmissions are left to route). `from`
/// sent `msg`.
pub(super) fn refresh(
    d: &mut Dialog,
    msg: &SipView<'_>,
    now: Instant,
    s: &RouterSettings,
    from: Side,
) {
    let final_status = msg.status().filter(|&c| c >= 200);
    let ending = msg.is_method(b"BYE")
        || (msg.cseq_is(b"BYE") && final_status.is_some())
        || (msg.cseq_is(b"INVITE") && final_status.is_some_and(|c| c >= 300));
    if ending {
        d.span = Span::Transaction;
        d.expires = now + s.transaction;
    } else if d.span == Span::Dialog {
        // In-dialog traffic either way keeps the dialog (and its flow), here and, once
        // the sweep re-sends it, on the sync peer.
        d.expires = now + s.dialog_idle;
        d.marks.set(Marks::REFRESHED, true);
    } else if from != d.opener
        && d.marks.has(Marks::OPENS)
        && msg.status().is_some_and(|c| (101..300).contains(&c))
        && msg.cseq_method().is_some_and(opens_dialog)
    {
        // The other side answered the dialog-opening request: a dialog now. The
        // opener's own retransmissions or answers never promote it, nor an answer
        // that only says its request opened a dialog.
        d.span = Span::Dialog;
        d.expires = now + s.dialog_idle;
    } else {
        d.expires = d.expires.max(now + s.transaction);
    }
}

/// Keeps a flow's count of dialogs in step with one dialog's span change (the flow
/// on `port` of generation `generation`: not a later one there).
pub(super) fn hold(
    flows: &mut FlowTable,
    port: RelayPort,
    generation: u16,
    before: Option<Span>,
    after: Option<Span>,
) {
    let was = before == Some(Span::Dialog);
    let is = after == Some(Span::Dialog);
    if was == is {
        return;
    }
    let Some(f) = flows
        .lookup_generation(port, generation)
        .and_then(|id| flows.get_mut(id))
    else {
        return;
    };
    if is {
        f.dialogs += 1;
    } else {
        f.dialogs = f.dialogs.saturating_sub(1);
    }
}

impl Router {
    /// After dialog entry `key` changed from `before` (None: new) to `after`: keeps
    /// its flow's hold in step, and tells the sync peer what changed (a new entry
    /// only if `sync_new`).
    pub(super) fn dialog_changed(
        &mut self,
        key: u128,
        before: Option<&Dialog>,
        after: &Dialog,
        sync_new: bool,
    ) {
        hold(
            &mut self.flows,
            after.flow,
            after.flow_gen,
            before.map(|d| d.span),
            Some(after.span),
        );
        let changed = match before {
            Some(b) => b.backend != after.backend || b.span != after.span,
            None => sync_new,
        };
        if changed {
            self.emit(dialog_item(key, after, &self.backends));
        }
    }
}

/// An expired entry the client opened, that no backend answered, no longer counts
/// against its flow's quota.
pub(super) fn unpin(flows: &mut FlowTable, d: &Dialog) {
    if !d.marks.has(Marks::AWAITING) {
        return;
    }
    if let Some(id) = flows.lookup_generation(d.flow, d.flow_gen) {
        flows.drop_pin(id);
    }
}
