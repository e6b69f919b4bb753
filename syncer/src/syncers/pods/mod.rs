//! Placeholder: being written (issue 4).

use crate::{RegisterContext, Result};

/// Registers the syncers of this module that the configuration enables.
pub async fn register(_ctx: &RegisterContext) -> Result<()> {
    Ok(())
}
