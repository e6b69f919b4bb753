//! The registration sink: what syncers leave with the manager while they are registered
//! (controllers, background and leader tasks, readiness conditions), taken by
//! [`crate::manager`] when it starts. A syncer that takes a [`Registrar`] starts work; one
//! that does not, cannot.

use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, Shared};

use crate::metrics::Metrics;

/// Resolves when the manager shuts down; cloneable and shareable across controllers.
pub(crate) type Shutdown = Shared<BoxFuture<'static, ()>>;

/// A controller ready to run once caches are synced.
pub(crate) struct PreparedController {
    pub name: String,
    pub run: Box<dyn FnOnce(Shutdown, Arc<Metrics>) -> BoxFuture<'static, ()> + Send>,
}

/// Where registration leaves its work for the manager; cheap to clone, shared by all clones.
#[derive(Clone, Default)]
pub struct Registrar {
    inner: Arc<RegistrarInner>,
}

#[derive(Default)]
struct RegistrarInner {
    controllers: Mutex<Vec<PreparedController>>,
    background: Mutex<Vec<BoxFuture<'static, ()>>>,
    leader_tasks: Mutex<Vec<(String, BoxFuture<'static, ()>)>>,
    readiness: Mutex<Vec<BoxFuture<'static, ()>>>,
}

impl Registrar {
    /// Runs `task` from the start of the manager on, on every replica (feeding an index, say).
    pub fn spawn_background(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.inner
            .background
            .lock()
            .expect("background lock")
            .push(Box::pin(task));
    }

    /// Runs `task` once caches are synced, on the replica that writes.
    pub fn spawn(&self, name: &str, task: impl Future<Output = ()> + Send + 'static) {
        self.inner
            .leader_tasks
            .lock()
            .expect("tasks lock")
            .push((name.to_string(), Box::pin(task)));
    }

    /// Holds every controller back until `ready` resolves (an index filled from a watch, say),
    /// so that nothing acts on partial knowledge.
    pub fn add_readiness(&self, ready: impl Future<Output = ()> + Send + 'static) {
        self.inner
            .readiness
            .lock()
            .expect("readiness lock")
            .push(Box::pin(ready));
    }

    pub(crate) fn add_controller(&self, controller: PreparedController) {
        self.inner
            .controllers
            .lock()
            .expect("controllers lock")
            .push(controller);
    }

    pub(crate) fn take_controllers(&self) -> Vec<PreparedController> {
        std::mem::take(&mut *self.inner.controllers.lock().expect("controllers lock"))
    }

    pub(crate) fn take_background(&self) -> Vec<BoxFuture<'static, ()>> {
        std::mem::take(&mut *self.inner.background.lock().expect("background lock"))
    }

    pub(crate) fn take_leader_tasks(&self) -> Vec<(String, BoxFuture<'static, ()>)> {
        std::mem::take(&mut *self.inner.leader_tasks.lock().expect("tasks lock"))
    }

    pub(crate) fn take_readiness(&self) -> Vec<BoxFuture<'static, ()>> {
        std::mem::take(&mut *self.inner.readiness.lock().expect("readiness lock"))
    }
}
