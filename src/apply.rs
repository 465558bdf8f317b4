//! Server-side apply of rendered objects with the field manager `gridos-setup`, resolving each kind through discovery.

use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};

use crate::render::Object;

pub const FIELD_MANAGER: &str = "gridos-setup";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{id}: the cluster does not serve {api_version} {kind}")]
    UnknownKind {
        id: String,
        api_version: String,
        kind: String,
    },
    #[error("{id}: {source}")]
    Api { id: String, source: kube::Error },
    #[error("discovery failed: {0}")]
    Discovery(kube::Error),
}

/// The cluster's API resources, refreshed after CRDs become Established.
pub struct Resolver {
    discovery: Discovery,
}

impl Resolver {
    pub async fn new(client: &Client) -> Result<Self, ApplyError> {
        let discovery = Discovery::new(client.clone())
            .run()
            .await
            .map_err(ApplyError::Discovery)?;
        Ok(Resolver { discovery })
    }

    pub fn resolve(&self, obj: &Object) -> Result<(ApiResource, ApiCapabilities), ApplyError> {
        let (group, version) = match obj.api_version().split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", obj.api_version()),
        };
        let gvk = GroupVersionKind::gvk(group, version, obj.kind());
        self.discovery
            .resolve_gvk(&gvk)
            .ok_or_else(|| ApplyError::UnknownKind {
                id: obj.id(),
                api_version: obj.api_version().into(),
                kind: obj.kind().into(),
            })
    }
}

/// Options of one apply call.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyOptions {
    pub dry_run: bool,
    pub force: bool,
}

/// Applies one object (server-side apply), returning what the server holds afterwards.
pub async fn apply_one(
    client: &Client,
    resolver: &Resolver,
    obj: &Object,
    opts: ApplyOptions,
) -> Result<DynamicObject, ApplyError> {
    let (ar, caps) = resolver.resolve(obj)?;
    let api: Api<DynamicObject> = match (caps.scope, obj.namespace()) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    };
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.dry_run = opts.dry_run;
    params.force = opts.force;
    api.patch(obj.name(), &params, &Patch::Apply(&obj.data))
        .await
        .map_err(|source| ApplyError::Api {
            id: obj.id(),
            source,
        })
}
