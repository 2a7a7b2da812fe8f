//! The registry of providers by class, and the tower stack every call goes through.
//!
//! Timeouts and a concurrency limit are set up once here rather than in each
//! provider: a hung appliance costs one timed-out call that is retried as
//! transient, and a burst of Services cannot open hundreds of calls to one
//! BIG-IP. Retries are not a tower layer: they are the controller's
//! per-Service backoff, which survives across reconciles.

use crate::config::ServiceControllerConfig;
use portway_provider::{LbNode, LbService, LbStatus, LoadBalancerProvider, ProviderError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

/// One provider call.
#[derive(Clone, Debug)]
pub enum Request {
    /// `ensure` with the eligible nodes.
    Ensure(LbService, Arc<Vec<LbNode>>),
    /// `update` with the eligible nodes.
    Update(LbService, Arc<Vec<LbNode>>),
    /// `ensure_deleted`.
    Delete(LbService),
}

impl Request {
    /// The operation's name, for metrics and logs.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Ensure(..) => "ensure",
            Request::Update(..) => "update",
            Request::Delete(_) => "ensure_deleted",
        }
    }
}

/// What a call returned.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// From `ensure`.
    Status(LbStatus),
    /// From `update` and `ensure_deleted`.
    Done,
}

type CallService = BoxCloneSyncService<Request, Reply, ProviderError>;

/// A provider with its middleware stack.
#[derive(Clone)]
pub struct Handle {
    provider: Arc<dyn LoadBalancerProvider>,
    service: CallService,
}

impl Handle {
    fn new(provider: Arc<dyn LoadBalancerProvider>, cfg: &ServiceControllerConfig) -> Self {
        let inner = provider.clone();
        let timeout = cfg.provider_timeout;
        let service = ServiceBuilder::new()
            .map_err(move |e: BoxError| timeout_error(e, timeout))
            .concurrency_limit(cfg.provider_concurrency)
            .timeout(timeout)
            .service_fn(move |call: Request| {
                let p = inner.clone();
                async move {
                    match call {
                        Request::Ensure(svc, nodes) => {
                            p.ensure(&svc, &nodes).await.map(Reply::Status)
                        }
                        Request::Update(svc, nodes) => {
                            p.update(&svc, &nodes).await.map(|()| Reply::Done)
                        }
                        Request::Delete(svc) => p.ensure_deleted(&svc).await.map(|()| Reply::Done),
                    }
                }
            });
        Self {
            provider,
            service: BoxCloneSyncService::new(service),
        }
    }

    /// The provider itself, for calls outside the per-Service path (`adopt`,
    /// `triggers`).
    pub fn provider(&self) -> &Arc<dyn LoadBalancerProvider> {
        &self.provider
    }

    /// Runs one call through the middleware.
    pub async fn call(&self, call: Request) -> Result<Reply, ProviderError> {
        self.service.clone().oneshot(call).await
    }
}

fn timeout_error(e: BoxError, timeout: Duration) -> ProviderError {
    match e.downcast::<ProviderError>() {
        Ok(e) => *e,
        Err(e) if e.is::<tower::timeout::error::Elapsed>() => ProviderError::transient(format!(
            "provider call timed out after {}",
            humantime::format_duration(timeout)
        )),
        Err(e) => ProviderError::transient(e.to_string()),
    }
}

/// Providers by the class they serve.
#[derive(Clone, Default)]
pub struct Registry {
    handles: BTreeMap<String, Handle>,
}

impl Registry {
    /// Registers every provider behind the configured middleware.
    pub fn new(
        providers: Vec<Arc<dyn LoadBalancerProvider>>,
        cfg: &ServiceControllerConfig,
    ) -> Self {
        let handles = providers
            .into_iter()
            .map(|p| (p.class().to_string(), Handle::new(p, cfg)))
            .collect();
        Self { handles }
    }

    /// The provider serving `class`, if one is registered.
    pub fn get(&self, class: &str) -> Option<&Handle> {
        self.handles.get(class)
    }

    /// Every registered provider, by class.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Handle)> {
        self.handles.iter().map(|(k, v)| (k.as_str(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use portway_provider::mock::MockProvider;

    struct Slow;

    #[async_trait]
    impl LoadBalancerProvider for Slow {
        fn class(&self) -> &str {
            "slow"
        }
        async fn ensure(&self, svc: &LbService, _: &[LbNode]) -> Result<LbStatus, ProviderError> {
            if svc.key.name == "slow" {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Err(ProviderError::invalid("spec.ports", "no"))
        }
        async fn update(&self, _: &LbService, _: &[LbNode]) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn ensure_deleted(&self, _: &LbService) -> Result<(), ProviderError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn timeout_becomes_transient_and_errors_pass_through() {
        let cfg = ServiceControllerConfig {
            provider_timeout: Duration::from_millis(50),
            ..Default::default()
        };
        let reg = Registry::new(vec![Arc::new(Slow)], &cfg);
        let h = reg.get("slow").expect("registered");
        let slow = LbService {
            key: portway_provider::ServiceKey::new("default", "slow"),
            ..Default::default()
        };
        let err = h
            .call(Request::Ensure(slow, Arc::default()))
            .await
            .expect_err("times out");
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("timed out after 50ms"), "{err}");
        let err = h
            .call(Request::Ensure(LbService::default(), Arc::default()))
            .await
            .expect_err("invalid");
        assert_eq!(err, ProviderError::invalid("spec.ports", "no"));
    }

    #[tokio::test]
    async fn dispatches_by_class() {
        let m = MockProvider::new("portway.dev/l2");
        let reg = Registry::new(vec![Arc::new(m.clone())], &Default::default());
        assert!(reg.get("portway.dev/bgp").is_none());
        let reply = reg
            .get("portway.dev/l2")
            .expect("registered")
            .call(Request::Ensure(LbService::default(), Arc::default()))
            .await
            .expect("ok");
        assert!(matches!(reply, Reply::Status(s) if s.ingress.len() == 1));
        assert_eq!(m.calls().len(), 1);
    }
}
