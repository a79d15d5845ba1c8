//! A sub-millisecond timer, for the simulator's token deadlines and the load
//! engine's arrival schedule.
//!
//! Tokio's timer wheel has 1 ms granularity and rounds deadlines up, which
//! would add up to 1 ms to every simulated TTFT and to every scheduled send. This timer keeps deadlines in
//! one heap and wakes sleeping tasks through oneshot channels at the exact
//! deadline (see [`driver`] for how the deadline wakes the process).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, PoisonError};
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

/// Under load, deadlines are served in batches: with more than
/// [`COALESCE_ABOVE`] sleeps pending, the timer wakes this long after the
/// earliest one and completes every sleep due by then. Each sleep then ends
/// between its deadline and `COALESCE` after it (never before), and at
/// thousands of streams one wake-up serves several of them, as one decode
/// step of a real batching engine emits a token for every sequence at once.
/// With few sleeps pending a batch would hold one token: no delay is added.
pub const COALESCE: std::time::Duration = std::time::Duration::from_micros(100);

/// Pending sleeps above which deadlines are served in batches.
pub const COALESCE_ABOVE: usize = 64;

/// How long after `at` the timer should wake with `pending` sleeps queued.
fn batch_delay(pending: usize) -> std::time::Duration {
    if pending > COALESCE_ABOVE {
        COALESCE
    } else {
        std::time::Duration::ZERO
    }
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

impl State {
    /// Completes every entry due at `now`; returns the next deadline.
    fn fire_due(&mut self, now: Instant) -> Option<Instant> {
        while self.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
            if let Some(Reverse(e)) = self.heap.pop() {
                let _ = e.wake.send(());
            }
        }
        self.heap.peek().map(|Reverse(e)| e.at)
    }
}

/// Handle to the timer; cloning shares it. The timer stops when the last
/// handle is dropped.
#[derive(Clone)]
pub struct PreciseTimer {
    shared: Arc<Shared>,
    _alive: Arc<Alive>,
}

/// Dropped with the last [`PreciseTimer`] handle: wakes the driver so it
/// sees that nobody can sleep on it any more and stops.
struct Alive(Arc<Shared>);

impl Drop for Alive {
    fn drop(&mut self) {
        let _st = lock(&self.0);
        self.0.wake_at(Instant::now());
    }
}

impl PreciseTimer {
    fn from_shared(shared: Arc<Shared>) -> (Self, std::sync::Weak<Alive>) {
        let alive = Arc::new(Alive(Arc::clone(&shared)));
        let weak = Arc::downgrade(&alive);
        (
            Self {
                shared,
                _alive: alive,
            },
            weak,
        )
    }
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PreciseTimer {
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
                self.shared.wake_at(at + batch_delay(st.heap.len()));
            }
        }
        // A stopped timer drops the sender: the sleep then ends early, which
        // only happens at shutdown.
        let _ = rx.await;
    }
}

#[cfg(target_os = "linux")]
mod driver {
    //! Linux: a `timerfd` (hrtimer, nanosecond resolution) registered with
    //! the runtime's own reactor. The runtime thread that sleeps in
    //! `epoll_wait` is woken by the deadline itself and completes the due
    //! sleeps there, so a token costs no hand-off between threads.

    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use tokio::io::unix::AsyncFd;

    use super::{lock, Alive, PreciseTimer, State};

    pub(super) struct Shared {
        pub(super) state: Mutex<State>,
        fd: OwnedFd,
    }

    impl Shared {
        /// Arms the timerfd for `at`. Called with the state locked, so the
        /// armed deadline is always the heap's earliest.
        pub(super) fn wake_at(&self, at: Instant) {
            // A zero it_value would disarm the timer: wait at least 1 ns.
            let wait = at
                .saturating_duration_since(Instant::now())
                .max(std::time::Duration::from_nanos(1));
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: libc::timespec {
                    tv_sec: libc::time_t::try_from(wait.as_secs()).unwrap_or(libc::time_t::MAX),
                    tv_nsec: libc::c_long::from(wait.subsec_nanos() as i32),
                },
            };
            // SAFETY: `fd` is a timerfd owned by `self`; `spec` is valid.
            unsafe {
                libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut());
            }
        }
    }

    struct Fd(Arc<Shared>);

    impl AsRawFd for Fd {
        fn as_raw_fd(&self) -> std::os::fd::RawFd {
            self.0.fd.as_raw_fd()
        }
    }

    impl PreciseTimer {
        /// Starts the timer on the current Tokio runtime (call it inside
        /// the runtime, or within `Runtime::enter`).
        pub fn start() -> std::io::Result<Self> {
            // SAFETY: plain syscall; the result is checked before use.
            let raw = unsafe {
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                )
            };
            if raw < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: `raw` is a fresh descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let shared = Arc::new(Shared {
                state: Mutex::new(State::default()),
                fd,
            });
            let handle = tokio::runtime::Handle::try_current()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let afd = {
                let _guard = handle.enter();
                // SAFETY: the timerfd is owned by `shared`, which the `Fd`
                // keeps alive for as long as the registration exists.
                unsafe {
                    AsyncFd::register_with_interest(
                        Fd(Arc::clone(&shared)),
                        tokio::io::Interest::READABLE,
                    )
                }?
            };
            let (timer, alive) = PreciseTimer::from_shared(shared);
            handle.spawn(drive(afd, alive));
            Ok(timer)
        }
    }

    /// Completes sleeps as the timerfd expires; ends with the runtime or
    /// when the last handle is gone (which closes the timerfd).
    async fn drive(afd: AsyncFd<Fd>, alive: std::sync::Weak<Alive>) {
        loop {
            if alive.strong_count() == 0 {
                return;
            }
            let Ok(mut ready) = afd.readable().await else {
                return;
            };
            let mut expirations = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a local buffer.
            let n = unsafe {
                libc::read(
                    afd.get_ref().as_raw_fd(),
                    expirations.as_mut_ptr().cast(),
                    expirations.len(),
                )
            };
            // Clearing is safe even if it expired again since the read:
            // the reactor has not seen that edge yet and will report it.
            let _ = n;
            ready.clear_ready();
            let shared = &afd.get_ref().0;
            let mut st = lock(shared);
            if let Some(next) = st.fire_due(Instant::now()) {
                shared.wake_at(next + super::batch_delay(st.heap.len()));
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod driver {
    //! Elsewhere: one OS thread sleeping on a condition variable.

    use std::sync::{Arc, PoisonError};
    use std::time::Instant;

    use super::{lock, PreciseTimer, State};

    pub(super) struct Shared {
        pub(super) state: Mutex<State>,
        cond: Condvar,
    }

    impl Shared {
        pub(super) fn wake_at(&self, _at: Instant) {
            self.cond.notify_one();
        }
    }

    impl PreciseTimer {
        /// Starts the timer thread.
        pub fn start() -> std::io::Result<Self> {
            let shared = Arc::new(Shared {
                state: Mutex::new(State::default()),
                cond: Condvar::new(),
            });
            let worker = Arc::downgrade(&shared);
            let (timer, _) = PreciseTimer::from_shared(shared);
            std::thread::Builder::new()
                .name("throtl-timer".into())
                .spawn(move || run(&worker))?;
            Ok(timer)
        }
    }

    fn run(shared: &std::sync::Weak<Shared>) {
        loop {
            let Some(s) = shared.upgrade() else { return };
            let mut st = lock(&s);
            let next = st.fire_due(Instant::now());
            let wait = next.map_or(std::time::Duration::from_millis(50), |n| {
                n.saturating_duration_since(Instant::now())
                    .min(std::time::Duration::from_millis(50))
            });
            let _ = s
                .cond
                .wait_timeout(st, wait)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

use driver::Shared;

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

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn issue12_a_dropped_timer_stops_and_closes_its_descriptor() {
        let open_fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
        // Warm up whatever the runtime opens lazily.
        drop(PreciseTimer::start().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let before = open_fds();
        for _ in 0..20 {
            let t = PreciseTimer::start().unwrap();
            t.sleep_until(Instant::now() + Duration::from_micros(200))
                .await;
            let copy = t.clone();
            drop(t);
            drop(copy);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Other tests in this process may open descriptors meanwhile: allow a few.
        assert!(open_fds() < before + 5, "{} vs {before}", open_fds());
    }
}
