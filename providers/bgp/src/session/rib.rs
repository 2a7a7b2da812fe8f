//! Established sessions: the routes sent (Adj-RIB-Out) and their updates, computed as
//! the difference to what the peer already has.

use super::{Output, Session, State};
use crate::rib_out;
use crate::route::{Family, RouteAttrs, Routes};
use crate::update::end_of_rib;
use crate::update::is_advertisable;
use crate::wire;
use ipnet::IpNet;
use std::time::Instant;

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

    /// Applies changes to the desired routes: `Some` adds or replaces a prefix, `None`
    /// removes it. When Established only these prefixes are compared with what the peer
    /// has and sent, so one changed Service costs the same with ten routes or ten
    /// thousand; [`Session::set_routes`] compares the whole table.
    pub fn update_routes(
        &mut self,
        _now: Instant,
        changes: impl IntoIterator<Item = (IpNet, Option<RouteAttrs>)>,
    ) {
        let mut touched = Vec::new();
        for (prefix, attrs) in changes {
            let prefix = prefix.trunc();
            if !is_advertisable(&prefix) {
                continue;
            }
            match attrs {
                Some(a) => self.desired.insert(prefix, a),
                None => self.desired.remove(&prefix),
            };
            touched.push(prefix);
        }
        if self.state != State::Established || touched.is_empty() {
            return;
        }
        let Some(n) = self.negotiated.clone() else {
            return;
        };
        let mut before = Routes::new();
        let mut after = Routes::new();
        for p in touched {
            if let Some(a) = self.advertised.get(&p) {
                before.insert(p, a.clone());
            }
            match self
                .desired
                .get(&p)
                .filter(|_| self.sendable(Family::of(&p)))
            {
                Some(a) => {
                    after.insert(p, a.clone());
                    self.advertised.insert(p, a.clone());
                }
                None => {
                    self.advertised.remove(&p);
                }
            }
        }
        for batch in rib_out::diff(&n.builder, &before, &after) {
            self.send_updates(batch);
        }
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
