//! The L2 gossip key from its Secret (`--gossip-secret NAMESPACE/NAME`), as MetalLB's
//! memberlist secret: key `secretkey` signs and verifies; every other key whose name
//! starts with `secretkey` (`secretkey.previous`, `secretkey-2024`) only verifies, so a key
//! is rotated without a flap: add the new one as `secretkey.next` everywhere, wait for
//! the speakers to read it (every [`EVERY`]), swap, remove the old one.
//!
//! The Secret is read with one `get` (RBAC: that one name) before the speaker starts and
//! every [`EVERY`] after. Without the flag, or while the Secret or its `secretkey` is
//! missing, the gossip runs unsigned and the speaker says so (log, metric
//! `portway_l2_gossip_signed` = 0): senders are still limited to Nodes' addresses.

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use portway_l2::GossipKeys;
use std::time::Duration;
use tokio::sync::watch;
use tracing::warn;

/// How often the Secret is read again.
pub const EVERY: Duration = Duration::from_secs(10);

/// The key that signs.
pub const SIGNING_KEY: &str = "secretkey";

/// `NAMESPACE/NAME` of the flag.
pub fn parse_ref(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!(
            "--gossip-secret {text:?}: want NAMESPACE/NAME, e.g. portway-system/portway-gossip"
        )),
    }
}

/// The keys a Secret holds: `secretkey` first, then the other `secretkey*` keys by name.
pub fn keys_of(secret: &Secret) -> GossipKeys {
    let data = secret.data.clone().unwrap_or_default();
    // No signing key: unsigned, whatever else the Secret holds.
    let Some(signing) = data.get(SIGNING_KEY).filter(|k| !k.0.is_empty()) else {
        return GossipKeys::default();
    };
    let mut keys = vec![signing.0.clone()];
    for (name, k) in &data {
        if name != SIGNING_KEY && name.starts_with(SIGNING_KEY) {
            keys.push(k.0.clone());
        }
    }
    GossipKeys::new(keys)
}

/// Reads the Secret now, then every [`EVERY`] into the returned channel.
pub async fn follow(client: Client, ns: String, name: String) -> watch::Receiver<GossipKeys> {
    let api: Api<Secret> = Api::namespaced(client, &ns);
    let read = move |api: Api<Secret>, ns: String, name: String| async move {
        match api.get_opt(&name).await {
            Ok(Some(s)) => {
                let keys = keys_of(&s);
                if keys.is_empty() {
                    warn!(secret = %format!("{ns}/{name}"), "the gossip Secret has no `secretkey`: L2 gossip is not signed");
                }
                Some(keys)
            }
            Ok(None) => {
                warn!(secret = %format!("{ns}/{name}"), "the gossip Secret does not exist: L2 gossip is not signed");
                Some(GossipKeys::default())
            }
            Err(e) => {
                warn!(secret = %format!("{ns}/{name}"), error = %e, "reading the gossip Secret; keeping the keys in use");
                None
            }
        }
    };
    let first = read(api.clone(), ns.clone(), name.clone())
        .await
        .unwrap_or_default();
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(EVERY).await;
            if let Some(keys) = read(api.clone(), ns.clone(), name.clone()).await {
                tx.send_if_modified(|k| {
                    let changed = *k != keys;
                    *k = keys;
                    changed
                });
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(entries: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn the_signing_key_comes_first_and_older_keys_verify() {
        let keys = keys_of(&secret(&[
            ("secretkey.previous", "old"),
            ("secretkey", "new"),
            ("other", "ignored"),
        ]));
        assert_eq!(
            keys,
            GossipKeys::new(vec![b"new".to_vec(), b"old".to_vec()])
        );
        assert!(keys_of(&secret(&[("secretkey.previous", "old")])).is_empty());
        assert!(keys_of(&secret(&[("secretkey", "")])).is_empty());
        assert!(keys_of(&Secret::default()).is_empty());
    }

    #[test]
    fn the_flag_names_namespace_and_secret() {
        assert_eq!(
            parse_ref("portway-system/portway-gossip"),
            Ok(("portway-system".into(), "portway-gossip".into()))
        );
        for bad in ["portway-gossip", "/x", "x/", "a/b/c"] {
            assert!(parse_ref(bad).is_err(), "{bad}");
        }
    }
}
