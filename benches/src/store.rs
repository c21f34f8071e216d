//! The `strata-store` backend's preparation: the three lowers imported into
//! a strata store (layers-format) as the layers of one image, once; a marker
//! file holding the image id makes later runs reuse it.

use std::fs;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use layers_format::{DirFormat, NewImage, Store};

use crate::backend::StoreImage;
use crate::dataset::Dataset;
use crate::progress;

/// Name of the marker written after a complete import.
const MARKER: &str = "cowbench-imported";

/// Imports the dataset's lowers into `DIR/store-SCALE` unless a complete
/// import is already there.
pub fn prepare(dir: &Path, dataset: &Dataset) -> Result<StoreImage> {
    let scale = dataset.manifest.scale.name();
    let store_dir = dir.join(format!("store-{scale}"));
    let image = format!("cowbench:{scale}");
    let marker = store_dir.join(MARKER);
    if let Ok(recorded) = fs::read_to_string(&marker) {
        let store = Store::open(&store_dir)
            .with_context(|| format!("opening store {}", store_dir.display()))?;
        if store
            .resolve_image(&image)
            .is_ok_and(|rec| rec.id.to_hex() == recorded.trim())
        {
            progress!("store image {image} present in {}", store_dir.display());
            return Ok(StoreImage {
                store: store_dir,
                image,
            });
        }
    }
    if store_dir.exists() {
        fs::remove_dir_all(&store_dir)
            .with_context(|| format!("removing stale store {}", store_dir.display()))?;
    }
    let started = Instant::now();
    progress!("importing the lowers into store {}", store_dir.display());
    let store = Store::open(&store_dir)
        .with_context(|| format!("creating store {}", store_dir.display()))?;
    let mut layers = Vec::new();
    for lower in &dataset.lowers {
        let layer = store
            .import_layer_from_dir(lower, DirFormat::Plain)
            .with_context(|| {
                format!("importing {} into {}", lower.display(), store_dir.display())
            })?;
        layers.push(layer);
    }
    let record = store
        .add_image(
            &NewImage {
                layers,
                config: layers_format::import::default_config(),
                ..Default::default()
            },
            std::slice::from_ref(&image),
        )
        .with_context(|| format!("adding image {image} to {}", store_dir.display()))?;
    fs::write(&marker, record.id.to_hex())
        .with_context(|| format!("writing {}", marker.display()))?;
    nix::unistd::sync();
    progress!(
        "imported the lowers as image {image} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(StoreImage {
        store: store_dir,
        image,
    })
}
