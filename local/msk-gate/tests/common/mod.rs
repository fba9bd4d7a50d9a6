//! An msk-gate of a test's own, in front of the shared local broker, with its own quotas, chaos
//! switches and counters (no other test's traffic in them).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use spillway_core::config::KafkaConfig;

/// An msk-gate of the test's own, killed when dropped.
pub(crate) struct PrivateGate {
    child: Child,
    bootstrap: String,
    admin: String,
    ca_file: String,
}

impl PrivateGate {
    pub(crate) fn start(extra: &[&str]) -> Self {
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("port")
        };
        let (listen, admin) = (
            format!("127.0.0.1:{}", port()),
            format!("127.0.0.1:{}", port()),
        );
        let ca_file =
            std::env::temp_dir().join(format!("{}.pem", spillway_tests::unique_name("gate-ca")));
        let broker = spillway_tests::kafka_bootstrap();
        spillway_tests::require("Kafka (Tansu)", &broker);
        let child = Command::new(env!("CARGO_BIN_EXE_msk-gate"))
            .args(["--listen", &listen, "--admin", &admin, "--broker", &broker])
            .args([
                "--ca-file",
                &ca_file.to_string_lossy(),
                "--access-key",
                "test",
                "--secret-key",
                "test",
                "--region",
                "us-east-1",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start msk-gate");
        let gate = Self {
            child,
            bootstrap: listen,
            admin: format!("http://{admin}"),
            ca_file: ca_file.to_string_lossy().into_owned(),
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(&gate.bootstrap).is_ok()
                && std::path::Path::new(&gate.ca_file).exists()
            {
                return gate;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the private gate did not start");
    }

    pub(crate) fn kafka(&self) -> KafkaConfig {
        KafkaConfig::iam(self.bootstrap.clone())
            .with_ca_file(self.ca_file.clone())
            .with_message_max_bytes(spillway_tests::LOCAL_MESSAGE_MAX_BYTES)
            .with_max_connects_per_sec(100)
    }

    pub(crate) fn admin(&self, method: &str, path: &str) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-sf", "-X", method, &format!("{}{path}", self.admin)])
            .output()
            .expect("curl");
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    pub(crate) fn stat(&self, name: &str) -> u64 {
        self.admin("GET", "/stats")[name].as_u64().expect("counter")
    }
}

impl Drop for PrivateGate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.ca_file);
    }
}
