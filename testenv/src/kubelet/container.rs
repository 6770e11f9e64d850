//! Turning a Pod's first container into a local process: argv, environment and paths.
//! Pure functions; the kubelet resolves Secrets, ConfigMaps and volumes before calling them.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;

/// A container path and the host directory or file that stands in for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mount {
    pub container_path: String,
    pub host_path: PathBuf,
}

/// Everything needed to start a container as a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProcessSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Builds the process for `container`, given its already resolved environment (in order),
/// its mounts (container path → host path), and the `coffer` binary that stands in for
/// Coffer's image.
///
/// Paths cannot be mounted into a plain process, so every argument and environment value
/// that names a mounted path (exactly, below it, or after `=` as in `--dir=/data`) is
/// rewritten to the host path. `$(VAR)` references are expanded as Kubernetes does.
pub(crate) fn process_spec(
    container: &Container,
    env: &[(String, String)],
    mounts: &[Mount],
    coffer_binary: Option<&Path>,
) -> Result<ProcessSpec, String> {
    let mut argv: Vec<String> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .map(|a| rewrite_paths(&expand(a, env), mounts))
        .collect();
    let image = container.image.as_deref().unwrap_or_default();
    if let Some(binary) = coffer_binary.filter(|_| is_coffer_image(image)) {
        let binary = binary.display().to_string();
        let has_command = container.command.as_ref().is_some_and(|c| !c.is_empty());
        match argv.first() {
            // No command: the image's entrypoint, `coffer`, runs with the args.
            _ if !has_command => argv.insert(0, binary),
            Some(first) if first.rsplit('/').next() == Some("coffer") => argv[0] = binary,
            _ => {}
        }
    }
    if argv.is_empty() {
        return Err(format!(
            "container {:?} has no command: the process kubelet cannot run an image's entrypoint",
            container.name
        ));
    }
    let env = env
        .iter()
        .map(|(k, v)| (k.clone(), rewrite_paths(v, mounts)))
        .collect();
    Ok(ProcessSpec { argv, env })
}

/// True for Coffer's own image, whatever its registry, tag or digest (`.../coffer:tag`).
pub(crate) fn is_coffer_image(image: &str) -> bool {
    let without_digest = image.split('@').next().unwrap_or(image);
    let name = without_digest.rsplit('/').next().unwrap_or(without_digest);
    name.split(':').next() == Some("coffer")
}

/// Expands `$(NAME)` with the value of `NAME` in `env` (the last definition wins); `$$` is a
/// literal `$`; an unknown reference is left as it is. This is Kubernetes' rule for
/// `command`, `args` and `env[].value`.
pub(crate) fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, value)) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Rewrites a value that names a mounted path to the host path (the longest mount wins).
pub(crate) fn rewrite_paths(value: &str, mounts: &[Mount]) -> String {
    if let Some(rewritten) = rewrite_path(value, mounts) {
        return rewritten;
    }
    if let Some((flag, path)) = value.split_once('=')
        && let Some(rewritten) = rewrite_path(path, mounts)
    {
        return format!("{flag}={rewritten}");
    }
    value.to_owned()
}

fn rewrite_path(value: &str, mounts: &[Mount]) -> Option<String> {
    mounts
        .iter()
        .filter_map(|m| {
            let base = m.container_path.trim_end_matches('/');
            let rest = value.strip_prefix(base)?;
            (rest.is_empty() || rest.starts_with('/')).then_some((base.len(), m, rest))
        })
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, m, rest)| format!("{}{rest}", m.host_path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn mounts() -> Vec<Mount> {
        vec![
            Mount {
                container_path: "/data".into(),
                host_path: "/host/pvc/data".into(),
            },
            Mount {
                container_path: "/data/cache".into(),
                host_path: "/host/empty".into(),
            },
            Mount {
                container_path: "/dev/termination-log".into(),
                host_path: "/host/pod/termination-log".into(),
            },
        ]
    }

    #[test]
    fn expands_references_like_kubernetes() {
        let e = env(&[("A", "1"), ("B", "two"), ("A", "3")]);
        assert_eq!(expand("x$(A)y$(B)", &e), "x3ytwo");
        assert_eq!(expand("$$(A) $(UNKNOWN) $ $", &e), "$(A) $(UNKNOWN) $ $");
        assert_eq!(expand("$(A", &e), "$(A");
    }

    #[test]
    fn rewrites_mounted_paths_only() {
        let m = mounts();
        assert_eq!(rewrite_paths("/data", &m), "/host/pvc/data");
        assert_eq!(rewrite_paths("/data/x/y", &m), "/host/pvc/data/x/y");
        assert_eq!(
            rewrite_paths("/data/cache/z", &m),
            "/host/empty/z",
            "longest mount wins"
        );
        assert_eq!(rewrite_paths("--dir=/data/x", &m), "--dir=/host/pvc/data/x");
        assert_eq!(rewrite_paths("/database", &m), "/database");
        assert_eq!(rewrite_paths("relative/data", &m), "relative/data");
        assert_eq!(
            rewrite_paths("/dev/termination-log", &m),
            "/host/pod/termination-log"
        );
    }

    #[test]
    fn coffer_images_run_the_built_binary() {
        assert!(is_coffer_image("ghcr.io/coffer-dev/coffer:0.1.0"));
        assert!(is_coffer_image("coffer"));
        assert!(is_coffer_image("localhost:5000/coffer@sha256:abc"));
        assert!(!is_coffer_image("busybox:1.36"));
        assert!(!is_coffer_image("ghcr.io/coffer/other:1"));

        let container = Container {
            name: "worker".into(),
            image: Some("ghcr.io/coffer-dev/coffer:0.1.0".into()),
            command: Some(vec!["/usr/local/bin/coffer".into()]),
            args: Some(vec!["worker".into(), "--to=/data/out".into()]),
            ..Container::default()
        };
        let spec = process_spec(
            &container,
            &env(&[("DIR", "/data")]),
            &mounts(),
            Some(Path::new("/build/coffer")),
        )
        .unwrap();
        assert_eq!(
            spec.argv,
            ["/build/coffer", "worker", "--to=/host/pvc/data/out"]
        );
        assert_eq!(spec.env, env(&[("DIR", "/host/pvc/data")]));

        // Only args (as the chart's Deployment has): the image's entrypoint runs them.
        let controller = Container {
            command: None,
            args: Some(vec!["controller".into(), "--log-format=json".into()]),
            ..container
        };
        let spec = process_spec(&controller, &[], &[], Some(Path::new("/build/coffer"))).unwrap();
        assert_eq!(
            spec.argv,
            ["/build/coffer", "controller", "--log-format=json"]
        );
    }

    #[test]
    fn other_images_run_their_command_and_need_one() {
        let mut container = Container {
            name: "c".into(),
            image: Some("busybox".into()),
            command: Some(vec!["sh".into(), "-c".into()]),
            args: Some(vec!["echo $(GREETING) > /dev/termination-log".into()]),
            ..Container::default()
        };
        let spec = process_spec(&container, &env(&[("GREETING", "hi")]), &mounts(), None).unwrap();
        assert_eq!(spec.argv, ["sh", "-c", "echo hi > /dev/termination-log"]);
        container.command = None;
        container.args = None;
        let err = process_spec(&container, &[], &[], Some(Path::new("/build/coffer"))).unwrap_err();
        assert!(err.contains("has no command"), "{err}");
    }
}
