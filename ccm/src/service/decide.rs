//! What one reconcile of one Service should do, as a pure function of what it sees.
//!
//! | # | the Service | remembered | step |
//! |---|---|---|---|
//! | 1 | a LoadBalancer of a class that is not Portway's (being deleted or not) | was served under a Portway class | [`Step::ReleaseForeign`] |
//! | 2 | a LoadBalancer of a class that is not Portway's (being deleted or not) | nothing | [`Step::Forget`] |
//! | 3 | not `type: LoadBalancer`, being deleted, or of a class switched off | holds the finalizer, or a provider was called for it | [`Step::Cleanup`] |
//! | 4 | not `type: LoadBalancer`, being deleted, or of a class switched off | nothing | [`Step::Forget`] |
//! | 5 | a Portway class that is not configured (named, or the default) | not parked for this spec | [`Step::Park`] |
//! | 6 | parked for this spec (a needs-a-fix error), not forced | | [`Step::Leave`] |
//! | 7 | ensured for this spec, same node set, not forced | | [`Step::Leave`] |
//! | 8 | ensured for this spec, node set changed, not forced | | [`Step::Update`] |
//! | 9 | anything else: new, changed, retried, forced by a provider | | [`Step::Ensure`] |
//!
//! Rows 1-2 come first: the shared upstream finalizer on another controller's Service is
//! that controller's, even while the Service is deleted. Row 3 follows upstream's
//! `processServiceDeletion` and its type-change handling: what
//! was provisioned is released whether or not someone stripped the finalizer. Row 5 keeps
//! the Service's address and finalizer: tearing down on a configuration mistake would lose
//! the allocation. An ensure is quiet (no `EnsuringLoadBalancer` event) when a provider
//! forced it, or on the first sync after a start of a Service already served.

use super::context::SvcState;

/// What the reconcile sees of one Service, reduced to what decides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// `spec.type` is `LoadBalancer`.
    pub load_balancer: bool,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// The effective class is one of Portway's (named, or the default).
    pub portway_class: bool,
    /// A provider is registered for the effective class.
    pub configured: bool,
    /// The effective class is switched off in the configuration (`hostport.enabled:
    /// false`): what it made is removed, its status cleared.
    pub retired: bool,
    /// The cleanup finalizer is on the Service.
    pub has_finalizer: bool,
    /// `status.loadBalancer.ingress` is not empty.
    pub has_status: bool,
    /// The spec's fingerprint ([`super::rules::lb_fingerprint`]).
    pub fingerprint: u64,
    /// The eligible node set's generation now.
    pub node_generation: u64,
    /// A provider asked for this reconcile (its watch saw a change).
    pub forced: bool,
}

/// Why a Service is parked without a provider call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParkReason {
    /// Its Portway class has no section in the configuration.
    NotConfigured,
}

/// The one thing to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do now.
    Leave,
    /// Nothing held: drop whatever is remembered.
    Forget,
    /// Tell the user once, keep everything, wait for a change.
    Park(ParkReason),
    /// Call `ensure`; `quiet` leaves out the `EnsuringLoadBalancer` event.
    Ensure {
        /// No progress events unless the status changes.
        quiet: bool,
    },
    /// Call `update` with the new node set.
    Update,
    /// Release everything, clear the status, drop the finalizer.
    Cleanup,
    /// Release what Portway provisioned under its own class before; leave the finalizer
    /// and status to the controller that serves the Service now.
    ReleaseForeign,
}

/// The decision table of the module's header.
pub fn decide(seen: &Seen, state: Option<&SvcState>) -> Step {
    if seen.load_balancer && !seen.portway_class {
        return if state.is_some_and(|st| st.served) {
            Step::ReleaseForeign
        } else {
            Step::Forget
        };
    }
    if !seen.load_balancer || seen.deleting || seen.retired {
        return if seen.has_finalizer
            || state.is_some_and(|st| st.served)
            || (seen.retired && seen.has_status)
        {
            Step::Cleanup
        } else {
            Step::Forget
        };
    }
    if !seen.configured {
        return if state.is_some_and(|st| st.parked == Some(seen.fingerprint)) && !seen.forced {
            Step::Leave
        } else {
            Step::Park(ParkReason::NotConfigured)
        };
    }
    if let Some(st) = state.filter(|_| !seen.forced) {
        if st.parked == Some(seen.fingerprint) {
            return Step::Leave;
        }
        if st.ensured == Some(seen.fingerprint) {
            return if st.node_generation == seen.node_generation {
                Step::Leave
            } else {
                Step::Update
            };
        }
    }
    let first_sync = state.is_none();
    Step::Ensure {
        quiet: seen.forced || (first_sync && seen.has_finalizer && seen.has_status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb() -> Seen {
        Seen {
            load_balancer: true,
            portway_class: true,
            configured: true,
            fingerprint: 7,
            node_generation: 1,
            ..Default::default()
        }
    }

    fn served(ensured: Option<u64>, generation: u64) -> SvcState {
        SvcState {
            class: "portway.dev/l2".into(),
            ensured,
            node_generation: generation,
            served: true,
            ..Default::default()
        }
    }

    /// One row per line of the table in the module's header, plus the edges around it.
    #[test]
    fn the_decision_table() {
        type Row = (&'static str, Seen, Option<SvcState>, Step);
        let rows: Vec<Row> = vec![
            // Row 3: not a LoadBalancer any more, or deleting, with something held.
            (
                "type changed, finalizer",
                Seen {
                    load_balancer: false,
                    has_finalizer: true,
                    ..lb()
                },
                None,
                Step::Cleanup,
            ),
            (
                "type changed, finalizer stripped",
                Seen {
                    load_balancer: false,
                    ..lb()
                },
                Some(served(Some(7), 1)),
                Step::Cleanup,
            ),
            (
                "deleting, finalizer",
                Seen {
                    deleting: true,
                    has_finalizer: true,
                    ..lb()
                },
                Some(served(Some(7), 1)),
                Step::Cleanup,
            ),
            (
                "deleting, finalizer stripped",
                Seen {
                    deleting: true,
                    ..lb()
                },
                Some(served(Some(7), 1)),
                Step::Cleanup,
            ),
            (
                "deleting a parked Service",
                Seen {
                    deleting: true,
                    has_finalizer: true,
                    configured: false,
                    ..lb()
                },
                None,
                Step::Cleanup,
            ),
            // Row 4.
            (
                "ClusterIP never served",
                Seen {
                    load_balancer: false,
                    ..lb()
                },
                None,
                Step::Forget,
            ),
            (
                "deleting, never ours",
                Seen {
                    deleting: true,
                    ..lb()
                },
                None,
                Step::Forget,
            ),
            (
                "class switched off, served",
                Seen {
                    retired: true,
                    has_finalizer: true,
                    has_status: true,
                    ..lb()
                },
                Some(served(Some(7), 1)),
                Step::Cleanup,
            ),
            (
                "class switched off, status from before",
                Seen {
                    retired: true,
                    has_status: true,
                    ..lb()
                },
                None,
                Step::Cleanup,
            ),
            (
                "class switched off, nothing",
                Seen {
                    retired: true,
                    ..lb()
                },
                None,
                Step::Forget,
            ),
            (
                "type changed, only ever parked",
                Seen {
                    load_balancer: false,
                    ..lb()
                },
                Some(SvcState {
                    parked: Some(7),
                    ..Default::default()
                }),
                Step::Forget,
            ),
            // Rows 1 and 2: another controller's class.
            (
                "moved to a foreign class",
                Seen {
                    portway_class: false,
                    ..lb()
                },
                Some(served(Some(7), 1)),
                Step::ReleaseForeign,
            ),
            (
                "foreign, with the shared finalizer",
                Seen {
                    portway_class: false,
                    has_finalizer: true,
                    has_status: true,
                    ..lb()
                },
                None,
                Step::Forget,
            ),
            (
                "foreign, deleting, with the shared finalizer",
                Seen {
                    portway_class: false,
                    deleting: true,
                    has_finalizer: true,
                    ..lb()
                },
                None,
                Step::Forget,
            ),
            (
                "moved to a foreign class, then deleted",
                Seen {
                    portway_class: false,
                    deleting: true,
                    ..lb()
                },
                Some(served(Some(7), 1)),
                Step::ReleaseForeign,
            ),
            (
                "foreign, only parked before",
                Seen {
                    portway_class: false,
                    ..lb()
                },
                Some(SvcState {
                    parked: Some(7),
                    ..Default::default()
                }),
                Step::Forget,
            ),
            // Row 5: a Portway class without its section, the default class included.
            (
                "class not configured",
                Seen {
                    configured: false,
                    has_finalizer: true,
                    has_status: true,
                    ..lb()
                },
                None,
                Step::Park(ParkReason::NotConfigured),
            ),
            (
                "not configured, told already",
                Seen {
                    configured: false,
                    ..lb()
                },
                Some(SvcState {
                    parked: Some(7),
                    ..Default::default()
                }),
                Step::Leave,
            ),
            (
                "not configured, spec changed",
                Seen {
                    configured: false,
                    fingerprint: 8,
                    ..lb()
                },
                Some(SvcState {
                    parked: Some(7),
                    ..Default::default()
                }),
                Step::Park(ParkReason::NotConfigured),
            ),
            // Row 6: parked by a needs-a-fix error.
            (
                "parked, same spec",
                lb(),
                Some(SvcState {
                    parked: Some(7),
                    ..Default::default()
                }),
                Step::Leave,
            ),
            (
                "parked, spec fixed",
                Seen {
                    fingerprint: 8,
                    ..lb()
                },
                Some(SvcState {
                    parked: Some(7),
                    ..Default::default()
                }),
                Step::Ensure { quiet: false },
            ),
            // Rows 7 and 8.
            ("in sync", lb(), Some(served(Some(7), 1)), Step::Leave),
            (
                "node set changed",
                Seen {
                    node_generation: 2,
                    ..lb()
                },
                Some(served(Some(7), 1)),
                Step::Update,
            ),
            // Row 9.
            ("new Service", lb(), None, Step::Ensure { quiet: false }),
            (
                "spec changed",
                Seen {
                    fingerprint: 8,
                    ..lb()
                },
                Some(served(Some(7), 1)),
                Step::Ensure { quiet: false },
            ),
            (
                "retry after a failure",
                lb(),
                Some(served(None, 1)),
                Step::Ensure { quiet: false },
            ),
            (
                "forced by a provider",
                Seen {
                    forced: true,
                    ..lb()
                },
                Some(served(Some(7), 1)),
                Step::Ensure { quiet: true },
            ),
            (
                "forced while parked",
                Seen {
                    forced: true,
                    ..lb()
                },
                Some(SvcState {
                    parked: Some(7),
                    ..Default::default()
                }),
                Step::Ensure { quiet: true },
            ),
            (
                "first sync after a restart, served",
                Seen {
                    has_finalizer: true,
                    has_status: true,
                    ..lb()
                },
                None,
                Step::Ensure { quiet: true },
            ),
            (
                "first sync, finalizer but no address",
                Seen {
                    has_finalizer: true,
                    ..lb()
                },
                None,
                Step::Ensure { quiet: false },
            ),
        ];
        for (name, seen, state, want) in rows {
            assert_eq!(decide(&seen, state.as_ref()), want, "{name}");
        }
    }
}
