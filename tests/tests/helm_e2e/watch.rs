//! Every Service's addresses, watched (not polled, so no flip is missed) from the moment it
//! is created: once a Service has an address, any event that shows another set of
//! addresses, or none, is a change.

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::watcher;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What the watch saw.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// Watch events handled (since [`AddressWatch::mark`]).
    pub(crate) events: usize,
    /// The first non-empty address set of each Service (namespace/name), since the mark.
    pub(crate) first: BTreeMap<String, Vec<String>>,
    /// The latest address set of each Service.
    pub(crate) now: BTreeMap<String, Vec<String>>,
    /// Changes after a Service had an address: (Service, from, to, seconds since start).
    pub(crate) changes: Vec<(String, Vec<String>, Vec<String>, f64)>,
}

/// A running watch; [`AddressWatch::stop`] ends it and returns what it saw.
pub(crate) struct AddressWatch {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

pub(crate) fn ips(s: &Service) -> Vec<String> {
    let mut out: Vec<String> = s
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .map(|i| i.iter().filter_map(|x| x.ip.clone()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

impl AddressWatch {
    /// Starts watching every Service of the cluster.
    pub(crate) fn start(admin: kube::Client) -> AddressWatch {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let api: Api<Service> = Api::all(admin);
            let mut stream = watcher(api, watcher::Config::default()).boxed();
            while let Some(ev) = stream.next().await {
                let svc = match ev {
                    Ok(watcher::Event::Apply(s)) | Ok(watcher::Event::InitApply(s)) => s,
                    Ok(watcher::Event::Delete(s)) => {
                        // A deleted Service is no longer watched (none is deleted while
                        // the upgrade is judged).
                        let key = format!(
                            "{}/{}",
                            s.metadata.namespace.as_deref().unwrap_or_default(),
                            s.metadata.name.as_deref().unwrap_or_default()
                        );
                        let mut seen = shared.lock().unwrap_or_else(|p| p.into_inner());
                        seen.now.remove(&key);
                        seen.first.remove(&key);
                        continue;
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        eprintln!("address watch: {e} (the watcher resumes)");
                        continue;
                    }
                };
                let key = format!(
                    "{}/{}",
                    svc.metadata.namespace.as_deref().unwrap_or_default(),
                    svc.metadata.name.as_deref().unwrap_or_default()
                );
                let now = ips(&svc);
                let mut seen = shared.lock().unwrap_or_else(|p| p.into_inner());
                seen.events += 1;
                if let Some(before) = seen.now.get(&key).cloned()
                    && seen.first.contains_key(&key)
                    && before != now
                {
                    let t = started.elapsed().as_secs_f64();
                    seen.changes.push((key.clone(), before, now.clone(), t));
                }
                if !now.is_empty() && !seen.first.contains_key(&key) {
                    seen.first.insert(key.clone(), now.clone());
                }
                seen.now.insert(key, now);
            }
        });
        AddressWatch { seen, task }
    }

    /// Starts the phase to judge: changes so far are forgotten, and from now on only the
    /// Services that have an address now (or get one later) count.
    pub(crate) fn mark(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.changes.clear();
        let with: BTreeMap<String, Vec<String>> = seen
            .now
            .iter()
            .filter(|(_, ips)| !ips.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        seen.first = with;
        seen.events = 0;
    }

    /// A copy of the addresses seen now.
    pub(crate) fn now(&self) -> BTreeMap<String, Vec<String>> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .now
            .clone()
    }

    /// Ends the watch.
    pub(crate) fn stop(self) -> Seen {
        self.task.abort();
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
