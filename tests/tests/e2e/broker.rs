//! Real MQTT brokers for the tests: rumqttd in this process (one for the whole run;
//! each test has its own topic prefix), or a Mosquitto process per test on a free port.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Set to `1` in CI: tests that need Mosquitto must run, never be skipped.
pub const REQUIRE_EXTERNAL: &str = "CRIER_REQUIRE_EXTERNAL";

pub struct Broker {
    pub url: String,
    mosquitto: Option<Child>,
    _config_dir: Option<TempDir>,
}

impl Broker {
    pub fn embedded() -> Broker {
        static ADDRESS: OnceLock<SocketAddr> = OnceLock::new();
        let address = ADDRESS.get_or_init(|| {
            crier::embedded_broker::start("127.0.0.1:0").expect("embedded broker starts")
        });
        Broker {
            url: format!("mqtt://{address}"),
            mosquitto: None,
            _config_dir: None,
        }
    }

    /// Mosquitto on a free port, or `None` when it is not installed and not required.
    pub fn mosquitto() -> Option<Broker> {
        let Some(binary) = find_mosquitto() else {
            assert!(
                std::env::var(REQUIRE_EXTERNAL).as_deref() != Ok("1"),
                "mosquitto is required ({REQUIRE_EXTERNAL}=1) but not installed"
            );
            eprintln!("skipping: mosquitto is not installed");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 log_dest file {}\n",
                dir.path().join("mosquitto.log").display()
            ),
        )
        .expect("write mosquitto.conf");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_until_accepting(address, Duration::from_secs(10));
        Some(Broker {
            url: format!("mqtt://{address}"),
            mosquitto: Some(child),
            _config_dir: Some(dir),
        })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.mosquitto {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Debian installs the broker in `/usr/sbin`, which is not on every user's `PATH`.
fn find_mosquitto() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("mosquitto"))
        .find(|candidate| candidate.is_file())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

pub fn wait_until_accepting(address: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing accepted connections on {address} within {timeout:?}");
}
