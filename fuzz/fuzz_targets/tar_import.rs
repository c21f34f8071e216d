//! Import arbitrary bytes as a layer tar (any compression). An accepted
//! layer must open cleanly and its export must import to the same layer.
#![no_main]

use std::sync::OnceLock;

use layers_format::{Compression, Store};
use libfuzzer_sys::fuzz_target;

fn store() -> &'static Store {
    static STORE: OnceLock<(tempfile::TempDir, Store)> = OnceLock::new();
    let (_, store) = STORE.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        };
        let dir = tempfile::tempdir_in(base).expect("temp dir for the fuzz store");
        let store = Store::open(&dir.path().join("store")).expect("open fuzz store");
        (dir, store)
    });
    store
}

fuzz_target!(|data: &[u8]| {
    let store = store();
    let Ok(imported) = store.import_layer_tar(data, Compression::Auto) else {
        return;
    };
    let index = store
        .open_layer(&imported.layer)
        .expect("an imported layer opens");
    let mut tar = Vec::new();
    store
        .export_layer_tar(&imported.layer, &mut tar)
        .expect("an imported layer exports");
    let again = store
        .import_layer_tar(&tar[..], Compression::None)
        .expect("an exported layer imports");
    let index2 = store
        .open_layer(&again.layer)
        .expect("re-imported layer opens");
    assert_eq!(index.dirent_count(), index2.dirent_count());
});
