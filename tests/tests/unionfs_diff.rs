//! Differential tests: the same operation sequences on kernel overlayfs and
//! on unionfs over identical copies of the same lower/upper trees. Errno per
//! op, the visible trees, the upper directories' format, and both
//! cross-remounts must match (see `strata_tests::snapshot` for what is
//! compared and what deliberately is not). Needs root and the built
//! `unionfs` binary (`cargo build -p unionfs`, or `STRATA_UNIONFS`).
//!
//! Each scripted test covers one semantic area; `random_sequences_fixed_seeds`
//! runs generated sequences and reports every failing seed at the end.

use strata_tests::diff::{check, Config};
use strata_tests::{scenario_from_seed, LayerSpec, Node, Op, RenameMode, Scenario};

fn cfg() -> Config {
    let mut c = Config::full().unwrap_or_else(|e| panic!("{e:#}"));
    c.minimise_budget = 25;
    c
}

fn assert_same(sc: &Scenario) {
    if let Err(e) = check(sc, &cfg()) {
        panic!("unionfs diverges from kernel overlayfs: {e}");
    }
}

fn sc(lowers: Vec<Vec<Node>>, ops: Vec<Op>) -> Scenario {
    Scenario {
        lowers: lowers.into_iter().map(LayerSpec::new).collect(),
        upper: LayerSpec::default(),
        ops,
    }
}

fn p(s: &str) -> String {
    s.to_string()
}

fn write(path: &str, offset: u64, len: u32) -> Op {
    Op::Write {
        path: p(path),
        offset,
        len,
        byte: 7,
    }
}

fn base_tree() -> Vec<Vec<Node>> {
    vec![
        vec![
            Node::dir("d").mode(0o750).owner(1000, 1000),
            Node::file("d/top", b"top layer\n"),
            Node::file("shared", b"from the top lower\n")
                .mode(0o640)
                .owner(1001, 1000)
                .xattr("user.x", b"top"),
            Node::whiteout("gone"),
        ],
        vec![
            Node::dir("d"),
            Node::file("d/mid", b"middle\n"),
            Node::file("shared", b"hidden middle version\n"),
            Node::file("gone", b"must stay hidden\n"),
            Node::symlink("link", "d/mid"),
            Node::fifo("pipe"),
        ],
        vec![
            Node::dir("d/sub").mode(0o700).owner(1001, 1001),
            Node::file("d/sub/deep", &vec![b'x'; 20_000]).mode(0o4755),
            Node::file("big", &vec![b'b'; 300_000])
                .mode(0o600)
                .owner(1000, 1001)
                .xattr("user.y", b"bottom"),
            Node::file("hl1", b"hardlinked\n"),
            Node::hardlink("hl2", "hl1"),
            Node::opaque_dir("op"),
            Node::file("op/inside", b"in opaque\n"),
        ],
    ]
}

fn on_base(ops: Vec<Op>) -> Scenario {
    sc(base_tree(), ops)
}

// ---- reading the layers (no ops) ----

#[test]
fn merged_view_with_whiteouts_and_opaque_dirs() {
    assert_same(&on_base(vec![]));
}

#[test]
fn opaque_dir_in_middle_lower_hides_bottom() {
    assert_same(&sc(
        vec![
            vec![Node::file("o/top", b"1")],
            vec![Node::opaque_dir("o"), Node::file("o/mid", b"2")],
            vec![Node::file("o/bottom", b"3"), Node::file("o/mid", b"hidden")],
        ],
        vec![],
    ));
}

#[test]
fn whiteout_and_opaque_in_initial_upper() {
    let mut s = on_base(vec![Op::Create {
        path: p("d/new"),
        mode: 0o644,
        excl: true,
    }]);
    s.upper = LayerSpec::new(vec![
        Node::whiteout("shared"),
        Node::opaque_dir("d"),
        Node::file("d/up", b"upper"),
    ]);
    assert_same(&s);
}

// ---- copy-up ----

#[test]
fn copy_up_on_write_preserves_metadata() {
    assert_same(&on_base(vec![write("shared", 3, 5)]));
}

#[test]
fn copy_up_on_append() {
    assert_same(&on_base(vec![Op::Append {
        path: p("big"),
        len: 100,
        byte: 1,
    }]));
}

#[test]
fn copy_up_on_truncate_shrink_and_grow() {
    assert_same(&on_base(vec![
        Op::Truncate {
            path: p("big"),
            len: 10,
        },
        Op::Truncate {
            path: p("d/mid"),
            len: 5000,
        },
    ]));
}

#[test]
fn copy_up_nested_parents_keep_their_attributes() {
    assert_same(&on_base(vec![write("d/sub/deep", 100, 10)]));
}

#[test]
fn copy_up_sparse_write_far_past_eof() {
    assert_same(&on_base(vec![write("d/top", 70_000, 10)]));
}

#[test]
fn create_trunc_on_lower_file_copies_up_empty() {
    assert_same(&on_base(vec![Op::Create {
        path: p("shared"),
        mode: 0o600,
        excl: false,
    }]));
}

#[test]
fn create_excl_on_lower_file_is_eexist() {
    assert_same(&on_base(vec![Op::Create {
        path: p("d/mid"),
        mode: 0o600,
        excl: true,
    }]));
}

#[test]
fn write_through_symlink_copies_up_target() {
    assert_same(&on_base(vec![
        write("link", 0, 3),
        Op::Truncate {
            path: p("link"),
            len: 2,
        },
    ]));
}

// ---- whiteouts ----

#[test]
fn unlink_lower_file_then_recreate() {
    assert_same(&on_base(vec![
        Op::Unlink { path: p("shared") },
        Op::Create {
            path: p("shared"),
            mode: 0o600,
            excl: true,
        },
        write("shared", 0, 10),
    ]));
}

#[test]
fn unlink_lower_file_then_mkdir_same_name() {
    assert_same(&on_base(vec![
        Op::Unlink { path: p("d/mid") },
        Op::Mkdir {
            path: p("d/mid"),
            mode: 0o755,
        },
    ]));
}

#[test]
fn recreate_over_lower_whiteout() {
    assert_same(&on_base(vec![
        Op::Mkfifo {
            path: p("gone"),
            mode: 0o600,
        },
        Op::Unlink { path: p("gone") },
    ]));
}

#[test]
fn unlink_symlink_and_fifo_from_lower() {
    assert_same(&on_base(vec![
        Op::Unlink { path: p("link") },
        Op::Unlink { path: p("pipe") },
    ]));
}

// ---- rmdir, mkdir, opaque ----

#[test]
fn rmdir_merged_dir_then_mkdir_is_opaque() {
    assert_same(&on_base(vec![
        Op::Unlink {
            path: p("d/sub/deep"),
        },
        Op::Rmdir { path: p("d/sub") },
        Op::Unlink { path: p("d/top") },
        Op::Unlink { path: p("d/mid") },
        Op::Rmdir { path: p("d") },
        Op::Mkdir {
            path: p("d"),
            mode: 0o711,
        },
        Op::Create {
            path: p("d/fresh"),
            mode: 0o644,
            excl: true,
        },
    ]));
}

#[test]
fn rmdir_non_empty_merged_dir_is_enotempty() {
    assert_same(&on_base(vec![
        Op::Rmdir { path: p("d") },
        Op::Unlink { path: p("d") },
    ]));
}

#[test]
fn mkdir_over_lower_name_is_eexist() {
    assert_same(&on_base(vec![
        Op::Mkdir {
            path: p("shared"),
            mode: 0o755,
        },
        Op::Mkdir {
            path: p("d"),
            mode: 0o755,
        },
    ]));
}

#[test]
fn rmdir_of_file_and_unlink_of_dir() {
    assert_same(&on_base(vec![
        Op::Rmdir { path: p("shared") },
        Op::Unlink { path: p("op") },
    ]));
}

// ---- rename ----

#[test]
fn rename_lower_dir_then_list_and_reuse_name() {
    assert_same(&on_base(vec![
        Op::Rename {
            from: p("d"),
            to: p("moved"),
            mode: RenameMode::Plain,
        },
        write("moved/sub/deep", 0, 4),
        Op::Mkdir {
            path: p("d"),
            mode: 0o755,
        },
    ]));
}

#[test]
fn rename_lower_dir_into_other_dir() {
    assert_same(&on_base(vec![Op::Rename {
        from: p("d/sub"),
        to: p("op/sub"),
        mode: RenameMode::Plain,
    }]));
}

#[test]
fn rename_dir_into_itself_is_einval() {
    assert_same(&on_base(vec![Op::Rename {
        from: p("d"),
        to: p("d/sub/x"),
        mode: RenameMode::Plain,
    }]));
}

#[test]
fn rename_lower_file_into_new_dir() {
    assert_same(&on_base(vec![
        Op::Mkdir {
            path: p("new"),
            mode: 0o755,
        },
        Op::Rename {
            from: p("big"),
            to: p("new/big"),
            mode: RenameMode::Plain,
        },
    ]));
}

#[test]
fn rename_over_existing_lower_file() {
    assert_same(&on_base(vec![Op::Rename {
        from: p("d/top"),
        to: p("shared"),
        mode: RenameMode::Plain,
    }]));
}

#[test]
fn rename_noreplace_existing_is_eexist() {
    assert_same(&on_base(vec![
        Op::Rename {
            from: p("d/top"),
            to: p("shared"),
            mode: RenameMode::NoReplace,
        },
        Op::Rename {
            from: p("d/top"),
            to: p("fresh"),
            mode: RenameMode::NoReplace,
        },
    ]));
}

#[test]
fn rename_exchange_lower_files() {
    assert_same(&on_base(vec![Op::Rename {
        from: p("shared"),
        to: p("d/mid"),
        mode: RenameMode::Exchange,
    }]));
}

#[test]
fn rename_exchange_file_and_dir() {
    assert_same(&on_base(vec![Op::Rename {
        from: p("big"),
        to: p("op"),
        mode: RenameMode::Exchange,
    }]));
}

#[test]
fn rename_dir_over_empty_and_non_empty_dirs() {
    assert_same(&sc(
        vec![vec![
            Node::dir("empty"),
            Node::dir("full"),
            Node::file("full/f", b"f"),
            Node::dir("src"),
            Node::file("src/s", b"s"),
        ]],
        vec![
            Op::Rename {
                from: p("src"),
                to: p("full"),
                mode: RenameMode::Plain,
            },
            Op::Rename {
                from: p("src"),
                to: p("empty"),
                mode: RenameMode::Plain,
            },
        ],
    ));
}

#[test]
fn rename_onto_whited_out_name() {
    assert_same(&on_base(vec![
        Op::Unlink { path: p("shared") },
        Op::Rename {
            from: p("big"),
            to: p("shared"),
            mode: RenameMode::NoReplace,
        },
    ]));
}

// ---- hard links ----

#[test]
fn link_lower_file_then_write_through_one_name() {
    assert_same(&on_base(vec![
        Op::Link {
            from: p("shared"),
            to: p("d/alias"),
        },
        Op::Append {
            path: p("d/alias"),
            len: 10,
            byte: 3,
        },
    ]));
}

#[test]
fn lower_hardlinks_stay_linked_on_copy_up() {
    assert_same(&on_base(vec![Op::Append {
        path: p("hl1"),
        len: 5,
        byte: 9,
    }]));
}

#[test]
fn unlink_one_of_lower_hardlinks() {
    assert_same(&on_base(vec![
        Op::Unlink { path: p("hl2") },
        write("hl1", 0, 2),
    ]));
}

#[test]
fn link_to_dir_is_eperm() {
    assert_same(&on_base(vec![Op::Link {
        from: p("d"),
        to: p("dl"),
    }]));
}

// ---- metadata on lower entries ----

#[test]
fn chmod_lower_file_and_dir() {
    assert_same(&on_base(vec![
        Op::Chmod {
            path: p("big"),
            mode: 0o4711,
        },
        Op::Chmod {
            path: p("d/sub"),
            mode: 0o1777,
        },
    ]));
}

#[test]
fn chown_lower_file_clears_setuid() {
    assert_same(&on_base(vec![Op::Chown {
        path: p("d/sub/deep"),
        uid: 1000,
        gid: 1000,
    }]));
}

#[test]
fn chown_lower_symlink_and_dir() {
    assert_same(&on_base(vec![
        Op::Chown {
            path: p("link"),
            uid: 1001,
            gid: 1000,
        },
        Op::Chown {
            path: p("d"),
            uid: 0,
            gid: 1001,
        },
    ]));
}

#[test]
fn utimes_lower_file_symlink_and_dir() {
    assert_same(&on_base(vec![
        Op::Utimes {
            path: p("big"),
            atime: 1_200_000_000,
            mtime: 1_100_000_000,
        },
        Op::Utimes {
            path: p("link"),
            atime: 1_200_000_000,
            mtime: 1_150_000_000,
        },
        Op::Utimes {
            path: p("d/sub"),
            atime: 1_200_000_000,
            mtime: 1_160_000_000,
        },
    ]));
}

#[test]
fn chmod_through_symlink() {
    assert_same(&on_base(vec![Op::Chmod {
        path: p("link"),
        mode: 0o600,
    }]));
}

// ---- xattrs ----

#[test]
fn setxattr_on_lower_file_and_dir() {
    assert_same(&on_base(vec![
        Op::SetXattr {
            path: p("d/mid"),
            name: p("user.x"),
            value: b"v".to_vec(),
        },
        Op::SetXattr {
            path: p("d/sub"),
            name: p("user.y"),
            value: b"dir".to_vec(),
        },
        Op::SetXattr {
            path: p("shared"),
            name: p("user.x"),
            value: b"replaced".to_vec(),
        },
    ]));
}

#[test]
fn removexattr_on_lower_file_and_missing_name() {
    assert_same(&on_base(vec![
        Op::RemoveXattr {
            path: p("big"),
            name: p("user.y"),
        },
        Op::RemoveXattr {
            path: p("big"),
            name: p("user.y"),
        },
    ]));
}

#[test]
fn setxattr_user_on_symlink_is_eperm() {
    assert_same(&on_base(vec![Op::SetXattr {
        path: p("link"),
        name: p("user.x"),
        value: b"v".to_vec(),
    }]));
}

// ---- mknod, symlink ----

#[test]
fn mkfifo_and_chmod_lower_fifo() {
    assert_same(&on_base(vec![
        Op::Mkfifo {
            path: p("d/newpipe"),
            mode: 0o640,
        },
        Op::Chmod {
            path: p("pipe"),
            mode: 0o600,
        },
        Op::Mkfifo {
            path: p("pipe"),
            mode: 0o600,
        },
    ]));
}

#[test]
fn symlink_dangling_and_over_existing() {
    assert_same(&on_base(vec![
        Op::Symlink {
            target: p("nowhere"),
            path: p("d/dangle"),
        },
        Op::Symlink {
            target: p("x"),
            path: p("shared"),
        },
        Op::Create {
            path: p("d/dangle"),
            mode: 0o644,
            excl: false,
        },
    ]));
}

#[test]
fn ops_under_opaque_and_whited_out_paths() {
    assert_same(&on_base(vec![
        Op::Create {
            path: p("gone/x"),
            mode: 0o644,
            excl: true,
        },
        Op::Unlink {
            path: p("op/inside"),
        },
        Op::Rmdir { path: p("op") },
    ]));
}

#[test]
fn operations_on_missing_paths_fail_alike() {
    assert_same(&on_base(vec![
        Op::Chmod {
            path: p("nope"),
            mode: 0o600,
        },
        Op::Truncate {
            path: p("nope/x"),
            len: 1,
        },
        Op::Rename {
            from: p("nope"),
            to: p("d/x"),
            mode: RenameMode::Plain,
        },
        Op::Link {
            from: p("shared"),
            to: p("nope/x"),
        },
        Op::Write {
            path: p("d/sub/deep/x"),
            offset: 0,
            len: 1,
            byte: 0,
        },
    ]));
}

/// Found by seed 8: `open(O_CREAT, 04755)` as root keeps S_ISUID on
/// overlayfs; unionfs dropped it (likely a chown after create).
#[test]
fn create_with_setuid_mode_keeps_it() {
    assert_same(&sc(
        vec![vec![], vec![Node::dir("b").mode(0o2775)]],
        vec![
            Op::Create {
                path: p("b/a"),
                mode: 0o4755,
                excl: false,
            },
            Op::Mkdir {
                path: p("b/d"),
                mode: 0o2755,
            },
        ],
    ));
}

/// Found by seed 11: writing through one name of a lower hard-link pair
/// must keep the pair linked (overlayfs index=on does).
#[test]
fn write_to_lower_hardlink_in_other_dir_keeps_link() {
    let mut c = cfg();
    c.compare_upper = false;
    c.cross_remount = false;
    if let Err(e) = check(&hardlink_pair_write(), &c) {
        panic!("{e}");
    }
}

/// The same sequence, upper format included: the other name must stay
/// lower-only (no `a/`, `a/a/` in the upper) and reach the copy through
/// the work dir's index, as with overlayfs's `index=on`.
#[test]
fn write_to_lower_hardlink_in_other_dir_upper_format() {
    assert_same(&hardlink_pair_write());
}

fn hardlink_pair_write() -> Scenario {
    sc(
        vec![vec![
            Node::file("a/a/a", b""),
            Node::hardlink("b/e/d", "a/a/a"),
        ]],
        vec![Op::Write {
            path: p("b/e/d"),
            offset: 113,
            len: 3036,
            byte: 68,
        }],
    )
}

/// overlayfs marks a directory created in a merged parent opaque in the
/// upper; an upper without the marker changes meaning when a later lower
/// gains the same directory.
#[test]
fn mkdir_in_merged_dir_writes_opaque_marker() {
    assert_same(&sc(
        vec![vec![], vec![]],
        vec![Op::Mkdir {
            path: p("new"),
            mode: 0o755,
        }],
    ));
}

/// unionfs mounted over an upper that kernel overlayfs wrote with
/// metacopy=on: renamed and linked lower files there are metacopy files
/// whose data is found through a `trusted.overlay.redirect` path.
#[test]
fn unionfs_reads_kernel_metacopy_redirect_upper() {
    let s = on_base(vec![
        Op::Rename {
            from: p("d/top"),
            to: p("fresh"),
            mode: RenameMode::NoReplace,
        },
        Op::Rename {
            from: p("shared"),
            to: p("d/mid"),
            mode: RenameMode::Exchange,
        },
        Op::Chown {
            path: p("big"),
            uid: 7,
            gid: 7,
        },
    ]);
    let cfg = Config {
        kernel_metacopy: true,
        ..cfg()
    };
    if let Err(e) = check(&s, &cfg) {
        panic!("unionfs misreads a kernel metacopy upper: {e}");
    }
}

/// A directory redirect is followed layer by layer, and an opaque
/// directory part-way along the redirect path hides the layers below, as
/// in overlayfs: `d` (the old `e/e`) must not show `a` from the bottom
/// layer, which the opaque `e` of the middle layer hides (fsfuzz seed
/// 901500, seen when unionfs mounts the upper the kernel wrote).
#[test]
fn redirect_path_stops_at_an_opaque_dir_part_way() {
    let s = sc(
        vec![
            vec![Node::file("d", b"file d\n"), Node::dir("e/e")],
            vec![Node::opaque_dir("e")],
            vec![Node::dir("e/e/a")],
        ],
        vec![Op::Rename {
            from: p("d"),
            to: p("e/e"),
            mode: RenameMode::Exchange,
        }],
    );
    assert_same(&s);
}

/// An upper directory over a lower non-directory of the same name is a
/// pure upper directory, even though the name is in a lower: overlayfs
/// replaces it by a plain rename in the upper, so a whiteout left inside
/// makes the rename fail with ENOTEMPTY (fsfuzz seed 907302).
#[test]
fn rename_onto_upper_dir_with_whiteout_over_lower_fifo_is_enotempty() {
    let mut s = sc(
        vec![vec![], vec![Node::fifo("e")]],
        vec![Op::Rename {
            from: p("c"),
            to: p("e"),
            mode: RenameMode::Plain,
        }],
    );
    s.upper = LayerSpec::new(vec![Node::dir("c/f"), Node::whiteout("e/d")]);
    assert_same(&s);
}

/// A failed rename of a pure upper directory whose name a lower file also
/// has: overlayfs renames with RENAME_WHITEOUT (the old name needs a
/// whiteout), and ext4's failed attempt leaves the old parent's mtime at
/// now. unionfs did this only for merged directories (fsfuzz seed 930190).
#[test]
fn failed_rename_of_upper_dir_over_lower_file_touches_old_parent() {
    let mut s = sc(
        vec![vec![], vec![Node::file("d/d", b"").mode(0o444)]],
        vec![Op::Rename {
            from: p("d/d"),
            to: p("e"),
            mode: RenameMode::Plain,
        }],
    );
    s.upper = LayerSpec::new(vec![
        Node::dir("d/d").mode(0o555).owner(1000, 1001),
        Node::file("e/b", b"x"),
    ]);
    assert_same(&s);
}

// ---- upper format ----

/// An upper written by unionfs must not carry private `trusted.*` xattrs:
/// kernel overlayfs mounted over it shows them to every root `getfattr`.
#[test]
fn upper_carries_no_private_xattrs_kernel_would_show() {
    let s = on_base(vec![
        Op::Append {
            path: p("big"),
            len: 1,
            byte: 1,
        },
        Op::Chown {
            path: p("d/top"),
            uid: 1,
            gid: 1,
        },
    ]);
    let cfg = Config {
        ignore_private_xattrs: false,
        ..cfg()
    };
    if let Err(e) = check(&s, &cfg) {
        panic!("unionfs's upper differs from overlayfs's format: {e}");
    }
}

// ---- generated sequences ----

/// Random sequences with fixed seeds; every failing seed is listed at the
/// end. Reproduce one with `strata-fsfuzz --seed N --count 1 --ops 25`.
#[test]
fn random_sequences_fixed_seeds() {
    let seeds: Vec<u64> = (1..=20).collect();
    let cfg = cfg();
    let mut failures = Vec::new();
    for seed in &seeds {
        let s = scenario_from_seed(*seed, 25);
        if let Err(e) = check(
            &s,
            &Config {
                minimise_budget: 10,
                ..cfg.clone()
            },
        ) {
            failures.push(format!("seed {seed}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds diverge: {:?}\n\n{}",
        failures.len(),
        seeds.len(),
        failures
            .iter()
            .map(|f| f.split(':').next().unwrap_or(""))
            .collect::<Vec<_>>(),
        failures.join("\n\n")
    );
}
