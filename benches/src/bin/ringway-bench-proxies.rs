//! `ringway-bench-proxies`: ringway-proxy against nginx, HAProxy and Caddy
//! in one interleaved run. Prints the markdown report and writes it, the
//! JSON and the PNG charts to `--out`; see `ringway_benches::compare`.

use std::process::ExitCode;

use clap::Parser;
use ringway_benches::compare::{self, Options};
use ringway_benches::scenarios::SCENARIOS;
use ringway_benches::{driver, plot, procs, report};

fn main() -> ExitCode {
    let opts = Options::parse().settled();
    if opts.list {
        for s in SCENARIOS {
            println!("{:<15} {}", s.name, s.about);
        }
        return ExitCode::SUCCESS;
    }
    // The driver is the load: pin it before any thread exists, so the
    // runtime's threads inherit the mask.
    if let Err(e) = procs::pin_self(opts.settings.load_core) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let out = opts.out.clone();
    driver::drive(Some(1), opts.max_secs, compare::run(opts), |r| {
        std::fs::create_dir_all(&out)?;
        let mut md = report::markdown(&r);
        match plot::charts(&r, &out) {
            Ok(files) => {
                // Links as docs/BENCHMARKS.md sees them when --out is under docs/.
                for f in files {
                    let link = f.strip_prefix("docs").unwrap_or(&f).display().to_string();
                    md += &format!(
                        "\n![{}]({link})\n",
                        f.file_stem().unwrap_or_default().to_string_lossy()
                    );
                }
            }
            Err(e) => md += &format!("\nCharts not drawn: {e:#}\n"),
        }
        print!("{md}");
        std::fs::write(out.join("report.md"), &md)?;
        driver::write_json(&out.join("report.json"), &r)?;
        eprintln!("wrote {}", out.display());
        Ok(())
    })
}
