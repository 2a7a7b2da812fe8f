//! What the hostport provider may do in the cluster, and nothing more: DaemonSets, pods
//! (read) and the `svclb` ServiceAccount in its one namespace, and that namespace itself,
//! created if absent as k3s does. It never reads or writes Services: those come from the
//! controller.

use crate::provider::api_error;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};
use portway_provider::ProviderError;

/// The hostport provider's narrow handle on the API.
#[derive(Clone)]
pub struct HostportApi {
    client: Client,
    namespace: String,
}

impl HostportApi {
    /// A handle on `namespace` (the svclb namespace of the configuration).
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
        }
    }

    /// The svclb DaemonSets.
    pub fn daemonsets(&self) -> Api<DaemonSet> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The svclb pods (read only).
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates the namespace, called when a write found it missing (so the permission is
    /// needed only by clusters that lack it).
    pub async fn create_namespace(&self) -> Result<(), ProviderError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": self.namespace}}))
                .map_err(|e| ProviderError::transient(e.to_string()))?;
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 403 => Err(ProviderError::invalid(
                "hostport.namespace",
                format!(
                    "namespace {} does not exist and this controller may not create it: create \
                     it, or grant the controller `create` on namespaces",
                    self.namespace
                ),
            )),
            Err(e) => Err(api_error("creating the svclb namespace", e)),
        }
    }

    /// Creates the `svclb` ServiceAccount the pods run as, if it is missing (and the
    /// namespace first, if that is missing too).
    pub async fn ensure_account(&self) -> Result<(), ProviderError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        match api.get_opt("svclb").await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => {
                let created = self.create_account(&api).await;
                match created {
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        self.create_namespace().await?;
                        self.create_account(&api)
                            .await
                            .map_err(|e| api_error("creating ServiceAccount svclb", e))
                    }
                    other => other.map_err(|e| api_error("creating ServiceAccount svclb", e)),
                }
            }
            Err(e) => Err(api_error("reading ServiceAccount svclb", e)),
        }
    }

    async fn create_account(&self, api: &Api<ServiceAccount>) -> Result<(), kube::Error> {
        let sa: ServiceAccount = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "svclb", "namespace": self.namespace}
        }))
        .map_err(kube::Error::SerdeError)?;
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }
}
