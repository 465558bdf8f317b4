//! The one integration-test binary: offline command tests and cluster tests against the test control plane.
//!
//! Cluster tests are named `cluster_*`; they need `scripts/testenv up` and run inside its network
//! namespace (`scripts/testenv exec -- cargo test`). Without it they fail, never skip.

mod util;

mod canary;
mod check;
mod guidance;
mod install;
mod operate;
mod rbac;
mod render_cli;
mod render_cluster;
mod testenv;
mod wiring;
