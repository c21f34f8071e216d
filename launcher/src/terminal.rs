//! The user's terminal: raw mode while attached, and copying between it and
//! a pseudo terminal (exec) or an attach stream (run/start).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use anyhow::Result;
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::control::{self, frame};
use crate::sys;

/// Puts stdin in raw mode while alive (when it is a terminal).
pub struct RawGuard(Option<Termios>);

impl RawGuard {
    /// Switch stdin to raw mode if it is a terminal.
    pub fn new() -> Self {
        let stdin = std::io::stdin();
        match termios::tcgetattr(stdin.as_fd()) {
            Ok(orig) => {
                let mut raw = orig.clone();
                termios::cfmakeraw(&mut raw);
                let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
                Self(Some(orig))
            }
            Err(_) => Self(None),
        }
    }
}

impl Default for RawGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RawGuard {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, t);
        }
    }
}

/// Copy between our stdio and the pty `master` until `child` exits.
pub fn relay_pty(master: File, interactive: bool, child: Pid) -> Result<WaitStatus> {
    if let Ok((rows, cols)) = sys::get_winsize(std::io::stdout().as_fd()) {
        let _ = sys::set_winsize(master.as_fd(), rows, cols);
    }
    let _raw = RawGuard::new();
    if interactive {
        let mut to = master.try_clone()?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut stdin = std::io::stdin();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    let mut from = master;
    let mut buf = [0u8; 4096];
    let mut out = std::io::stdout();
    // Reads end with EIO once the last process holding the slave exits.
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        let _ = out.write_all(&buf[..n]);
        let _ = out.flush();
    }
    Ok(waitpid(child, None)?)
}

/// Pump an attach stream: frames to stdout/stderr, our stdin to the
/// container. Returns the exit code from the EXIT frame (None if the
/// stream ended without one).
pub fn relay_attach(stream: UnixStream, stdin: bool, tty: bool) -> Result<Option<i32>> {
    let _raw = if tty && stdin {
        Some(RawGuard::new())
    } else {
        None
    };
    if stdin {
        let mut w = stream.try_clone()?;
        if tty {
            if let Ok((rows, cols)) = sys::get_winsize(std::io::stdout().as_fd()) {
                let mut p = rows.to_be_bytes().to_vec();
                p.extend_from_slice(&cols.to_be_bytes());
                let _ = control::write_frame(&mut w, frame::RESIZE, &p);
            }
        }
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut input = std::io::stdin();
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = control::write_frame(&mut w, frame::STDIN_EOF, &[]);
                        break;
                    }
                    Ok(n) => {
                        if control::write_frame(&mut w, frame::STDIN, &buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    let mut r = std::io::BufReader::new(stream);
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    loop {
        match control::read_frame(&mut r)? {
            None => return Ok(None),
            Some((frame::STDOUT, d)) => {
                let _ = out.write_all(&d);
                let _ = out.flush();
            }
            Some((frame::STDERR, d)) => {
                let _ = err.write_all(&d);
                let _ = err.flush();
            }
            Some((frame::EXIT, d)) if d.len() == 4 => {
                return Ok(Some(i32::from_be_bytes([d[0], d[1], d[2], d[3]])));
            }
            Some(_) => {}
        }
    }
}
