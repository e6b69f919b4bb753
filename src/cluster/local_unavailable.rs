//! The `local` driver's place in a binary built without the `dev-tools` feature: it runs
//! embedded API servers, which such a binary does not carry. Asking for it says so, instead of
//! "not found".

use super::{ClusterError, DriverRegistration};

inventory::submit! {
    DriverRegistration {
        name: "local",
        about: "not in this binary (built without dev tools: the `dev-tools` cargo feature)",
        factory: |_| Err(ClusterError::DriverUnavailable {
            name: "local".into(),
            reason: "this binary was built without dev tools (the `dev-tools` cargo feature), \
                     and the local driver runs the embedded API servers they carry; use a \
                     default build (e.g. `cargo run -- cluster ...`) or the kubernetes driver"
                .into(),
        }),
    }
}
