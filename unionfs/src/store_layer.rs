//! [`StoreLayer`]: a layer of a `layers-format` store as a read-only lower,
//! read straight from its mmap-ed index and blobs (no extraction).

use std::path::Path;
use std::sync::Arc;

use crate::layer::Layer;
use crate::Error;

/// A store layer (filled in once the store API is final).
pub struct StoreLayer;

/// Opens layer `layer` (hex id) of the store at `store`.
pub fn open_store_layer(store: &Path, layer: &str) -> Result<Arc<dyn Layer>, Error> {
    Err(Error::Store(format!(
        "store {}: layer {layer}: store layers are not available in this build",
        store.display()
    )))
}

/// The lowers of image `image` in store `store`, top layer first.
pub fn image_lowers(store: &Path, image: &str) -> Result<Vec<crate::LowerSpec>, Error> {
    Err(Error::Store(format!(
        "store {}: image {image}: store layers are not available in this build",
        store.display()
    )))
}
