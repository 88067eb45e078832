//! Choosing the rate limiter on numbers: Ringway's count-min GCRA sketch
//! against `governor`'s keyed limiter (a DashMap of GCRA cells) and
//! `pingora-limits`' `Rate` (a count-min sketch of fixed-window counts), at
//! 1, 10,000 and 1,000,000 distinct client addresses; the memory each holds
//! at 1,000,000 addresses (bytes allocated, counted by this binary's
//! allocator); the concurrency cap's acquire/release; the 429 fields.
//!
//! Run: `cargo bench -p ringway-benches --bench limiters -- --warm-up-time 1
//! --measurement-time 3` (pinned to one core with `taskset -c 1` for the
//! figures in docs/BENCHMARKS.md). The memory table is printed first, then
//! criterion's timings.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion};
use governor::{Quota, RateLimiter as Governor};
use pingora_limits::inflight::Inflight;
use pingora_limits::rate::Rate;
use ringway_proxy::config::RateLimit;
use ringway_proxy::limits::{
    client_key, clock, ConcurrencyLimiter, Decision, RateLimitFields, RateLimiter, SketchShape,
};

/// Counts live heap bytes, so memory is measured as what a limiter allocated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Relaxed);
        LIVE.fetch_sub(layout.size(), Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The defaults of the design card: 200 requests/s, bursts of 400.
const LIMIT: RateLimit = RateLimit {
    per_second: 200,
    burst: 400,
};

/// `n` distinct client addresses, half IPv4, half IPv6 (distinct /64s).
fn addresses(n: u32) -> Vec<IpAddr> {
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                IpAddr::V4(Ipv4Addr::from(0x0B00_0000 + i))
            } else {
                IpAddr::V6(Ipv6Addr::from(
                    (0x2001_0db8_u128 << 96) | (u128::from(i) << 64),
                ))
            }
        })
        .map(client_key)
        .collect()
}

fn governor() -> governor::DefaultKeyedRateLimiter<IpAddr> {
    let per_second = NonZeroU32::new(LIMIT.per_second).expect("non-zero");
    let burst = NonZeroU32::new(LIMIT.burst).expect("non-zero");
    Governor::dashmap(Quota::per_second(per_second).allow_burst(burst))
}

/// pingora-limits' estimator at the same table size as Ringway's sketch.
fn pingora() -> Rate {
    Rate::new_with_estimator_config(Duration::from_secs(1), 4, 65_536)
}

fn sketch() -> RateLimiter {
    RateLimiter::new(LIMIT, SketchShape::default())
}

/// Bytes `build` leaves allocated after seeing every key in `keys` once.
fn bytes_held<T>(keys: &[IpAddr], build: impl FnOnce() -> T, see: impl Fn(&T, &IpAddr)) -> usize {
    let before = LIVE.load(Relaxed);
    let limiter = build();
    for k in keys {
        see(&limiter, k);
    }
    let held = LIVE.load(Relaxed).saturating_sub(before);
    drop(limiter);
    held
}

fn print_memory() {
    let keys = addresses(1_000_000);
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    let ours = bytes_held(&keys, sketch, |l, k| {
        black_box(l.check(k, clock::now()));
    });
    let gov = bytes_held(&keys, governor, |l, k| {
        let _ = black_box(l.check_key(k));
    });
    let pin = bytes_held(&keys, pingora, |l, k| {
        black_box(l.observe(k, 1));
    });
    println!("memory after 1,000,000 distinct addresses (bytes allocated):");
    println!("  ringway sketch   {ours:>11}  ({:.1} MiB)", mib(ours));
    println!("  governor keyed   {gov:>11}  ({:.1} MiB)", mib(gov));
    println!("  pingora Rate     {pin:>11}  ({:.1} MiB)", mib(pin));
}

/// One check per iteration, cycling through `keys`.
fn cycle<'a>(keys: &'a [IpAddr]) -> impl FnMut() -> &'a IpAddr {
    let mut i = 0;
    move || {
        i = if i + 1 == keys.len() { 0 } else { i + 1 };
        &keys[i]
    }
}

fn rate_checks(c: &mut Criterion) {
    let mut group = c.benchmark_group("rate_check");
    for n in [1, 10_000, 1_000_000] {
        let keys = addresses(n);
        let ours = sketch();
        group.bench_function(BenchmarkId::new("ringway_sketch", n), |b| {
            let mut next = cycle(&keys);
            b.iter(|| ours.check(next(), clock::now()))
        });
        // The decision alone, with a clock read once per request elsewhere.
        let given = sketch();
        group.bench_function(BenchmarkId::new("ringway_sketch_given_now", n), |b| {
            let mut next = cycle(&keys);
            let mut now = clock::now();
            b.iter(|| {
                now += 1000;
                given.check(next(), now)
            })
        });
        let gov = governor();
        group.bench_function(BenchmarkId::new("governor_keyed", n), |b| {
            let mut next = cycle(&keys);
            b.iter(|| gov.check_key(next()).is_ok())
        });
        let pin = pingora();
        group.bench_function(BenchmarkId::new("pingora_rate", n), |b| {
            let mut next = cycle(&keys);
            b.iter(|| pin.observe(next(), 1) <= LIMIT.per_second as isize)
        });
    }
    group.finish();
}

fn concurrency(c: &mut Criterion) {
    let keys = addresses(10_000);
    let mut group = c.benchmark_group("concurrency_acquire_release");
    let ours = ConcurrencyLimiter::new(256, SketchShape::default());
    group.bench_function("ringway_sketch", |b| {
        let mut next = cycle(&keys);
        b.iter(|| drop(black_box(ours.try_acquire(next()))))
    });
    let pin = Inflight::new();
    group.bench_function("pingora_inflight", |b| {
        let mut next = cycle(&keys);
        b.iter(|| drop(black_box(pin.incr(next(), 1))))
    });
    group.finish();
}

fn fields(c: &mut Criterion) {
    let fields = RateLimitFields::new("requests", LIMIT);
    let limited = Decision::Limited {
        retry_after: Duration::from_millis(1500),
    };
    let plenty = Decision::Allowed {
        remaining: 300,
        reset: Duration::from_millis(5),
    };
    let mut group = c.benchmark_group("ratelimit_fields");
    group.bench_function("render_429", |b| {
        b.iter(|| fields.render(black_box(&limited)))
    });
    group.bench_function("advertise_allowed_plenty", |b| {
        b.iter(|| fields.advertise(black_box(&plenty)))
    });
    group.finish();
}

criterion_group!(benches, rate_checks, concurrency, fields);

fn main() {
    print_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
