//! Writing a file that holds a credential (a kubeconfig with a token): readable by its
//! owner only, whole or not at all, and never through a symbolic link.
//!
//! A kubeconfig written 0644 is a token for anyone on the machine; one written through a
//! symlink planted at its path (or at the temporary path beside it, in a shared directory
//! such as /tmp) lands wherever the link points. So the content goes to a new file created
//! exclusively (`O_CREAT | O_EXCL`, which never follows a link) with mode 0600, and is
//! renamed over the destination (a rename replaces a link at the destination, it does not
//! follow it), so a reader polling for the file never sees half of it.

use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Writes `contents` to `path` with mode 0600, atomically, following no symbolic link.
pub fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = partial_path(path);
    // A leftover of an interrupted write, or a link someone planted: removed (a link is
    // removed, not followed). Should another appear before the exclusive create, the
    // create fails instead of following it.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(contents)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `<path>.partial`, beside `path`.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt as _, symlink};

    #[test]
    fn the_file_is_private_and_no_link_is_followed() {
        let dir = tempfile::tempdir().expect("tmp");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").expect("victim");
        let path = dir.path().join("admin.kubeconfig");

        // A link at the destination and one at the temporary path beside it.
        symlink(&victim, &path).expect("link at the path");
        symlink(&victim, partial_path(&path)).expect("link at the partial path");
        write_private_file(&path, b"token: secret").expect("write");

        assert_eq!(
            std::fs::read_to_string(&victim).expect("victim"),
            "untouched"
        );
        let meta = std::fs::symlink_metadata(&path).expect("written");
        assert!(meta.file_type().is_file(), "a regular file, not the link");
        assert_eq!(meta.mode() & 0o777, 0o600, "{:o}", meta.mode());
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "token: secret"
        );
        assert!(!partial_path(&path).exists(), "nothing left beside it");

        // Written again over itself: still 0600, new content.
        write_private_file(&path, b"token: other").expect("rewrite");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "token: other"
        );
        let meta = std::fs::symlink_metadata(&path).expect("written");
        assert_eq!(meta.mode() & 0o777, 0o600);
    }
}
