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
    let ready = wait_for(
        &|l| l.starts_with("spillway dev: ready"),
        Duration::from_secs(240),
    );
    assert!(ready.is_some(), "spillway dev did not come up");
    // The demo message spillway dev posts itself arrives first.
    let demo = wait_for(
        &|l| l.starts_with("accepted=1 ") && l.contains("delivered=1 "),
        Duration::from_secs(60),
    );
    assert!(
        demo.is_some(),
        "the demo message was not delivered; last line: {}",
        last.borrow()
    );

    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
        ])
        .args([
            "-d",
            r#"{"payload": "Hello World"}"#,
            &format!("http://127.0.0.1:{port}/messages"),
        ])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "202");
    let delivered = wait_for(
        &|l| l.starts_with("accepted=2 ") && l.contains("delivered=2 "),
        Duration::from_secs(60),
    );
    assert!(
        delivered.is_some(),
        "the message was not counted as delivered; last line: {}",
        last.borrow()
    );

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
