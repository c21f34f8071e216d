//! Container logs: one JSON object per line (`{"time","stream","log"}`, like
//! docker's json-file driver) in `container.log`, rotated to
//! `container.log.1`, `.2`... when it reaches the size cap, keeping at most
//! `max_files` files. Readers merge the files oldest first.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::container::LogOptions;
use crate::timefmt;

/// One log record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339 time the line was read.
    pub time: String,
    /// "stdout" or "stderr".
    pub stream: String,
    /// The line, including its newline when it had one.
    pub log: String,
}

/// Appends records to a container's log and rotates it.
pub struct Writer {
    path: PathBuf,
    file: File,
    size_bytes: u64,
    opts: LogOptions,
}

impl Writer {
    /// Open (append) the log at `path`.
    pub fn open(path: &Path, opts: LogOptions) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening log {}", path.display()))?;
        let size_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size_bytes,
            opts,
        })
    }

    /// Append one chunk of output as one record per line.
    pub fn write(&mut self, stream: &str, data: &[u8]) -> Result<()> {
        let text = String::from_utf8_lossy(data);
        for line in text.split_inclusive('\n') {
            let rec = Record {
                time: timefmt::rfc3339(timefmt::now_nanos()),
                stream: stream.to_string(),
                log: line.to_string(),
            };
            let mut bytes = serde_json::to_vec(&rec)?;
            bytes.push(b'\n');
            if self.opts.max_size_bytes > 0
                && self.size_bytes > 0
                && self.size_bytes + bytes.len() as u64 > self.opts.max_size_bytes
            {
                self.rotate()?;
            }
            self.file.write_all(&bytes)?;
            self.size_bytes += bytes.len() as u64;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        let keep = self.opts.max_files.max(1);
        if keep == 1 {
            self.file.set_len(0)?;
            self.file.seek(SeekFrom::Start(0))?;
            self.size_bytes = 0;
            return Ok(());
        }
        let _ = fs::remove_file(rotated(&self.path, keep - 1));
        for i in (1..keep - 1).rev() {
            let _ = fs::rename(rotated(&self.path, i), rotated(&self.path, i + 1));
        }
        fs::rename(&self.path, rotated(&self.path, 1))
            .with_context(|| format!("rotating {}", self.path.display()))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size_bytes = 0;
        Ok(())
    }
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// All log files of `path`, oldest first.
pub fn files(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = (1..100)
        .map(|i| rotated(path, i))
        .take_while(|p| p.exists())
        .collect();
    out.reverse();
    if path.exists() {
        out.push(path.to_path_buf());
    }
    out
}

/// All records, oldest first.
pub fn read_all(path: &Path) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for f in files(path) {
        let file = File::open(&f).with_context(|| format!("opening log {}", f.display()))?;
        for line in BufReader::new(file).lines() {
            let line = line?;
            if let Ok(rec) = serde_json::from_str::<Record>(&line) {
                out.push(rec);
            }
        }
    }
    Ok(out)
}

/// Print one record the way `strata logs` does.
pub fn print(rec: &Record, timestamps: bool) -> std::io::Result<()> {
    let text = if timestamps {
        format!("{} {}", rec.time, rec.log)
    } else {
        rec.log.clone()
    };
    if rec.stream == "stderr" {
        let mut e = std::io::stderr().lock();
        e.write_all(text.as_bytes())?;
        e.flush()
    } else {
        let mut o = std::io::stdout().lock();
        o.write_all(text.as_bytes())?;
        o.flush()
    }
}

/// Follow the current log file from `offset`, calling `emit` for each new
/// record, until `keep_going` says stop; handles rotation by reopening.
pub fn follow(
    path: &Path,
    mut offset: u64,
    mut emit: impl FnMut(&Record) -> std::io::Result<()>,
    mut keep_going: impl FnMut() -> bool,
) -> Result<()> {
    let mut pending = String::new();
    loop {
        let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len < offset {
            offset = 0;
        }
        let mut got = false;
        if len > offset {
            let mut f = File::open(path)?;
            f.seek(SeekFrom::Start(offset))?;
            let mut r = BufReader::new(f);
            let mut line = String::new();
            while r.read_line(&mut line)? > 0 {
                offset += line.len() as u64;
                pending.push_str(&line);
                line.clear();
                if pending.ends_with('\n') {
                    if let Ok(rec) = serde_json::from_str::<Record>(pending.trim_end()) {
                        if emit(&rec).is_err() {
                            return Ok(());
                        }
                    }
                    pending.clear();
                }
                got = true;
            }
        }
        if !got {
            if !keep_going() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let opts = LogOptions {
            max_size_bytes: 1000,
            max_files: 3,
        };
        let mut w = Writer::open(&path, opts).unwrap();
        for i in 0..500 {
            w.write("stdout", format!("line {i}\n").as_bytes()).unwrap();
        }
        let all = files(&path);
        assert_eq!(all.len(), 3);
        let total: u64 = all.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
        assert!(total <= 3000, "{total}");
        let recs = read_all(&path).unwrap();
        assert_eq!(recs.last().unwrap().log, "line 499\n");
        let nums: Vec<u32> = recs
            .iter()
            .map(|r| r.log.trim().trim_start_matches("line ").parse().unwrap())
            .collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "ordered");
    }
}
