//! `ringway-proxy`: parse the command line and hand over to the library.

/// jemalloc returns freed memory to the OS; glibc's arenas keep it, and a
/// proxy's connection churn turns that into creeping RSS.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    ringway_proxy::cli::main()
}
