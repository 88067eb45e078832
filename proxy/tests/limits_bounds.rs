//! The memory and error bounds that `ringway_proxy::limits` documents,
//! measured: 1,000,000 distinct client addresses (IPv4 and IPv6) go through
//! the sketches, the limiters' memory stays what they were built with (the
//! checks allocate nothing), and well-behaved clients are refused no more
//! often than the stated bound allows — at the proxy's width and at a
//! narrower one where the bound is not tiny. Time is simulated, so nothing
//! here depends on the speed of the machine.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ringway_proxy::config::RateLimit;
use ringway_proxy::limits::{client_key, ConcurrencyLimiter, RateLimiter, SketchShape};

/// Counts the allocations made by the current thread, so a test can show
/// that a stretch of its own code allocated nothing while other tests run.
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// SplitMix64: a reproducible stream of pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const DISTINCT: u32 = 1_000_000;

/// Client number `id` as an address: the first half IPv4, the second half
/// IPv6 in distinct /64s (the unit `client_key` limits), and ids past
/// `DISTINCT` for the clients a test watches. Every tenth IPv4 client
/// arrives as an IPv4-mapped IPv6 address, as on a dual-stack listener.
fn address(id: u32) -> IpAddr {
    if id % 2 == 0 {
        let v4 = Ipv4Addr::from(0x0B00_0000 + id);
        if id % 10 == 0 {
            IpAddr::V6(v4.to_ipv6_mapped())
        } else {
            IpAddr::V4(v4)
        }
    } else {
        let site = (0x2001_0db8_u128 << 96) | (u128::from(id) << 64);
        IpAddr::V6(Ipv6Addr::from(site | 0x1234))
    }
}

/// The client number `address(id)` was made from, read back from its key:
/// proof that a million ids are a million distinct keys.
fn id_of(key: IpAddr) -> u32 {
    match key {
        IpAddr::V4(v4) => u32::from(v4) - 0x0B00_0000,
        IpAddr::V6(v6) => (u128::from(v6) >> 64) as u32,
    }
}

const SECOND: u64 = 1_000_000_000;
/// Simulated time advances in ticks of 100 µs; requests in one tick are
/// simultaneous.
const TICK: u64 = 100_000;

/// One simulated request: at which tick, and from which client.
type Event = (u32, u32);

/// `per_second` requests a second from `client` for `secs`, evenly spaced
/// from a random phase.
fn periodic(out: &mut Vec<Event>, rng: &mut Rng, client: u32, per_second: u64, secs: u64) {
    let gap = SECOND / per_second;
    let phase = rng.below(gap);
    out.extend((0..per_second * secs).map(|i| (((phase + i * gap) / TICK) as u32, client)));
}

/// `events` in tick order (a counting sort: linear, and quick unoptimised).
fn in_time_order(events: &[Event], ticks: usize) -> Vec<Event> {
    let mut start = vec![0usize; ticks + 1];
    for &(tick, _) in events {
        start[tick as usize + 1] += 1;
    }
    for t in 0..ticks {
        start[t + 1] += start[t];
    }
    let mut out = vec![(0, 0); events.len()];
    for &e in events {
        out[start[e.0 as usize]] = e;
        start[e.0 as usize] += 1;
    }
    out
}

#[test]
fn rate_sketch_holds_its_bounds_over_a_million_clients() {
    const SECS: u64 = 10;
    const WATCHED: u32 = 100;
    const HEAVY: u32 = 100;
    let limit = RateLimit {
        per_second: 200,
        burst: 400,
    };
    let mut rng = Rng(42);
    let ticks = (SECS * SECOND / TICK) as usize;
    let mut events: Vec<Event> = Vec::with_capacity(2_500_000);
    // The crowd: every one of a million addresses sends one or two
    // requests at random moments.
    for id in 0..DISTINCT {
        for _ in 0..=rng.below(2) {
            events.push((rng.below(ticks as u64) as u32, id));
        }
    }
    // Abusers: three times the limit, all the time.
    let heavy = DISTINCT..DISTINCT + HEAVY;
    for id in heavy.clone() {
        periodic(&mut events, &mut rng, id, 600, SECS);
    }
    // Watched well-behaved clients: half their rate (ρ = 0.5), steadily.
    let watched = heavy.end..heavy.end + WATCHED;
    for id in watched.clone() {
        periodic(&mut events, &mut rng, id, 100, SECS);
    }
    let events = in_time_order(&events, ticks);
    let keys: Vec<IpAddr> = (0..watched.end).map(|id| client_key(address(id))).collect();
    assert!(keys
        .iter()
        .enumerate()
        .all(|(id, k)| id_of(*k) == id as u32));

    for width in [65_536, 4_096] {
        let limiter = RateLimiter::new(
            limit,
            SketchShape {
                width,
                seed: Some(7),
            },
        );
        let memory = limiter.memory_bytes();
        let mut allowed_others = 0u64;
        let mut heavy_allowed = vec![0u64; HEAVY as usize];
        let (mut watched_sent, mut watched_refused) = (0u64, 0u64);
        let before = allocations();
        for &(tick, id) in &events {
            let now = SECOND + u64::from(tick) * TICK;
            let allowed = limiter.check(&keys[id as usize], now).is_allowed();
            if watched.contains(&id) {
                watched_sent += 1;
                watched_refused += u64::from(!allowed);
            } else if allowed {
                allowed_others += 1;
                if heavy.contains(&id) {
                    heavy_allowed[(id - heavy.start) as usize] += 1;
                }
            }
        }
        let allocated = allocations() - before;
        let others_rate = allowed_others as f64 / SECS as f64;
        let measured = watched_refused as f64 / watched_sent as f64;
        let bound = limiter.false_limit_bound(others_rate, 0.5);
        println!(
            "rate sketch width {width}: {memory} bytes for {} distinct clients, \
             {} checks, {allocated} allocations; others passed {others_rate:.0}/s; \
             watched clients refused {watched_refused} of {watched_sent} \
             ({measured:.2e}); stated bound {bound:.2e}",
            keys.len(),
            events.len()
        );
        assert_eq!(allocated, 0, "a check must not allocate");
        assert_eq!(limiter.memory_bytes(), memory);
        assert!(memory <= 4 * width * 8 + 256);
        assert!(
            measured <= bound,
            "measured false-limit rate {measured:.2e} above the bound {bound:.2e}"
        );
        // Collisions never let an abuser past its own bucket: burst + rate × time.
        let most = heavy_allowed.iter().max().copied().unwrap_or(0);
        assert!(most <= 400 + 200 * SECS, "an abuser got {most}");
        // ... and the limit bites: each abuser asked 6,000 times.
        assert!(most < 3000, "an abuser got {most}");
    }
}

#[test]
fn concurrency_sketch_holds_its_bounds_over_a_million_clients() {
    const HELD: usize = 20_000;
    const CAP: u32 = 64;
    const HEAVY: u32 = 50;
    const OWN: u32 = CAP / 2;
    for width in [65_536, 1_024] {
        let limiter = ConcurrencyLimiter::new(
            CAP,
            SketchShape {
                width,
                seed: Some(11),
            },
        );
        let memory = limiter.memory_bytes();
        let mut rng = Rng(width as u64);
        // Abusers hold all they can.
        let mut heavy_guards = Vec::with_capacity((HEAVY * 2 * CAP) as usize);
        for id in DISTINCT..DISTINCT + HEAVY {
            let key = client_key(address(id));
            for _ in 0..2 * CAP {
                if let Ok(g) = limiter.try_acquire(&key) {
                    heavy_guards.push(g);
                }
            }
        }
        assert_eq!(heavy_guards.len(), (HEAVY * CAP) as usize);
        let others = (HELD + heavy_guards.len()) as f64;
        // The crowd: a million addresses each open a connection; the oldest
        // closes when 20,000 are open. Every 100th arrival, a watched client
        // that holds `OWN - 1` connections opens one more.
        let mut open: VecDeque<_> = VecDeque::with_capacity(HELD + 1);
        let mut probe = Vec::with_capacity(OWN as usize);
        let (mut probes, mut refused, mut crowd_refused) = (0u64, 0u64, 0u64);
        let before = allocations();
        for id in 0..DISTINCT {
            match limiter.try_acquire(&client_key(address(id))) {
                Ok(g) => open.push_back(g),
                Err(_) => crowd_refused += 1,
            }
            if open.len() > HELD {
                open.pop_front();
            }
            if id % 100 == 0 && open.len() == HELD {
                let watched = client_key(address(DISTINCT + HEAVY + rng.below(1000) as u32));
                probes += 1;
                for _ in 0..OWN {
                    match limiter.try_acquire(&watched) {
                        Ok(g) => probe.push(g),
                        Err(_) => {
                            refused += 1;
                            break;
                        }
                    }
                }
                probe.clear();
            }
        }
        let allocated = allocations() - before;
        let measured = refused as f64 / probes as f64;
        let bound = limiter.false_refusal_bound(others, OWN - 1);
        println!(
            "concurrency sketch width {width}: {memory} bytes for {DISTINCT} distinct \
             clients, {allocated} allocations; {others} slots held by others; \
             watched clients refused {refused} of {probes} ({measured:.2e}); \
             stated bound {bound:.2e}; crowd refused {crowd_refused}"
        );
        assert_eq!(allocated, 0, "an acquire must not allocate");
        assert_eq!(limiter.memory_bytes(), memory);
        assert!(memory <= 4 * width * 4 + 256);
        assert!(
            measured <= bound,
            "measured false-refusal rate {measured:.2e} above the bound {bound:.2e}"
        );
        drop(open);
        drop(heavy_guards);
        for id in (0..DISTINCT).step_by(997) {
            assert_eq!(limiter.estimate(&client_key(address(id))), 0);
        }
    }
}
