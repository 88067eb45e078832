//! `scripts/install.sh`, staged into a temporary root (`--destdir`) with
//! the binaries built here (`--prebuilt`), as CI can run it without root:
//! binaries, units pointed at the prefix, and configs from `conf/` land
//! where the units expect them; a second run keeps an operator's edited
//! config instead of overwriting it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use ringway_tests::{printed, target_bin};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Run the script into `root`; its output, asserting it succeeded.
fn install(root: &Path) -> String {
    let prebuilt = target_bin("ringway-proxy");
    let out = Command::new(repo().join("scripts/install.sh"))
        .arg("--prebuilt")
        .arg(prebuilt.parent().unwrap())
        .args(["--prefix", "/opt/ringway", "--destdir"])
        .arg(root)
        .env_remove("DESTDIR")
        .output()
        .unwrap();
    let text = printed(&out);
    assert!(out.status.success(), "{text}");
    text
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_staged_install_puts_every_file_in_place_and_keeps_an_edited_config() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let out = install(root);

    for bin in ["ringway-proxy", "ringway-backend"] {
        let installed = root.join("opt/ringway/bin").join(bin);
        assert_eq!(mode(&installed), 0o755, "{bin}");
        assert_eq!(
            std::fs::metadata(&installed).unwrap().len(),
            std::fs::metadata(target_bin(bin)).unwrap().len(),
            "{bin} is not the built binary"
        );
    }
    for unit in ["ringway-proxy.service", "ringway-backend@.service"] {
        let installed = read(&root.join("etc/systemd/system").join(unit));
        let shipped = read(&repo().join("systemd").join(unit));
        assert_eq!(
            installed,
            shipped.replace("/usr/local/bin/", "/opt/ringway/bin/"),
            "{unit}"
        );
        for exec in installed.lines().filter(|l| l.starts_with("Exec")) {
            assert!(
                exec.contains("=/opt/ringway/bin/") || exec.contains("/bin/kill"),
                "{unit}: {exec}"
            );
        }
    }
    let etc = root.join("etc/ringway");
    assert_eq!(mode(&etc), 0o750);
    for (name, example) in [
        ("ringway.toml", "conf/ringway.toml"),
        ("backend.env", "conf/backend.env"),
    ] {
        assert_eq!(read(&etc.join(name)), read(&repo().join(example)), "{name}");
        assert_eq!(
            mode(&etc.join(name)),
            0o640,
            "{name} must not be world-readable"
        );
    }
    assert!(
        out.contains("configuration ok"),
        "the installed config is checked: {out}"
    );

    let edited = format!(
        "{}\n# the operator's edit\n",
        read(&etc.join("ringway.toml"))
    );
    std::fs::write(etc.join("ringway.toml"), &edited).unwrap();
    std::fs::write(
        etc.join("backend.env"),
        "REDIS_URL=redis://10.0.0.5:6379/0\n",
    )
    .unwrap();
    let again = install(root);
    assert_eq!(read(&etc.join("ringway.toml")), edited, "{again}");
    assert_eq!(
        read(&etc.join("backend.env")),
        "REDIS_URL=redis://10.0.0.5:6379/0\n",
        "{again}"
    );
    assert!(
        again.contains("kept the existing /etc/ringway/ringway.toml"),
        "{again}"
    );
}
