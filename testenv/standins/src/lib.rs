//! Pieces the stand-in programs share: watched stores and the client of the test control plane.

use std::path::Path;

use anyhow::{Context, Result};
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};

/// A store kept current by a watch, retried with backoff (e.g. while a CRD is not there yet).
pub fn spawn_reflector<K>(api: Api<K>, config: watcher::Config, dyntype: K::DynamicType) -> Store<K>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let writer = reflector::store::Writer::new(dyntype);
    let reader = writer.as_reader();
    let stream = watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    tokio::spawn(async move {
        let mut stream = stream.boxed();
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                tracing::debug!("watch: {e}");
            }
        }
    });
    reader
}

/// A client of the cluster a kubeconfig file names.
pub async fn client(kubeconfig: &Path) -> Result<Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(Client::try_from(config)?)
}
