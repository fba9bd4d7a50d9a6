//! `spillway dev` comes up over the local stack, a posted message is delivered through msk-gate
//! with MSK IAM, and Ctrl-C (SIGINT) stops it; `status --json` reports what a queue holds.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `curl -s` with `args`: what it printed.
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .arg("-s")
        .args(args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dev_delivers_a_posted_message_and_stops_on_ctrl_c() {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["dev", "--port", &port.to_string(), "--workers", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spillway dev");
    let (lines, rx) = (child.stdout.take().expect("stdout"), mpsc::channel());
    let tx = rx.0;
    let rx = rx.1;
    std::thread::spawn(move || {
        for line in BufReader::new(lines).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let last = std::cell::RefCell::new(String::new());
    let wait_for = |what: &dyn Fn(&str) -> bool, timeout: Duration| -> Option<String> {
        let ends = Instant::now() + timeout;
        while let Some(left) = ends.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) if what(&line) => return Some(line),
                Ok(line) => *last.borrow_mut() = line,
                Err(_) => return None,
            }
        }
        None
    };
    let delivered = |n: usize, what: &str| {
        let line = wait_for(
            &|l| l.starts_with(&format!("accepted={n} ")) && l.contains(&format!("delivered={n} ")),
            Duration::from_secs(60),
        );
        assert!(line.is_some(), "{what}; last line: {}", last.borrow());
    };
    let ready = wait_for(
        &|l| l.starts_with("spillway dev: ready"),
        Duration::from_secs(240),
    );
    assert!(ready.is_some(), "spillway dev did not come up");
    // The demo message spillway dev posts itself arrives first.
    delivered(1, "the demo message was not delivered");

    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"payload": "Hello World"}"#,
        &format!("http://127.0.0.1:{port}/messages"),
    ]);
    assert_eq!(code, "202");
    delivered(2, "the message was not counted as delivered");

    // A REST Proxy v3 stream (chunked) with a caller's trace context, counted as REST Proxy
    // answers it, record by record.
    let topic = std::env::var("SPILLWAY_TOPIC").unwrap_or_else(|_| "spillway-events".into());
    let answer = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "--data-binary",
        r#"{"value":{"type":"STRING","data":"v3 one"}}{"value":{"type":"JSON","data":{"n":2}}}"#,
        &format!("http://127.0.0.1:{port}/v3/clusters/spillway/topics/{topic}/records"),
    ]);
    assert_eq!(answer.matches(r#""error_code":200"#).count(), 2, "{answer}");
    delivered(4, "the v3 records were not counted as delivered");

    // A value 3.5 times the queue's limit goes through S3 (the claim check) and is delivered.
    // (MSK Serverless takes records up to 8 MiB; the local broker refuses records over 1 MB.)
    let large = std::env::temp_dir().join(format!("spillway-dev-large-{port}"));
    std::fs::write(&large, vec![b'x'; 900_000]).expect("write the body");
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", large.display()),
        &format!("http://127.0.0.1:{port}/messages"),
    ]);
    let _ = std::fs::remove_file(&large);
    assert_eq!(code, "202");
    delivered(5, "the large message was not delivered");

    stop_with_ctrl_c(&mut child);
}

/// Sends SIGINT and waits (30 s at most) for a clean exit.
fn stop_with_ctrl_c(child: &mut std::process::Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let ends = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            assert!(
                exit.success(),
                "spillway dev exits cleanly on Ctrl-C: {exit}"
            );
            break;
        }
        assert!(Instant::now() < ends, "spillway dev did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    }
}
