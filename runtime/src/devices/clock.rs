//! Virtual time. Every timer device (PIT, RTC, local APIC) reads one
//! [`Clock`]: nanoseconds since the machine started, from the host's
//! monotonic clock, so that they agree with each other and with the TSC
//! (the host's, read by RDTSC) and a guest calibrating one against another
//! gets sane values. Tests use a manual clock instead.
//!
//! Devices compute their state from the clock when they are accessed
//! (a counter read, a status register), so they need no ticks. What cannot
//! wait for an access is an interrupt: a device with deadlines is
//! [`Timed`], and a [`Ticker`] thread sleeps until the earliest deadline
//! and lets the device raise its line there. An idle guest (hlt) therefore
//! costs no host CPU between deadlines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{IoAction, Port, PortDevice};

#[derive(Clone)]
pub struct Clock(Arc<Source>);

enum Source {
    Host(Instant),
    Manual(AtomicU64),
}

impl Clock {
    /// Time from the host's monotonic clock, 0 now.
    pub fn host() -> Self {
        Clock(Arc::new(Source::Host(Instant::now())))
    }

    /// Time that moves only by [`Clock::set`] (for tests), 0 now.
    pub fn manual() -> Self {
        Clock(Arc::new(Source::Manual(AtomicU64::new(0))))
    }

    /// Nanoseconds since the clock started.
    pub fn now(&self) -> u64 {
        match &*self.0 {
            Source::Host(start) => start.elapsed().as_nanos() as u64,
            Source::Manual(t) => t.load(Ordering::Acquire),
        }
    }

    /// Moves a manual clock to `ns` (never backwards). A host clock
    /// ignores it.
    pub fn set(&self, ns: u64) {
        if let Source::Manual(t) = &*self.0 {
            t.fetch_max(ns, Ordering::AcqRel);
        }
    }

    /// Moves a manual clock forward by `ns`.
    pub fn advance(&self, ns: u64) {
        self.set(self.now() + ns);
    }
}

/// Converts a time in ns to ticks of a `hz` clock (rounded down).
pub fn ticks(ns: u64, hz: u64) -> u64 {
    ((ns as u128 * hz as u128) / 1_000_000_000) as u64
}

/// Converts `ticks` of a `hz` clock to ns (rounded up, so that the tick
/// has happened at that time).
pub fn ns_of_ticks(ticks: u64, hz: u64) -> u64 {
    ((ticks as u128 * 1_000_000_000).div_ceil(hz as u128)) as u64
}

/// A device whose interrupts fall due at times of the clock.
pub trait Timed: Send {
    /// The earliest time at which [`Timed::advance`] has something to do.
    fn deadline(&self) -> Option<u64>;
    /// Brings the device to time `now`: raises what fell due.
    fn advance(&mut self, now: u64);
}

/// A timed device shared by the port bus, the MMIO bus and the ticker.
pub type SharedTimed<D> = Arc<Mutex<D>>;

struct TickerState {
    devices: Vec<Arc<Mutex<dyn Timed>>>,
    stop: bool,
    /// Set by [`TickerHandle::rearm`]: a deadline may have moved earlier.
    rearm: bool,
}

struct TickerShared {
    state: Mutex<TickerState>,
    cond: Condvar,
    /// The deadline the thread sleeps toward (u64::MAX: none; SCANNING
    /// while it reads the devices' deadlines).
    armed: AtomicU64,
    clock: Clock,
}

const SCANNING: u64 = 0;

/// The thread that raises timer interrupts at their deadlines.
pub struct Ticker {
    shared: Arc<TickerShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a device's port wrapper uses to tell the ticker that a
/// deadline may have moved.
#[derive(Clone)]
pub struct TickerHandle(Arc<TickerShared>);

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ticker {
    pub fn new(clock: Clock) -> Self {
        let shared = Arc::new(TickerShared {
            state: Mutex::new(TickerState {
                devices: Vec::new(),
                stop: false,
                rearm: false,
            }),
            cond: Condvar::new(),
            armed: AtomicU64::new(u64::MAX),
            clock,
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("bt86-ticker".into())
            .spawn(move || ticker_thread(&s))
            .expect("spawn the ticker thread");
        Ticker {
            shared,
            thread: Some(thread),
        }
    }

    pub fn handle(&self) -> TickerHandle {
        TickerHandle(self.shared.clone())
    }

    pub fn add(&self, dev: Arc<Mutex<dyn Timed>>) {
        lock(&self.shared.state).devices.push(dev);
        self.handle().rearm();
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.cond.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl TickerHandle {
    /// A device's deadline changed: wake the ticker if it is now earlier
    /// than what the ticker sleeps toward.
    pub fn rearm_for(&self, deadline: Option<u64>) {
        let armed = self.0.armed.load(Ordering::Acquire);
        if deadline.is_some_and(|d| armed == SCANNING || d < armed) {
            self.rearm();
        }
    }

    fn rearm(&self) {
        lock(&self.0.state).rearm = true;
        self.0.cond.notify_all();
    }
}

fn ticker_thread(s: &TickerShared) {
    loop {
        // The device list is copied out: a device is never locked while
        // the ticker's state is (a port access holds the device's lock
        // when it asks to rearm).
        let devices = {
            let mut st = lock(&s.state);
            if st.stop {
                return;
            }
            st.rearm = false;
            st.devices.clone()
        };
        // While scanning, every deadline change asks for another scan.
        s.armed.store(SCANNING, Ordering::Release);
        let now = s.clock.now();
        let mut next = u64::MAX;
        for d in &devices {
            let mut dev = lock(d);
            if dev.deadline().is_some_and(|t| t <= now) {
                dev.advance(now);
            }
            if let Some(t) = dev.deadline() {
                next = next.min(t);
            }
        }
        s.armed.store(next, Ordering::Release);
        // A manual clock does not move by itself: poll it.
        let wait = match &*s.clock.0 {
            Source::Manual(_) => Duration::from_millis(1),
            Source::Host(_) if next == u64::MAX => Duration::from_secs(3600),
            Source::Host(_) => Duration::from_nanos(next.saturating_sub(s.clock.now())),
        };
        if wait.is_zero() {
            continue;
        }
        let st = lock(&s.state);
        // A rearm between the scan and here is not lost: it set the flag.
        drop(
            s.cond
                .wait_timeout_while(st, wait, |st| !st.rearm && !st.stop)
                .unwrap_or_else(|e| e.into_inner()),
        );
    }
}

/// Puts a shared timed device on the port bus: each access locks it and
/// tells the ticker if the access moved its deadline earlier.
pub struct TimedPorts<D> {
    dev: SharedTimed<D>,
    ticker: TickerHandle,
}

impl<D> TimedPorts<D> {
    pub fn new(dev: SharedTimed<D>, ticker: TickerHandle) -> Self {
        TimedPorts { dev, ticker }
    }
}

impl<D: PortDevice + Timed> PortDevice for TimedPorts<D> {
    fn read(&mut self, port: Port, size: u8) -> u32 {
        let (v, deadline) = {
            let mut d = lock(&self.dev);
            (d.read(port, size), d.deadline())
        };
        self.ticker.rearm_for(deadline);
        v
    }

    fn write(&mut self, port: Port, size: u8, value: u32) -> IoAction {
        let (a, deadline) = {
            let mut d = lock(&self.dev);
            (d.write(port, size, value), d.deadline())
        };
        self.ticker.rearm_for(deadline);
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn tick_conversions_round_the_right_way() {
        assert_eq!(ticks(1_000_000_000, 1_193_182), 1_193_182);
        assert_eq!(ticks(837, 1_193_182), 0);
        assert_eq!(ticks(839, 1_193_182), 1);
        assert_eq!(ns_of_ticks(1, 1_193_182), 839);
        assert_eq!(ticks(ns_of_ticks(12345, 1_193_182), 1_193_182), 12345);
    }

    #[test]
    fn manual_clock_moves_only_forward() {
        let c = Clock::manual();
        c.set(100);
        c.set(50);
        assert_eq!(c.now(), 100);
        c.advance(5);
        assert_eq!(c.now(), 105);
    }

    struct Periodic {
        next: u64,
        period: u64,
        fired: Arc<AtomicU32>,
    }

    impl Timed for Periodic {
        fn deadline(&self) -> Option<u64> {
            Some(self.next)
        }
        fn advance(&mut self, now: u64) {
            while self.next <= now {
                self.fired.fetch_add(1, Ordering::SeqCst);
                self.next += self.period;
            }
        }
    }

    #[test]
    fn ticker_fires_deadlines_of_a_host_clock() {
        let fired = Arc::new(AtomicU32::new(0));
        let clock = Clock::host();
        let ticker = Ticker::new(clock.clone());
        ticker.add(Arc::new(Mutex::new(Periodic {
            next: clock.now() + 1_000_000,
            period: 1_000_000,
            fired: fired.clone(),
        })));
        let start = Instant::now();
        while fired.load(Ordering::SeqCst) < 5 {
            assert!(start.elapsed() < Duration::from_secs(10), "no ticks");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn ticker_follows_a_manual_clock() {
        let fired = Arc::new(AtomicU32::new(0));
        let clock = Clock::manual();
        let ticker = Ticker::new(clock.clone());
        ticker.add(Arc::new(Mutex::new(Periodic {
            next: 1000,
            period: 1000,
            fired: fired.clone(),
        })));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(fired.load(Ordering::SeqCst), 0);
        clock.set(3500);
        let start = Instant::now();
        while fired.load(Ordering::SeqCst) < 3 {
            assert!(start.elapsed() < Duration::from_secs(10), "no ticks");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(fired.load(Ordering::SeqCst), 3);
    }
}
