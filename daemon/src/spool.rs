//! The spool: received instances on disk, written so that a power cut never leaves a file that
//! sled says we have but that is missing or half-written.
//!
//! Each file is written to `spool/tmp/`, fsynced, renamed into place (atomic on one file
//! system) and then the folder is fsynced so the rename itself survives a crash. Only after
//! that does the SCP record the instance and answer Success.

use crate::{Error, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Short stable hash of a UID: used for file names (UIDs from the wire never become paths) and
/// in logs (a UID can identify a patient's study, its hash cannot be looked up).
pub fn uid_hash(uid: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, uid.as_bytes());
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The spool folder of one appliance.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    tmp: PathBuf,
    watermark_percent: u8,
    counter: AtomicU64,
}

impl Spool {
    /// Opens (creating) `state_dir/spool`; leftovers in `tmp/` are from a crash before the
    /// rename, were never acknowledged, and are removed.
    pub fn open(state_dir: &Path, watermark_percent: u8) -> Result<Spool> {
        let root = state_dir.join("spool");
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        if let Ok(entries) = fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(Spool {
            root,
            tmp,
            watermark_percent,
            counter: AtomicU64::new(0),
        })
    }

    /// Where an instance lives: `spool/<series hash>/<instance hash>.dcm`.
    pub fn path_for(&self, series_uid: &str, sop_instance_uid: &str) -> PathBuf {
        self.root
            .join(uid_hash(series_uid))
            .join(format!("{}.dcm", uid_hash(sop_instance_uid)))
    }

    /// Writes `parts` (concatenated) durably to `dest`.
    pub fn write(&self, dest: &Path, parts: &[&[u8]]) -> Result<()> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!("{}-{n}.part", std::process::id()));
        write_durably(&tmp, dest, parts)
    }

    pub fn watermark_percent(&self) -> u8 {
        self.watermark_percent
    }

    /// Whether the spool's file system is fuller than the watermark; then we answer Out of
    /// Resources instead of accepting data we may not be able to keep.
    pub fn over_watermark(&self) -> bool {
        match disk_usage_percent(&self.root) {
            Ok(p) => p >= f64::from(self.watermark_percent),
            Err(e) => {
                log::warn!("cannot read disk usage of the spool: {e}");
                false
            }
        }
    }
}

/// Percentage of the file system holding `path` in use (as `df` reports: blocks available to
/// unprivileged users count as free).
pub fn disk_usage_percent(path: &Path) -> Result<f64> {
    let st = nix::sys::statvfs::statvfs(path)
        .map_err(|e| Error::io(path, std::io::Error::from_raw_os_error(e as i32)))?;
    let total = st.blocks() as f64;
    let free = st.blocks_available() as f64;
    let used = total - st.blocks_free() as f64;
    if used + free <= 0.0 {
        return Ok(0.0);
    }
    Ok(100.0 * used / (used + free))
}

/// Temp file, fsync, rename, fsync of the destination folder.
pub fn write_durably(tmp: &Path, dest: &Path, parts: &[&[u8]]) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut f = File::create(tmp).map_err(|e| Error::io(tmp, e))?;
    for p in parts {
        f.write_all(p).map_err(|e| Error::io(tmp, e))?;
    }
    f.sync_all().map_err(|e| Error::io(tmp, e))?;
    drop(f);
    fs::rename(tmp, dest).map_err(|e| Error::io(dest, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically_and_cleans_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 90).unwrap();
        let dest = spool.path_for("1.2.3", "1.2.3.4");
        spool.write(&dest, &[b"abc", b"def"]).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"abcdef");
        assert_ne!(
            spool.path_for("1.2.3", "1.2.3.5"),
            dest,
            "distinct instances share a file"
        );
        // A crash between create and rename leaves a part file; reopening removes it.
        fs::write(dir.path().join("spool/tmp/1-0.part"), b"half").unwrap();
        let _ = Spool::open(dir.path(), 90).unwrap();
        assert_eq!(
            fs::read_dir(dir.path().join("spool/tmp")).unwrap().count(),
            0
        );
        assert!(fs::read(&dest).is_ok());
    }

    #[test]
    fn watermark_compares_disk_usage() {
        let dir = tempfile::tempdir().unwrap();
        let used = disk_usage_percent(dir.path()).unwrap();
        assert!((0.0..=100.0).contains(&used), "{used}");
        // 50 is the lowest watermark the config allows; a test box may be emptier, so use the
        // measured value to pick watermarks on either side of it.
        let below = Spool::open(dir.path(), used.floor() as u8).unwrap();
        assert!(below.over_watermark());
        let above = Spool::open(dir.path(), 101).unwrap();
        assert!(!above.over_watermark());
    }
}
