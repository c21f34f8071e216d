//! `strata demo`: the README's first command. Builds the busybox image
//! from the host's busybox-static, imports it into the store as
//! `busybox:latest`, runs a container from it on the union mount, and shows
//! a file written inside landing in the container's rw layer.

use anyhow::Result;

use crate::container::{ContainerConfig, NetworkOptions};
use crate::lifecycle::{self, Dirs};
use crate::{busybox_image, supervisor};

const SCRIPT: &str = r#"echo "hostname:  $(hostname)"
echo "id:        $(id)"
echo "pid:       $$ (pid 1 is $(cat /proc/1/comm))"
echo "root:      $(grep ' / ' /proc/mounts | head -n1)"
echo "ls /:      $(ls / | tr '\n' ' ')"
echo "hello from the container" > /root/greeting
echo "wrote /root/greeting""#;

/// Run the demo; returns the container's exit code.
pub fn run(d: &Dirs) -> Result<i32> {
    println!(
        "== building busybox:latest from {} and importing it",
        busybox_image::find_busybox()?.display()
    );
    let id = busybox_image::import(&d.store, "busybox:latest")?;
    println!("   image {}", &id[..12.min(id.len())]);
    let mut cfg = ContainerConfig {
        image: "busybox:latest".into(),
        cmd: vec!["sh".into(), "-c".into(), SCRIPT.into()],
        network: NetworkOptions {
            mode: "none".into(),
            ..Default::default()
        },
        hostname: "strata-demo".into(),
        stop_timeout_secs: 10,
        ..Default::default()
    };
    lifecycle::apply_image(d, &mut cfg, false, true)?;
    let mut c = lifecycle::create(d, cfg)?;
    println!("== running container {} on the union mount", c.config.name);
    let code = lifecycle::start(d, &mut c, true)?;
    supervisor::wait_gone(&c);
    let upper = c.paths.upper();
    let greeting = upper.join("root/greeting");
    println!("== the rw layer {}", upper.display());
    match std::fs::read_to_string(&greeting) {
        Ok(t) => println!("   root/greeting: {}", t.trim()),
        Err(e) => println!("   root/greeting is missing: {e}"),
    }
    let rw = lifecycle::dir_size(&upper);
    println!(
        "   size of the rw layer: {rw} bytes (strata ps -a -s shows it; strata rm {} removes it)",
        c.config.name
    );
    Ok(code)
}
