//! vcsync's syncer SDK and controller manager.
//!
//! Syncers implement the traits of [`sdk`] and are registered on a [`RegisterContext`] with
//! [`register_syncer`] or [`register_fake_syncer`] (typed kinds), or with
//! [`register_dynamic_syncer`] and [`register_dynamic_fake_syncer`] (kinds known at run time,
//! such as custom resources, given as a [`Kind`]); [`manager::run`] then runs them all on one
//! runtime (informers, caches, key queues, writes). The built-in syncers live in [`syncers`];
//! plugins register theirs the same way.
//!
//! This file only declares modules and re-exports. Inside the crate, imports point one way
//! (`tests/module_graph.py syncer/src` checks it): the leaves ([`resource`], [`error`],
//! [`config`], [`events`], [`action`]) first; then [`cache`], [`informer`], [`indices`],
//! [`hooks`], [`safety`], [`registrar`]; the capabilities of [`context`]; [`writes`],
//! [`controller`] (the key-queue runtime) and [`sdk`]; the syncer handlers and [`register`];
//! the built-in [`syncers`], [`plugin`] and [`manager`] last.
#![forbid(unsafe_code)]

pub mod action;
pub mod cache;
pub mod config;
pub mod context;
pub mod controller;
pub mod error;
pub mod events;
mod handlers;
pub mod hooks;
pub mod host_owner;
pub mod indices;
pub mod informer;
pub mod kubelet_config;
pub mod leader;
pub mod manager;
pub mod metrics;
pub mod plugin;
pub mod rbac;
pub mod register;
pub mod registrar;
pub mod resource;
pub mod safety;
pub mod sdk;
pub mod syncers;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod wire;
mod work_queue;
pub mod writes;

pub use action::Action;
pub use config::Config;
pub use context::{Caches, Clients, Oversight, RegisterContext, SyncContext};
pub use controller::ControllerBuilder;
pub use error::{Error, Result, Side};
pub use hooks::{Hook, Hooks};
pub use plugin::{Plugin, PluginConfig};
pub use register::{
    register_controller_starter, register_dynamic_fake_syncer, register_dynamic_syncer, register_fake_syncer,
    register_syncer,
};
pub use registrar::Registrar;
pub use sdk::{
    AnyResource, Base, ControllerModifier, ControllerStarter, FakeSyncer, IndicesRegisterer, Initializer,
    Kind, Starter, SyncResource, Syncer, Triggers, UpSyncer,
};
pub use writes::delete_object;
