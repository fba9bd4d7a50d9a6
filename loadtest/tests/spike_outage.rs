//! CI's load test: the short spike with a broker outage in the middle of it, through msk-gate with
//! MSK IAM, every component a separate process. Nothing accepted may be lost.

use std::process::Command;

#[test]
fn a_spike_through_a_broker_outage_loses_nothing() {
    let out_dir = std::env::temp_dir().join(format!("spillway-loadtest-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "run",
            "spike-outage",
            "--quick",
            "--drain-timeout",
            "90s",
            "--out",
        ])
        .arg(&out_dir)
        .output()
        .expect("loadtest runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no summary; stderr:\n{stderr}"));
    eprintln!("{summary}");
    assert!(out.status.success(), "{stderr}");
    let accepted = summary["accepted"].as_u64().expect("accepted");
    assert!(accepted > 4000, "the burst was accepted: {summary}");
    assert_eq!(summary["lost"], 0, "lost = accepted − delivered: {summary}");
    assert_eq!(summary["delivered"], accepted);
    assert_eq!(summary["dead_lettered"], 0, "{summary}");
    assert!(out_dir.join("spike-outage/README.md").is_file());
    let _ = std::fs::remove_dir_all(&out_dir);
}
