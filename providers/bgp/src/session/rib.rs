//! Established sessions: the routes sent (Adj-RIB-Out) and their updates, computed as
//! the difference to what the peer already has.

use super::{Output, Session, State};
use crate::rib_out;
use crate::route::{Family, Routes};
use crate::update::end_of_rib;
use crate::wire;

impl Session {
    pub(super) fn establish(&mut self) {
        self.state = State::Established;
        self.backoff.reset();
        self.stats.established += 1;
        self.stats.last_error = None;
        self.advertised.clear();
        self.sync();
        let families = self
            .negotiated
            .as_ref()
            .map(|n| n.families.clone())
            .unwrap_or_default();
        for family in families {
            self.stats.end_of_rib_sent += 1;
            self.send_updates(end_of_rib(family).map(|m| vec![m]));
        }
    }

    /// Families we can send to this peer: negotiated and with a next hop.
    pub(super) fn sendable(&self, family: Family) -> bool {
        self.negotiated
            .as_ref()
            .is_some_and(|n| n.families.contains(&family) && n.builder.can_send(family))
    }

    /// Sends the difference between desired and advertised routes.
    pub(super) fn sync(&mut self) {
        let Some(n) = self.negotiated.clone() else {
            return;
        };
        let target: Routes = self
            .desired
            .iter()
            .filter(|(p, _)| self.sendable(Family::of(p)))
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        for batch in rib_out::diff(&n.builder, &self.advertised, &target) {
            self.send_updates(batch);
        }
        self.advertised = target;
        self.stats.prefixes_advertised = self.advertised.len();
    }

    /// Answers a ROUTE-REFRESH: everything of `family` again.
    pub(super) fn resend(&mut self, family: Family) {
        let Some(n) = self.negotiated.clone() else {
            return;
        };
        for batch in rib_out::full(&n.builder, &self.advertised, family) {
            self.send_updates(batch);
        }
    }

    pub(super) fn send_updates(&mut self, msgs: Result<Vec<Vec<u8>>, wire::EncodeError>) {
        match msgs {
            Ok(msgs) => {
                self.stats.updates_sent += msgs.len() as u64;
                self.out.extend(msgs.into_iter().map(Output::Transmit));
            }
            // Only our own data is encoded here; log rather than tear down.
            Err(e) => tracing::error!(error = %e, "cannot encode UPDATE; routes not sent"),
        }
    }
}
