//! The strata container runtime library behind the `strata` binary.
//!
//! The command line is in [`cli`]; each group of commands has its own
//! module. The runtime is one module per concept: [`container`] (config,
//! state, where files live), [`supervisor`] (one per container), [`init`]
//! and [`process`] (inside the namespaces), [`rootfs`] (mounts, pivot_root,
//! /dev, masked paths), [`rootmount`] (the union rootfs), [`cgroup`],
//! [`seccomp`], [`capabilities`], [`logs`], [`volumes`], [`restart`],
//! [`exec`], and [`net`] for networks. Every `unsafe` call is in [`sys`].

// docker-shaped inspect JSON nests deeper than serde_json's default allows.
#![recursion_limit = "256"]

pub mod busybox_image;
pub mod capabilities;
pub mod cgroup;
pub mod cli;
pub mod container;
pub mod control;
pub mod demo;
pub mod etcfiles;
pub mod exec;
pub mod files;
pub mod housekeeping;
pub mod init;
pub mod inspect;
pub mod lifecycle;
pub mod logs;
pub mod net;
pub mod netglue;
pub mod oci;
pub mod process;
pub mod registry;
pub mod restart;
pub mod rootfs;
pub mod rootless;
pub mod rootmount;
pub mod seccomp;
pub mod signals;
pub mod supervisor;
pub mod sys;
pub mod terminal;
pub mod timefmt;
pub mod user;
pub mod volumes;
