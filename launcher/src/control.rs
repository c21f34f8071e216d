//! The supervisor's control socket: one JSON request line per connection,
//! then either one JSON reply line or, for `attach`, a stream of frames.
//!
//! A frame is one kind byte, a big-endian u32 length and the payload.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::container::RestartPolicy;

/// Frame kinds.
pub mod frame {
    /// Client to supervisor: bytes for the container's stdin.
    pub const STDIN: u8 = 0;
    /// Supervisor to client: container stdout.
    pub const STDOUT: u8 = 1;
    /// Supervisor to client: container stderr.
    pub const STDERR: u8 = 2;
    /// Supervisor to client: the container exited; payload is the i32 code.
    pub const EXIT: u8 = 3;
    /// Client to supervisor: terminal size, u16 rows + u16 cols.
    pub const RESIZE: u8 = 4;
    /// Client to supervisor: stdin reached end of file.
    pub const STDIN_EOF: u8 = 5;
}

/// A request to a supervisor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Stream output (and take input when `stdin`).
    Attach {
        /// Forward the client's stdin.
        stdin: bool,
    },
    /// Stop signal, wait, SIGKILL; reply when the container is down.
    Stop {
        /// Seconds before SIGKILL.
        timeout_secs: u64,
    },
    /// Send a signal now.
    Kill {
        /// Signal number.
        signal: i32,
    },
    /// Reply with the exit code of the next exit.
    Wait,
    /// Change the restart policy.
    Update {
        /// The new policy.
        restart: RestartPolicy,
    },
}

/// A supervisor's reply.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    /// The request worked.
    pub ok: bool,
    /// Exit code, for stop and wait.
    pub exit_code: i32,
    /// What went wrong.
    pub error: String,
}

/// Send one request and read the reply (no timeout: stop and wait block).
pub fn request(socket: &Path, req: &Request) -> Result<Reply> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to the supervisor at {}", socket.display()))?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut r = BufReader::new(s);
    let mut reply = String::new();
    r.read_line(&mut reply)
        .context("reading the supervisor's reply")?;
    if reply.is_empty() {
        anyhow::bail!("the supervisor closed the connection without a reply");
    }
    serde_json::from_str(&reply).context("parsing the supervisor's reply")
}

/// Open an attach stream.
pub fn attach(socket: &Path, stdin: bool) -> Result<UnixStream> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to the supervisor at {}", socket.display()))?;
    let mut line = serde_json::to_string(&Request::Attach { stdin })?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    Ok(s)
}

/// Write one frame.
pub fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(5 + payload.len());
    buf.push(kind);
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)
}

/// Read one frame; `None` at end of stream.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > 16 << 20 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "frame larger than 16 MiB",
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((head[0], payload)))
}

/// Read the request line of a new connection.
pub fn read_request(s: &UnixStream) -> Result<(Request, BufReader<UnixStream>)> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    r.read_line(&mut line)?;
    s.set_read_timeout(None)?;
    Ok((
        serde_json::from_str(&line).context("parsing a control request")?,
        r,
    ))
}

/// Send a reply line.
pub fn send_reply(s: &mut UnixStream, reply: &Reply) -> Result<()> {
    let mut line = serde_json::to_string(reply)?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    Ok(())
}
