//! The image and the manifests agree on the version: the Dockerfile's label, the chart's
//! version and appVersion (its default image tag), the kustomize Deployment's images and the
//! controller's default worker image all name Cargo.toml's version.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn the_image_tag_is_the_crate_version_everywhere() {
    let version = env!("CARGO_PKG_VERSION");
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains(&format!("org.opencontainers.image.version=\"{version}\"")),
        "the Dockerfile's version label is not {version}"
    );
    assert!(
        dockerfile.contains("USER 65532:65532"),
        "a numeric non-root user"
    );
    let chart = read("charts/coffer/Chart.yaml");
    assert!(
        chart.contains(&format!("\nversion: {version}\n")),
        "{chart}"
    );
    assert!(
        chart.contains(&format!("\nappVersion: \"{version}\"\n")),
        "{chart}"
    );
    let values = read("charts/coffer/values.yaml");
    assert!(
        values.contains("  repository: ghcr.io/coffer-dev/coffer\n")
            && values.contains("  tag: \"\"\n"),
        "the chart's default image is ghcr.io/coffer-dev/coffer at its appVersion"
    );
    let deployment = read("deploy/coffer.yaml");
    let images: Vec<&str> = deployment
        .lines()
        .filter(|l| l.contains("ghcr.io/coffer-dev/coffer"))
        .collect();
    assert_eq!(
        images.len(),
        3,
        "the controller's image, COFFER_WORKER_IMAGE and the admission policy's image check"
    );
    for line in images {
        assert!(
            line.contains(&format!("ghcr.io/coffer-dev/coffer:{version}\""))
                || line
                    .trim_end()
                    .ends_with(&format!("ghcr.io/coffer-dev/coffer:{version}")),
            "{line}"
        );
    }
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["controller", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains(&format!("ghcr.io/coffer-dev/coffer:{version}")),
        "{help}"
    );
}
