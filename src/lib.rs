//! gridos-setup: bootstraps a Kubernetes cluster for progressive delivery (ingress-nginx, Flagger, Prometheus, the gridos Canary).
//!
//! Data flows one way: a validated request -> [`profile`] values -> [`render`]ed objects ->
//! checks -> apply -> wait -> guidance. The binary's `cli` turns arguments into requests; this
//! library never sees clap types.

pub mod adopt;
pub mod apply;
pub mod applyset;
pub mod canary;
pub mod certs;
pub mod cluster;
pub mod context;
pub mod dns;
pub mod error;
pub mod execute;
pub mod gateway;
pub mod guidance;
pub mod install;
pub mod interrupt;
pub mod lock;
pub mod permissions;
pub mod plan;
pub mod preflight;
pub mod profile;
pub mod progress;
pub mod prompt;
pub mod rbac;
pub mod render;
pub mod report;
pub mod retry;
pub mod status;
pub mod uninstall;
pub mod wait;
