//! What the provider reads from an HTTP exchange with the BIG-IP, and what it says about
//! one that failed, kept safe for logs and events.
//!
//! - A reply is read up to [`MAX_BODY`] bytes: a device (or whatever answers at its
//!   address) cannot make the controller buffer an unbounded body, and the controller's
//!   memory limit (256 MiB in `deploy/`) stays out of reach.
//! - A transport error is described without its URL. reqwest's error text names the URL,
//!   and two iControl REST calls carry the auth token in their path
//!   (`/mgmt/shared/authz/tokens/<token>`: extending and deleting it), so an error of
//!   theirs printed as is puts a live token into the log. [`Unreached`] keeps the error's
//!   kind for the Service's event and its causes (without the URL) for the log.

use portway_provider::ProviderError;
use std::error::Error as _;

/// The largest reply body read. A partition listed with `expandSubcollections=true` is
/// about 1-2 KiB per pool or virtual server, so this holds tens of thousands of Services.
pub(crate) const MAX_BODY: usize = 32 << 20;

/// A call that got no usable answer: not sent, not answered in time, or a reply that
/// could not be read.
#[derive(Debug)]
pub(crate) struct Unreached {
    /// What went wrong in a few words, for a Service's event.
    pub(crate) short: &'static str,
    /// The error and its causes, without any URL, for the log.
    pub(crate) detail: String,
}

impl Unreached {
    /// Describes a reqwest error without the URL it carries.
    pub(crate) fn from_reqwest(e: reqwest::Error) -> Unreached {
        let short = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else if e.is_body() || e.is_decode() {
            "reading the reply failed"
        } else {
            "request failed"
        };
        let e = e.without_url();
        let mut detail = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            detail.push_str(": ");
            detail.push_str(&c.to_string());
            cause = c.source();
        }
        Unreached { short, detail }
    }

    /// The Service's side of it: the BIG-IP was not reached, retried.
    pub(crate) fn error(&self, what: &str) -> ProviderError {
        ProviderError::transient(format!(
            "{what}: {}; the controller's log has the details",
            self.short
        ))
    }
}

/// Reads the body of `r` up to `limit` bytes, as text (invalid UTF-8 replaced).
pub(crate) async fn read_text(mut r: reqwest::Response, limit: usize) -> Result<String, Unreached> {
    let too_large = || Unreached {
        short: "reply too large",
        detail: format!(
            "the reply is larger than {} MiB and was not read",
            limit >> 20
        ),
    };
    if r.content_length()
        .is_some_and(|n| usize::try_from(n).map_or(true, |n| n > limit))
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(Unreached::from_reqwest)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_transport_error_is_described_without_its_url() {
        // Nothing listens on port 9 of loopback (discard): the connection is refused.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let secret_path = "http://127.0.0.1:9/mgmt/shared/authz/tokens/TOKEN-IN-PATH";
        let e = client
            .patch(secret_path)
            .send()
            .await
            .expect_err("nothing listens on port 9");
        assert!(
            e.to_string().contains("TOKEN-IN-PATH"),
            "reqwest names the URL"
        );
        let u = Unreached::from_reqwest(e);
        assert_eq!(u.short, "connection failed");
        assert!(!u.detail.contains("TOKEN-IN-PATH"), "{u:?}");
        assert!(!u.detail.contains("127.0.0.1:9/"), "{u:?}");
        assert!(!u.error("BIG-IP login").to_string().contains("127.0.0.1"));
    }
}
