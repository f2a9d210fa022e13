//! Real MQTT brokers for the tests: rumqttd in this process (one for the whole run;
//! each test has its own topic prefix), or a broker process of the test's own —
//! rumqttd (`e2e-broker`) or Mosquitto — on a free port, which a test can kill and
//! start again on the same port.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Set to `1` in CI: tests that need Mosquitto must run, never be skipped.
pub const REQUIRE_EXTERNAL: &str = "CRIER_REQUIRE_EXTERNAL";

const BROKER_PROCESS: &str = env!("CARGO_BIN_EXE_e2e-broker");
const START_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Broker {
    pub url: String,
    process: Option<BrokerProcess>,
    /// Password file of a broker with users, kept while it runs.
    _access_dir: Option<TempDir>,
}

/// Mosquitto's access settings when users do not matter.
const ANONYMOUS: &str = "allow_anonymous true\n";

/// A broker running as a child process, with what it takes to start it again.
struct BrokerProcess {
    command: Vec<String>,
    address: SocketAddr,
    child: Option<Child>,
    _config_dir: TempDir,
}

impl Broker {
    /// The shared in-process rumqttd (cannot be stopped).
    pub fn embedded() -> Broker {
        static ADDRESS: OnceLock<SocketAddr> = OnceLock::new();
        let address = ADDRESS.get_or_init(|| {
            crier::embedded_broker::start("127.0.0.1:0").expect("embedded broker starts")
        });
        Broker {
            url: format!("mqtt://{address}"),
            process: None,
            _access_dir: None,
        }
    }

    /// Another address of a broker the test runs (a relay in front of it).
    pub fn alias(url: String) -> Broker {
        Broker {
            url,
            process: None,
            _access_dir: None,
        }
    }

    /// rumqttd in a process of its own on a free port.
    pub fn embedded_process() -> Broker {
        let address: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let dir = tempfile::tempdir().expect("temp dir");
        let command = vec![BROKER_PROCESS.to_string(), address.to_string()];
        Broker::spawn(command, address, dir)
    }

    /// Mosquitto on a free port, or `None` when it is not installed and not required.
    pub fn mosquitto() -> Option<Broker> {
        Broker::mosquitto_with("mqtt", "", ANONYMOUS)
    }

    /// Mosquitto with the ACL Crier ships (`mq-config/crier.acl`) and a password
    /// file of these users; the URL signs in as the first.
    pub fn mosquitto_with_users(users: &[(&str, &str)]) -> Option<Broker> {
        let passwd = required_sbin("mosquitto_passwd")?;
        let dir = tempfile::tempdir().expect("temp dir");
        let passwords = dir.path().join("crier.passwd");
        for (user, password) in users {
            let added = Command::new(&passwd)
                .arg("-b")
                .args(std::iter::once("-c").filter(|_| !passwords.exists()))
                .arg(&passwords)
                .args([user, password])
                .status()
                .expect("run mosquitto_passwd");
            assert!(added.success(), "mosquitto_passwd adds {user}");
        }
        let acl = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mq-config/crier.acl");
        let access = format!(
            "allow_anonymous false\npassword_file {}\nacl_file {}\n",
            passwords.display(),
            acl.display()
        );
        let mut broker = Broker::mosquitto_with("mqtt", "", &access)?;
        let (user, password) = users.first().expect("a user");
        broker.url = broker
            .url
            .replace("mqtt://", &format!("mqtt://{user}:{password}@"));
        broker._access_dir = Some(dir);
        Some(broker)
    }

    /// Mosquitto with a TLS listener (`mqtts://`) using these PEM files.
    pub fn mosquitto_tls(ca: &Path, cert: &Path, key: &Path) -> Option<Broker> {
        let tls = format!(
            "cafile {}\ncertfile {}\nkeyfile {}\n",
            ca.display(),
            cert.display(),
            key.display()
        );
        Broker::mosquitto_with("mqtts", &tls, ANONYMOUS)
    }

    fn mosquitto_with(scheme: &str, listener_options: &str, access: &str) -> Option<Broker> {
        let binary = required_sbin("mosquitto")?;
        let dir = tempfile::tempdir().expect("temp dir");
        let address: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "user root\nlistener {} 127.0.0.1\n{listener_options}{access}\
                 persistence false\nlog_dest file {}\n",
                address.port(),
                dir.path().join("mosquitto.log").display()
            ),
        )
        .expect("write mosquitto.conf");
        let command = vec![
            binary.display().to_string(),
            "-c".into(),
            config.display().to_string(),
        ];
        let mut broker = Broker::spawn(command, address, dir);
        broker.url = format!("{scheme}://{address}");
        Some(broker)
    }

    fn spawn(command: Vec<String>, address: SocketAddr, dir: TempDir) -> Broker {
        let mut process = BrokerProcess {
            command,
            address,
            child: None,
            _config_dir: dir,
        };
        process.start();
        Broker {
            url: format!("mqtt://{address}"),
            process: Some(process),
            _access_dir: None,
        }
    }

    /// `kill -9` the broker process.
    pub fn kill(&mut self) {
        self.own_process().stop();
    }

    /// Starts the broker again on the same port, with nothing of its old state.
    pub fn restart(&mut self) {
        self.own_process().start();
    }

    /// Freezes the broker (`SIGSTOP`): connections stay open but nothing moves.
    pub fn pause(&mut self) {
        self.own_process().signal("-STOP");
    }

    /// Lets a paused broker run again (`SIGCONT`).
    pub fn resume(&mut self) {
        self.own_process().signal("-CONT");
    }

    fn own_process(&mut self) -> &mut BrokerProcess {
        self.process
            .as_mut()
            .expect("only a broker process of the test's own can be stopped")
    }
}

impl BrokerProcess {
    fn start(&mut self) {
        let (program, args) = self.command.split_first().expect("a command");
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        self.child = Some(child);
        wait_until_accepting(self.address, START_TIMEOUT);
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the broker is running");
        let sent = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {signal} reached the broker");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An outside program the tests drive (Mosquitto's, curl), or `None` when it is
/// not installed and not required.
pub fn required_sbin(name: &str) -> Option<PathBuf> {
    let found = find_sbin(name);
    if found.is_none() {
        assert!(
            std::env::var(REQUIRE_EXTERNAL).as_deref() != Ok("1"),
            "{name} is required ({REQUIRE_EXTERNAL}=1) but not installed"
        );
        eprintln!("skipping: {name} is not installed");
    }
    found
}

/// Debian installs the broker (and nginx) in `/usr/sbin`, which is not on every
/// user's `PATH`.
pub fn find_sbin(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
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
