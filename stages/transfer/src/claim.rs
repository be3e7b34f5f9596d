//! One attempt at a time per temporary name.
//!
//! A temporary name is stable per task and destination ([`crate::local::temp_name`]), so
//! that a retry after a crash overwrites the leftover of the attempt before it. Two runs
//! of the same task at once (a task produced twice, or delivered again while its first
//! run was still going) would share that name: the second's create truncates the file
//! the first is about to rename into place, and the destination would hold a file being
//! rewritten. [`Claims`] makes the second wait until the first has finished with the
//! name (renamed or removed it), and then run in full.
//!
//! Invariant: while a [`Claim`] on a name lives, no other claim on it is granted in this
//! process. Waiters are woken whenever any claim ends, and check again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The temporary names in use by this worker's attempts.
#[derive(Debug, Default, Clone)]
pub struct Claims {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    names: Mutex<HashSet<String>>,
    freed: Notify,
}

impl Claims {
    /// Waits until no other attempt holds `name`, then holds it until the claim drops.
    pub async fn claim(&self, name: String) -> Claim {
        loop {
            let freed = self.inner.freed.notified();
            tokio::pin!(freed);
            // Registered before the check: a claim that ends in between still wakes us.
            freed.as_mut().enable();
            if self
                .inner
                .names
                .lock()
                .expect("claims")
                .insert(name.clone())
            {
                return Claim {
                    inner: self.inner.clone(),
                    name,
                };
            }
            freed.await;
        }
    }
}

/// A held temporary name; released on drop.
#[derive(Debug)]
pub struct Claim {
    inner: Arc<Inner>,
    name: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.inner.names.lock().expect("claims").remove(&self.name);
        self.inner.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_holder_per_name_and_others_run_alongside() {
        let claims = Claims::default();
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut runs = Vec::new();
        for _ in 0..8 {
            let (claims, inside, most) = (claims.clone(), inside.clone(), most.clone());
            runs.push(tokio::spawn(async move {
                let _held = claims.claim("same".into()).await;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        // Another name is not held up by them.
        let other = tokio::time::timeout(Duration::from_secs(1), claims.claim("other".into()))
            .await
            .expect("a different name is granted at once");
        for r in runs {
            r.await.unwrap();
        }
        drop(other);
        assert_eq!(most.load(Ordering::SeqCst), 1, "one holder at a time");
        assert!(claims.inner.names.lock().unwrap().is_empty());
    }
}
