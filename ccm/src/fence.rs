//! Writes only while leading: a tower layer on the controllers' API client that refuses
//! every write (anything but GET) once this process can no longer be sure it holds the
//! Lease, and the same check for provider calls.
//!
//! The clock decides, not the elector's loop: a process paused (SIGSTOP, a VM freeze)
//! for longer than its lease resumes with a queue of reconciles that would run before the
//! elector notices it lost. `CLOCK_MONOTONIC` keeps counting while a process is stopped, so
//! the time since the last successful renewal is the truth: past the renew deadline,
//! another replica may already lead, and nothing may be written. The status writes that
//! matter carry a resourceVersion precondition too, so a write that slipped through just
//! before a pause is refused by the API server if the new leader changed the Service.

use crate::leader::LeaderState;
use http::{Method, Request};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Whether this process may write now.
#[derive(Clone, Debug, Default)]
pub struct Fence {
    lease: Option<(Arc<LeaderState>, Duration)>,
}

impl Fence {
    /// No leader election: always open.
    pub fn always() -> Self {
        Self::default()
    }

    /// Open while `state` says this process leads and renewed within `renew_deadline`.
    pub fn lease(state: Arc<LeaderState>, renew_deadline: Duration) -> Self {
        Self {
            lease: Some((state, renew_deadline)),
        }
    }

    /// Whether a write may go out now.
    pub fn open(&self) -> bool {
        match &self.lease {
            None => true,
            Some((state, deadline)) => state.since_renewal().is_some_and(|d| d < *deadline),
        }
    }
}

/// The error a refused write gets: the reconcile fails and is retried (by this process if
/// it still leads after a renewal, else by the new leader).
#[derive(Debug, thiserror::Error)]
#[error("write refused: this process no longer holds the leader Lease")]
pub struct NotLeading;

/// A [`tower::Layer`] that fences writes.
#[derive(Clone, Debug)]
pub struct FenceLayer(pub Fence);

impl<S> tower::Layer<S> for FenceLayer {
    type Service = Fenced<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Fenced {
            inner,
            fence: self.0.clone(),
        }
    }
}

/// The fenced service.
#[derive(Clone, Debug)]
pub struct Fenced<S> {
    inner: S,
    fence: Fence,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<Request<B>> for Fenced<S>
where
    S: tower::Service<Request<B>>,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError>,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = BoxFuture<Result<S::Response, tower::BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let read = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        if !read && !self.fence.open() {
            return Box::pin(async { Err(NotLeading.into()) });
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Service, ServiceExt};

    #[derive(Clone)]
    struct Echo;

    impl Service<Request<()>> for Echo {
        type Response = &'static str;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<&'static str, std::convert::Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<()>) -> Self::Future {
            std::future::ready(Ok("sent"))
        }
    }

    fn req(method: Method) -> Request<()> {
        Request::builder()
            .method(method)
            .uri("/api/v1/services")
            .body(())
            .expect("request")
    }

    async fn send<S>(svc: &mut S, method: Method) -> Result<S::Response, S::Error>
    where
        S: Service<Request<()>>,
    {
        svc.ready().await?.call(req(method)).await
    }

    #[tokio::test]
    async fn a_closed_fence_refuses_writes_and_lets_reads_through() {
        let state = Arc::new(LeaderState::default());
        let fence = Fence::lease(state.clone(), Duration::from_secs(10));
        assert!(!fence.open(), "not leading yet");
        let mut svc = tower::Layer::layer(&FenceLayer(fence.clone()), Echo);
        let read = send(&mut svc, Method::GET).await;
        assert_eq!(read.expect("a read passes"), "sent");
        let write = send(&mut svc, Method::PATCH).await;
        assert!(write.expect_err("refused").is::<NotLeading>());
        state.set_leading_for_tests();
        assert!(fence.open());
        let write = send(&mut svc, Method::PATCH).await;
        assert_eq!(write.expect("a write passes while leading"), "sent");
        assert!(Fence::always().open());
    }
}
