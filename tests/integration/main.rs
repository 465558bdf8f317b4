//! The one integration-test binary: offline command tests and cluster tests against the test control plane.
//!
//! Cluster tests are named `cluster_*`; they need `scripts/testenv up` and run inside its network
//! namespace (`scripts/testenv exec -- cargo test`). Without it they fail, never skip.

mod util;

mod adopt;
mod az_oracle;
mod bad_input;
mod canary;
mod certs;
mod check;
mod crds;
mod faults;
mod flagger;
mod fronts;
mod gateway;
mod gateway_rig;
mod grafana;
mod guidance;
mod guidance_gateway;
mod helm_real;
mod install;
mod interrupt;
mod lock;
mod operate;
mod prompt;
mod rbac;
mod readme;
mod render_cli;
mod render_cluster;
mod render_gateway;
mod secrets;
mod testenv;
mod wiring;
