//! Which driver a cluster belongs to, when `-d` does not say: every registered driver is asked,
//! concurrently, each for at most [`ASK_TIMEOUT`]. Each driver keeps the record of its own
//! clusters (the `local` driver its state directory, the `kubernetes` driver the labelled
//! objects on the host), so asking them is the record; nothing is cached beside it.
//!
//! A driver that lacks its configuration (no kubeconfig, no state directory) is skipped with a
//! note; one this binary cannot run is skipped silently. A driver that could not answer
//! (a host that does not answer) makes absence unconfirmed: "not found" is never said on a
//! failed answer, and a delete does not pick a cluster while another driver could not say
//! whether it has one of the same name.

use std::time::Duration;

use futures::future::join_all;

use super::{ClusterError, Driver, DriverOptions, DriverRegistration, Result};

/// How long one driver is given to answer.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// The registered drivers that can be asked, and the lines to tell the user about the others.
pub struct Drivers {
    /// Drivers that opened, in name order.
    pub open: Vec<Box<dyn Driver>>,
    /// One line per driver skipped for missing configuration.
    pub notes: Vec<String>,
}

/// Opens every registered driver; the ones that cannot be opened are left out (see the module
/// documentation).
pub fn open_all(options: &DriverOptions) -> Drivers {
    let mut registrations: Vec<&DriverRegistration> =
        inventory::iter::<DriverRegistration>.into_iter().collect();
    registrations.sort_by_key(|r| r.name);
    let mut drivers = Drivers {
        open: Vec::new(),
        notes: Vec::new(),
    };
    for registration in registrations {
        match (registration.factory)(options) {
            Ok(driver) => drivers.open.push(driver),
            Err(err) => drivers.notes.extend(skipped(registration.name, &err)),
        }
    }
    drivers
}

/// The note on a driver left out for `err`, one short line: none for one this binary cannot
/// run; for one without its configuration, where `-d` tells what is missing.
pub fn skipped(driver: &str, err: &ClusterError) -> Option<String> {
    match err {
        ClusterError::DriverUnavailable { .. } => None,
        ClusterError::MissingDriverConfig { .. } => Some(format!(
            "driver {driver} skipped: not configured (`-d {driver}` says what is missing)"
        )),
        err => Some(format!("driver {driver} skipped: {err}")),
    }
}

/// What one driver answered.
pub enum Answer<T> {
    /// It answered.
    Given(T),
    /// It lacks its configuration (skipped with a note).
    Skipped(ClusterError),
    /// It could not answer (its backend failed or did not answer in time).
    Failed(ClusterError),
}

/// Asks each driver `question` concurrently, each for at most [`ASK_TIMEOUT`]; answers in the
/// drivers' order.
pub async fn ask_each<'a, T, F>(drivers: &'a [Box<dyn Driver>], question: F) -> Vec<Answer<T>>
where
    F: Fn(&'a dyn Driver) -> futures::future::BoxFuture<'a, Result<T>>,
{
    join_all(drivers.iter().map(|driver| {
        let asked = question(driver.as_ref());
        async move {
            match tokio::time::timeout(ASK_TIMEOUT, asked).await {
                Ok(Ok(answer)) => Answer::Given(answer),
                Ok(Err(err @ ClusterError::MissingDriverConfig { .. })) => Answer::Skipped(err),
                Ok(Err(err)) => Answer::Failed(err),
                Err(_) => Answer::Failed(ClusterError::Other(anyhow::anyhow!(
                    "no answer within {}s",
                    ASK_TIMEOUT.as_secs()
                ))),
            }
        }
    }))
    .await
}

/// Whether the command about to run on the found cluster removes it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Reading or changing it (status, connect, pause, resume, exists).
    Use,
    /// Deleting it: no guess while another driver could not answer.
    Delete,
}

/// The one driver that knows cluster `name`; `notes` get a line per driver skipped or failed.
///
/// Errors: several drivers know it ([`ClusterError::BadInput`], exit 2, naming them); none does
/// and every driver answered ([`ClusterError::NotFound`], exit 10); none does, or this is a
/// delete, while a driver could not answer (that driver's failure, exit 1).
pub async fn find(
    name: &str,
    options: &DriverOptions,
    purpose: Purpose,
    notes: &mut Vec<String>,
) -> Result<Box<dyn Driver>> {
    let mut drivers = open_all(options);
    let answers = ask_each(&drivers.open, |driver| driver.exists(name)).await;
    let mut knowing = Vec::new();
    let mut failed = Vec::new();
    for (index, answer) in answers.into_iter().enumerate() {
        let driver = drivers.open[index].name();
        match answer {
            Answer::Given(true) => knowing.push(index),
            Answer::Given(false) => {}
            Answer::Skipped(err) => drivers.notes.extend(skipped(driver, &err)),
            Answer::Failed(err) => failed.push((driver, err)),
        }
    }
    notes.append(&mut drivers.notes);
    let unanswered: Vec<String> = failed
        .iter()
        .map(|(driver, err)| format!("driver {driver} could not be asked: {err:#}"))
        .collect();
    match knowing.as_slice() {
        [] if failed.is_empty() => Err(ClusterError::NotFound(name.to_string())),
        [] => Err(ClusterError::Other(anyhow::anyhow!(
            "cluster {name:?}: no driver that answered has it, and {} (pass -d to choose one)",
            unanswered.join("; ")
        ))),
        [one] if failed.is_empty() || purpose == Purpose::Use => {
            notes.extend(unanswered);
            Ok(drivers.open.swap_remove(*one))
        }
        [one] => {
            let driver = drivers.open[*one].name();
            Err(ClusterError::Other(anyhow::anyhow!(
                "cluster {name:?} is in driver {driver}, but {}: not deleting what may be \
                 another cluster of the same name (pass -d {driver} to delete it)",
                unanswered.join("; ")
            )))
        }
        several => {
            let names: Vec<&str> = several.iter().map(|i| drivers.open[*i].name()).collect();
            Err(ClusterError::BadInput(format!(
                "cluster {name:?} exists in drivers {}: choose one with -d (or VCSYNC_CLUSTER_DRIVER)",
                names.join(", ")
            )))
        }
    }
}
