//! The conformance kit's secrets as Secret objects in the backend's namespace, through a kube
//! client (the fake API server's, or a real cluster's).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use mcp_orchestrator_api::conformance::SecretStore;

/// Creates and deletes the kit's Secrets in one namespace.
pub(crate) struct KubeSecrets {
    api: Api<Secret>,
}

impl KubeSecrets {
    pub(crate) fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
        }
    }
}

#[async_trait::async_trait]
impl SecretStore for KubeSecrets {
    async fn put(&self, name: &str, data: &BTreeMap<String, String>) -> Result<(), String> {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            string_data: Some(data.clone()),
            ..Secret::default()
        };
        match self.api.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.remove(name).await?;
                self.api
                    .create(&PostParams::default(), &secret)
                    .await
                    .map(drop)
                    .map_err(|e| format!("creating Secret {name}: {e}"))
            }
            Err(e) => Err(format!("creating Secret {name}: {e}")),
        }
    }

    async fn remove(&self, name: &str) -> Result<(), String> {
        match self.api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(format!("deleting Secret {name}: {e}")),
        }
    }
}
