use super::cargo::progress_units;
use super::*;

fn facts(installed: &[&str], zigbuild: bool) -> ToolchainFacts {
    ToolchainFacts {
        host: "x86_64-unknown-linux-gnu".into(),
        installed_targets: installed.iter().map(|s| s.to_string()).collect(),
        zigbuild,
        linker_configured: false,
    }
}

#[test]
fn cargo_progress_bar_gives_the_unit_count() {
    assert_eq!(progress_units("    Building [=======>        ] 37/180: serde, tokio(build)"), Some((37, 180)));
    assert_eq!(progress_units("    Building [                             ] 0/7: fx-core"), Some((0, 7)));
    assert_eq!(progress_units("   Compiling fx-core v0.1.0 (/tmp/ws/crates/core)"), None);
    assert_eq!(progress_units("error[E0425]: cannot find value `x` in this scope"), None);
}

#[test]
fn toolchain_choice() {
    let host = Toolchain::Cargo { target: None };
    assert_eq!(choose_toolchain(None, &facts(&[], false)).ok(), Some(host.clone()));
    assert_eq!(
        choose_toolchain(Some("x86_64-unknown-linux-gnu"), &facts(&[], false)).ok(),
        Some(host)
    );
    let musl = "x86_64-unknown-linux-musl";
    assert_eq!(
        choose_toolchain(Some(musl), &facts(&[musl], true)).ok(),
        Some(Toolchain::Cargo { target: Some(musl.into()) })
    );
    let arm = "aarch64-unknown-linux-gnu";
    assert_eq!(
        choose_toolchain(Some(arm), &facts(&[arm], true)).ok(),
        Some(Toolchain::Zigbuild { target: arm.into() })
    );
    assert_eq!(
        choose_toolchain(Some(arm), &facts(&[arm], false)).ok(),
        Some(Toolchain::Cargo { target: Some(arm.into()) })
    );
}

#[test]
fn missing_target_says_what_to_install() {
    let arm = "aarch64-unknown-linux-musl";
    let err = choose_toolchain(Some(arm), &facts(&[], false)).expect_err("not installed");
    assert_eq!(err.kind, BuildErrorKind::Toolchain);
    assert!(err.rendered.contains("`rustup target add aarch64-unknown-linux-musl`"), "{}", err.rendered);
    assert!(err.rendered.contains("`cargo install cargo-zigbuild`"), "{}", err.rendered);
    // Same architecture: the standard library is all that is missing.
    let err = choose_toolchain(Some("x86_64-unknown-linux-musl"), &facts(&[], false))
        .expect_err("not installed");
    assert!(err.rendered.contains("rustup target add x86_64-unknown-linux-musl"));
    assert!(!err.rendered.contains("zigbuild"), "{}", err.rendered);
}

#[test]
fn package_names_from_ids() {
    assert_eq!(package_name_from_id("path+file:///w/services/svc1#0.1.0"), "svc1");
    assert_eq!(package_name_from_id("path+file:///w/crates/shared#fx-shared@0.1.0"), "fx-shared");
    assert_eq!(
        package_name_from_id("registry+https://github.com/rust-lang/crates.io-index#serde@1.0.228"),
        "serde"
    );
    assert_eq!(package_name_from_id("svc1 0.1.0 (path+file:///w/services/svc1)"), "svc1");
}
