//! A sub-millisecond timer for the simulator.
//!
//! Tokio's timer wheel has 1 ms granularity and rounds deadlines up, which
//! would add up to 1 ms to every simulated TTFT. This timer keeps deadlines in
//! a heap on one OS thread that sleeps on a condition variable (futex with
//! high-resolution timeout, ~50 µs slack on Linux) and wakes tasks through
//! oneshot channels.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::oneshot;

struct Entry {
    at: Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
}

/// Handle to the timer thread; cloning shares the thread. The thread exits
/// when the last handle is dropped.
#[derive(Clone)]
pub struct PreciseTimer {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        lock(&self.0).closed = true;
        self.0.cond.notify_all();
    }
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PreciseTimer {
    /// Starts the timer thread.
    pub fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("throtl-sim-timer".into())
            .spawn(move || run(&worker))?;
        Ok(Self {
            _owner: Arc::new(Owner(Arc::clone(&shared))),
            shared,
        })
    }

    /// Completes at `at` (immediately if it has passed).
    pub async fn sleep_until(&self, at: Instant) {
        if at <= Instant::now() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut st = lock(&self.shared);
            st.seq += 1;
            let seq = st.seq;
            let earliest = st.heap.peek().is_none_or(|Reverse(e)| at < e.at);
            st.heap.push(Reverse(Entry { at, seq, wake: tx }));
            if earliest {
                self.shared.cond.notify_one();
            }
        }
        // A closed timer drops the sender: the sleep then ends early, which
        // only happens at shutdown.
        let _ = rx.await;
    }
}

fn run(shared: &Shared) {
    // Default timer slack is 50 µs; ask for the tightest wakeups.
    // SAFETY: prctl with PR_SET_TIMERSLACK only changes this thread's slack.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
    let mut st = lock(shared);
    loop {
        if st.closed {
            return;
        }
        let now = Instant::now();
        while st.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
            if let Some(Reverse(e)) = st.heap.pop() {
                let _ = e.wake.send(());
            }
        }
        st = match st.heap.peek().map(|Reverse(e)| e.at - now) {
            Some(wait) => {
                shared
                    .cond
                    .wait_timeout(st, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => shared.cond.wait(st).unwrap_or_else(PoisonError::into_inner),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_in_deadline_order_not_before_deadline() {
        let timer = PreciseTimer::start().unwrap();
        let t0 = Instant::now();
        let a = t0 + Duration::from_millis(30);
        let b = t0 + Duration::from_millis(10);
        let (ra, rb) = tokio::join!(
            async {
                timer.sleep_until(a).await;
                Instant::now()
            },
            async {
                timer.sleep_until(b).await;
                Instant::now()
            }
        );
        assert!(ra >= a && rb >= b);
        assert!(rb < ra);
    }
}
