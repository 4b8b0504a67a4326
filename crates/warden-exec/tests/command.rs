//! Command executor: real processes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use warden_exec::ExecOptions;

#[tokio::test]
async fn input_goes_to_stdin() {
    let out = cmd(&["cat"], &[], "hello\nwörld\n", &opts()).await;
    assert_eq!((out.exit_code, out.output.as_str()), (0, "hello\nwörld\n"));
    assert!(!out.truncated);
    assert_eq!(out.rows_json, None);
    // stdin is closed after the input: `wc -c` terminates and counts it.
    let out = cmd(&["wc", "-c"], &[], "12345", &opts()).await;
    assert_eq!(out.output.trim(), "5");
}

#[tokio::test]
async fn env_secrets_are_injected_and_environment_inherited() {
    let out = cmd(
        &[
            "sh",
            "-c",
            "test \"$FOO\" = 's3cr3t value' && echo injected; echo \"${PATH:+path-set}\"",
        ],
        &[("FOO", "s3cr3t value")],
        "",
        &opts(),
    )
    .await;
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.output, "injected\npath-set\n");
}

/// An approved `echo $SECRET` prints `[redacted]`, also when the value comes out in pieces
/// (separate writes) or right at the output cap.
#[tokio::test]
async fn secret_values_are_masked_in_the_output_stream() {
    let out = cmd(
        &[
            "sh",
            "-c",
            "echo \"$FOO\"; printf 's3cr'; sleep 0.2; printf '3t value\\n'; echo done",
        ],
        &[("FOO", "s3cr3t value")],
        "",
        &opts(),
    )
    .await;
    assert_eq!(out.output, "[redacted]\n[redacted]\ndone\n");
    // A cap that would cut the secret in half keeps none of it.
    let o = ExecOptions {
        output_cap: 8,
        ..opts()
    };
    let out = cmd(
        &["sh", "-c", "printf 'ab%s' \"$FOO\""],
        &[("FOO", "s3cr3t value")],
        "",
        &o,
    )
    .await;
    assert!(!out.output.contains("s3cr"), "{}", out.output);
    assert!(out.truncated);
}

#[tokio::test]
async fn exit_codes_are_propagated() {
    let out = cmd(&["sh", "-c", "echo partial; exit 3"], &[], "", &opts()).await;
    assert_eq!((out.exit_code, out.output.as_str()), (3, "partial\n"));
    let out = cmd(&["sh", "-c", "kill -9 $$"], &[], "", &opts()).await;
    assert_eq!(out.exit_code, 128 + 9);
    let out = cmd(&["false"], &[], "", &opts()).await;
    assert_eq!(out.exit_code, 1);
}

#[tokio::test]
async fn stdout_and_stderr_share_one_stream_in_order() {
    let out = cmd(
        &["sh", "-c", "echo one; echo two >&2; echo three"],
        &[],
        "",
        &opts(),
    )
    .await;
    assert_eq!(out.output, "one\ntwo\nthree\n");
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let o = ExecOptions {
        output_cap: 1 << 20,
        timeout: Duration::from_secs(1),
        ..ExecOptions::default()
    };
    let started = Instant::now();
    let out = cmd(&["sleep", "30"], &[], "", &o).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.exit_code, 124);
    assert_eq!(out.output, "… killed after 1s timeout\n");
    assert!(
        out.duration_ms >= 1000 && out.duration_ms < 5000,
        "{}",
        out.duration_ms
    );

    // A grandchild in the background is killed too, and the output before the kill is kept.
    let out = cmd(&["sh", "-c", "sleep 31 & echo $!; wait"], &[], "", &o).await;
    assert_eq!(out.exit_code, 124);
    let pid: u32 = out
        .output
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("pid line");
    assert!(
        out.output.ends_with("\n… killed after 1s timeout\n"),
        "{}",
        out.output
    );
    let mut alive = true;
    for _ in 0..20 {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // gone, or a zombie waiting for its reaper
        if state.is_empty() || state.split(' ').nth(2) == Some("Z") {
            alive = false;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!alive, "background sleep {pid} survived the timeout");
}

#[tokio::test]
async fn term_ignoring_program_is_killed() {
    let o = ExecOptions {
        output_cap: 1 << 20,
        timeout: Duration::from_secs(1),
        ..ExecOptions::default()
    };
    let started = Instant::now();
    let out = cmd(
        &[
            "sh",
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 1; done",
        ],
        &[],
        "",
        &o,
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.exit_code, 124);
    assert_eq!(out.output, "ready\n… killed after 1s timeout\n");
}

#[tokio::test]
async fn output_cap_truncates_and_keeps_draining() {
    let o = ExecOptions {
        output_cap: 1000,
        timeout: Duration::from_secs(60),
        ..ExecOptions::default()
    };
    let out = cmd(
        &["sh", "-c", "yes | head -c 5000000; echo done >&2"],
        &[],
        "",
        &o,
    )
    .await;
    // The program ran to completion (exit 0), it was not blocked on a full pipe.
    assert_eq!(out.exit_code, 0, "{}", out.output);
    assert!(out.truncated);
    assert_eq!(
        out.output,
        format!(
            "{}\n… output truncated at 1000 bytes\n",
            "y\n".repeat(500).trim_end()
        )
    );

    // Cut on a char boundary: 3-byte chars, cap not a multiple of 3.
    let o = ExecOptions {
        output_cap: 10,
        timeout: Duration::from_secs(60),
        ..ExecOptions::default()
    };
    let out = cmd(&["sh", "-c", "printf '日本語日本語'"], &[], "", &o).await;
    assert!(out.truncated);
    assert_eq!(out.output, "日本語\n… output truncated at 10 bytes\n");
}

#[tokio::test]
async fn big_input_to_a_program_that_ignores_stdin() {
    let input = "x".repeat(4 << 20);
    let out = cmd(&["echo", "ok"], &[], &input, &opts()).await;
    assert_eq!((out.exit_code, out.output.as_str()), (0, "ok\n"));
}

#[tokio::test]
async fn missing_program_and_empty_argv() {
    let out = cmd(&["/nonexistent/warden-prog"], &[], "", &opts()).await;
    assert_eq!(out.exit_code, 127);
    assert_eq!(
        out.output,
        "warden: command not found: /nonexistent/warden-prog\n"
    );
    let out = cmd(&["no-such-program-wx"], &[], "", &opts()).await;
    assert_eq!(out.exit_code, 127);
    // Readable, not executable.
    let out = cmd(&["/etc/passwd"], &[], "", &opts()).await;
    assert_eq!(out.exit_code, 126, "{}", out.output);
    let out = cmd(&[], &[], "", &opts()).await;
    assert_eq!(out.exit_code, 2);
    assert!(out.output.contains("no command"), "{}", out.output);
}

#[tokio::test]
async fn no_shell_interpretation_of_arguments() {
    let out = cmd(&["echo", "$HOME", "a;b", "`id`"], &[], "", &opts()).await;
    assert_eq!(out.output, "$HOME a;b `id`\n");
}

#[tokio::test]
async fn invalid_utf8_output_is_replaced_not_fatal() {
    let out = cmd(&["sh", "-c", "printf 'a\\377b'"], &[], "", &opts()).await;
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.output, "a\u{fffd}b");
}

#[tokio::test]
async fn background_children_do_not_hold_the_result_hostage() {
    let started = Instant::now();
    let out = cmd(&["sh", "-c", "sleep 5 & echo hi"], &[], "", &opts()).await;
    assert_eq!((out.exit_code, out.output.as_str()), (0, "hi\n"));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

/// What a command can reach: run as the gateway would (isolation prepared as at start), it
/// gets another user (when the gateway is root), a private scratch dir as its cwd and HOME,
/// only its three standard descriptors, no core dumps, and neither a private directory of the
/// gateway's nor the gateway's environment in /proc.
#[tokio::test]
async fn commands_cannot_reach_the_gateway() {
    warden_exec::sandbox::harden_gateway().expect("Linux: the gateway can be made non-dumpable");
    let isolation = std::sync::Arc::new(warden_exec::sandbox::prepare(None));
    let root = rustix::process::geteuid().is_root();
    let o = ExecOptions {
        isolation: isolation.clone(),
        ..ExecOptions::default()
    };
    // A directory of the gateway's, private as the data dir is (0700).
    let private = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    std::fs::write(private.path().join("warden.key"), "the key").unwrap();
    let script = format!(
        "id -u; pwd; echo \"home=$HOME\"; ls /proc/self/fd | tr '\\n' ' '; echo; ulimit -c; \
         cat {}/warden.key 2>&1 || echo no-key; \
         tr '\\0' '\\n' < /proc/$PPID/environ 2>&1 | grep -c WARDEN_TEST_GATEWAY_SECRET || echo no-environ",
        private.path().display()
    );
    // SAFETY (test): set before any command of this test runs; no other thread reads it.
    unsafe { std::env::set_var("WARDEN_TEST_GATEWAY_SECRET", "gateway-only") };
    let out = cmd(&["sh", "-c", &script], &[], "", &o).await;
    assert_eq!(out.exit_code, 0, "{}", out.output);
    let lines: Vec<&str> = out.output.lines().collect();
    let scratch = isolation.scratch_root().display().to_string();
    assert!(
        lines[1].starts_with(&scratch),
        "cwd is a scratch dir: {}",
        out.output
    );
    assert_eq!(lines[2], format!("home={}", lines[1]), "{}", out.output);
    assert_eq!(
        lines[3].trim(),
        "0 1 2 3",
        "only stdin/stdout/stderr (+ ls's own): {}",
        out.output
    );
    assert_eq!(lines[4], "0", "no core dumps: {}", out.output);
    // Even as the same user, the non-dumpable gateway's environment is root's.
    assert!(
        out.output.contains("no-environ") || out.output.contains("Permission denied"),
        "the gateway's environment is out of reach: {}",
        out.output
    );
    if root {
        let sandbox = isolation
            .sandbox()
            .expect("as root, commands run as another user");
        assert_eq!(lines[0], sandbox.uid.to_string(), "{}", out.output);
        assert_ne!(lines[0], "0");
        assert!(
            !out.output.contains("the key") && out.output.contains("no-key"),
            "a private dir of the gateway's is out of reach: {}",
            out.output
        );
    } else {
        assert!(
            isolation.describe().contains("NOT isolated"),
            "{}",
            isolation.describe()
        );
    }
    // The scratch dir is gone after the run.
    assert!(!std::path::Path::new(lines[1]).exists());
}
