//! Portway: a Kubernetes cloud-controller-manager for clusters that have no cloud.
//!
//! The binary runs as the cluster's service controller: every Service of
//! `type: LoadBalancer` is handed, by its `spec.loadBalancerClass`, to one of the
//! providers registered in [`service::Registry`]. This library holds the
//! controllers so that tests, benchmarks and the sandbox run them in-process.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod crd;
pub mod events;
pub mod explain;
pub mod fence;
pub mod health;
pub mod import;
pub mod k8s;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod node;
pub mod pools;
pub mod process;
pub mod providers;
pub mod sandbox;
pub mod service;
pub mod speaker;
pub mod trim;
