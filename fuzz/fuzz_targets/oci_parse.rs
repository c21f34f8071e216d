//! Parse arbitrary bytes as every OCI document strata reads.
#![no_main]

use layers_format::oci;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = oci::parse_index("fuzz", data) {
        for d in &index.manifests {
            assert!(oci::check_digest("fuzz", &d.digest).is_ok());
        }
    }
    if let Ok(m) = oci::parse_manifest("fuzz", data) {
        assert!(oci::check_digest("fuzz", &m.config.digest).is_ok());
    }
    if let Ok(c) = oci::parse_config("fuzz", data) {
        if let Some(rc) = &c.config {
            let ic = rc.to_image_config();
            let back = oci::RunConfig::from_image_config(&ic);
            assert_eq!(back.to_image_config(), ic);
        }
    }
    let _ = oci::parse_docker_save_manifest("fuzz", data);
});
