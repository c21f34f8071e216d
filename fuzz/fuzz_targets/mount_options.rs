//! Feed arbitrary command lines to the mount program's parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unionfs::cmdline::{apply_option, parse_args, split_options, Parsed};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let args: Vec<String> = text.split('\0').map(str::to_string).collect();
    if let Ok(Parsed::Mount(cli)) = parse_args(args) {
        // Whatever was accepted names a mount point and no empty lower.
        assert!(
            !cli.mountpoint.as_os_str().is_empty(),
            "empty mount point accepted"
        );
        for l in &cli.cfg.lowers {
            if let unionfs::LowerSpec::Dir(p) = l {
                assert!(!p.as_os_str().is_empty(), "empty lower accepted");
            }
        }
        for r in cli.cfg.uid_map.iter().chain(cli.cfg.gid_map.iter()) {
            let _ = r.inside.checked_add(r.count);
        }
    }
    // Splitting never yields empty pieces, and re-applying each piece to a
    // fresh config gives an answer (never a panic).
    for piece in split_options(&text) {
        assert!(!piece.is_empty());
        let mut cfg = unionfs::MountConfig::default();
        let _ = apply_option(&mut cfg, &piece);
    }
});
