//! The `strata-store` backend's preparation: the three lowers imported into
//! a strata store as the layers of one image, once, cached with a marker.

use std::path::Path;

use anyhow::{bail, Result};

use crate::backend::StoreImage;
use crate::dataset::Dataset;

/// Imports the dataset's lowers into `DIR/store-SCALE` unless already done.
pub fn prepare(_dir: &Path, _dataset: &Dataset, _unionfs: Option<&Path>) -> Result<StoreImage> {
    bail!("layers-format has no directory import API yet, so the dataset cannot be put in a store")
}
