//! Reloading on its own when the configuration files change (`supervisor.watch_config`):
//! the pure part. The shell's task ([`crate::channels::watch_files`]) reads the files
//! every `supervisor.watch_interval_seconds` and hands each reading to
//! [`FileWatch::observe`]; a due change becomes the same reload as SIGHUP.
//!
//! Why polling the content, not inotify (the `notify` crate): Kubernetes updates a
//! ConfigMap or Secret volume by swapping the `..data` symlink of the mounted directory,
//! so the file's own inode never changes and an inotify watch on it sees nothing; editors
//! save by rename, which ends a watch on the old inode; NFS, CIFS and most FUSE file
//! systems deliver no inotify events for changes made elsewhere. Reading a few small
//! files every 2 s follows every symlink afresh and works on every file system, and
//! comparing content (a SHA-256 per file) makes a `touch`, or a rewrite with the same
//! bytes, no change at all.
//!
//! Invariants:
//! - a reading equal to the last one taken is no change, whatever the files' times;
//! - a change is taken only when two readings in a row agree (it stayed the same for a
//!   whole interval), so a file being written, or a Kubernetes update that touches
//!   several files, gives one reload of the finished state, not one per step;
//! - a change is taken once: if its reload is rejected (an invalid edit), the same
//!   content is not reloaded again; the next different content is;
//! - a missing or unreadable file is a state like any other (its reload reports it).

use std::collections::BTreeMap;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// What one file held at one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// Missing or unreadable.
    Absent,
    /// The SHA-256 of its content.
    Content([u8; 32]),
}

impl FileState {
    /// The state of a file read as `read` (an error: absent).
    pub fn of<E>(read: Result<Vec<u8>, E>) -> FileState {
        match read {
            Ok(bytes) => FileState::Content(Sha256::digest(&bytes).into()),
            Err(_) => FileState::Absent,
        }
    }
}

/// One reading of every watched file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint(BTreeMap<PathBuf, FileState>);

impl FromIterator<(PathBuf, FileState)> for Fingerprint {
    fn from_iter<I: IntoIterator<Item = (PathBuf, FileState)>>(iter: I) -> Self {
        Fingerprint(iter.into_iter().collect())
    }
}

impl Fingerprint {
    /// The files that differ between `self` and `before` (added, removed or changed).
    pub fn changed_from(&self, before: &Fingerprint) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self
            .0
            .iter()
            .filter(|(p, s)| before.0.get(*p) != Some(s))
            .map(|(p, _)| p.clone())
            .collect();
        out.extend(
            before
                .0
                .keys()
                .filter(|p| !self.0.contains_key(*p))
                .cloned(),
        );
        out.sort();
        out
    }
}

/// The watch's state: the reading last taken, and the one before this reading.
#[derive(Debug)]
pub struct FileWatch {
    taken: Fingerprint,
    seen: Option<Fingerprint>,
}

impl FileWatch {
    /// Starts from `baseline` (the files as the configuration in force was read).
    pub fn new(baseline: Fingerprint) -> FileWatch {
        FileWatch {
            taken: baseline,
            seen: None,
        }
    }

    /// Takes one reading; the files that changed when a reload is due.
    pub fn observe(&mut self, now: Fingerprint) -> Option<Vec<PathBuf>> {
        if now == self.taken {
            self.seen = None;
            return None;
        }
        if self.seen.as_ref() != Some(&now) {
            // Changed, or still changing: wait for one more reading.
            self.seen = Some(now);
            return None;
        }
        let changed = now.changed_from(&self.taken);
        self.taken = now;
        self.seen = None;
        Some(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(files: &[(&str, Option<&str>)]) -> Fingerprint {
        files
            .iter()
            .map(|(p, c)| {
                let read = c.map(|c| c.as_bytes().to_vec()).ok_or(());
                (PathBuf::from(p), FileState::of(read))
            })
            .collect()
    }

    #[test]
    fn the_same_content_is_no_change() {
        let base = fp(&[("/c.yaml", Some("a")), ("/c.ini", Some("b"))]);
        let mut w = FileWatch::new(base.clone());
        for _ in 0..3 {
            assert_eq!(w.observe(base.clone()), None);
        }
    }

    #[test]
    fn a_change_is_taken_once_it_stayed_for_one_interval_and_only_once() {
        let mut w = FileWatch::new(fp(&[("/c.yaml", Some("a")), ("/c.ini", Some("b"))]));
        let edited = fp(&[("/c.yaml", Some("a")), ("/c.ini", Some("b2"))]);
        assert_eq!(w.observe(edited.clone()), None, "not yet: may still change");
        assert_eq!(w.observe(edited.clone()), Some(vec!["/c.ini".into()]));
        // Taken: the same content again (a rejected reload's) is not reloaded again.
        assert_eq!(w.observe(edited.clone()), None);
        assert_eq!(w.observe(edited), None);
    }

    #[test]
    fn files_changing_together_or_in_steps_give_one_reload_of_the_end_state() {
        let mut w = FileWatch::new(fp(&[("/c.yaml", Some("a")), ("/c.ini", Some("b"))]));
        // A half-written file, then the whole edit of both files.
        assert_eq!(
            w.observe(fp(&[("/c.yaml", Some("a")), ("/c.ini", Some("[x"))])),
            None
        );
        let whole = fp(&[("/c.yaml", Some("a2")), ("/c.ini", Some("[x]\n"))]);
        assert_eq!(w.observe(whole.clone()), None);
        assert_eq!(
            w.observe(whole),
            Some(vec!["/c.ini".into(), "/c.yaml".into()])
        );
    }

    #[test]
    fn an_edit_undone_before_it_settled_is_no_change() {
        let base = fp(&[("/c.ini", Some("b"))]);
        let mut w = FileWatch::new(base.clone());
        assert_eq!(w.observe(fp(&[("/c.ini", Some("b2"))])), None);
        assert_eq!(w.observe(base.clone()), None);
        assert_eq!(w.observe(base), None);
    }

    #[test]
    fn a_file_that_disappears_or_appears_is_a_change() {
        let mut w = FileWatch::new(fp(&[("/c.ini", Some("b")), ("/pw", None)]));
        let now = fp(&[("/c.ini", None), ("/pw", Some("s"))]);
        assert_eq!(w.observe(now.clone()), None);
        assert_eq!(w.observe(now), Some(vec!["/c.ini".into(), "/pw".into()]));
        // A file no longer named (a reference removed) counts too.
        let fewer = fp(&[("/c.ini", None)]);
        assert_eq!(w.observe(fewer.clone()), None);
        assert_eq!(w.observe(fewer), Some(vec!["/pw".into()]));
    }
}
