//! `ringway-proxy`: parse the command line and hand over to the library.

/// jemalloc returns freed memory to the OS; glibc's arenas keep it, and a
/// proxy's connection churn turns that into creeping RSS.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start: a background thread purges pages
/// freed more than a second ago, so the resident size falls back within
/// seconds after a burst of connections closes instead of staying at its
/// peak (docs/BENCHMARKS.md measures it).
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    ringway_proxy::cli::main()
}
