//! Real `redis-server` processes for tests: one per test, on a free loopback port, stopped
//! when dropped. Either plain, or TLS-only with `requirepass`, the way Azure Cache for Redis
//! serves port 6380, or that as a one-node cluster holding all 16384 slots, where a command
//! or script whose keys are in two hash slots fails with `CROSSSLOT` (as behind Azure Managed
//! Redis's Enterprise policy, or any sharded Redis).
//!
//! TLS trust works as under Spin: the client (native-tls, i.e. OpenSSL) trusts what
//! `SSL_CERT_FILE` names. `.cargo/config.toml` points that at `target/test-tls/ca.pem`; the
//! first test that needs TLS generates that CA and a server certificate for `127.0.0.1` and
//! `localhost` beside it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TestAppBuilder;

/// Paths of the test CA and the server certificate it signed.
struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn tls_files() -> TlsFiles {
    let ca = PathBuf::from(std::env::var("SSL_CERT_FILE").expect(
        "SSL_CERT_FILE is not set: run the tests through cargo, which sets it from .cargo/config.toml",
    ));
    let dir = ca.parent().expect("SSL_CERT_FILE has a directory").to_path_buf();
    // Never write into a system certificate directory that SSL_CERT_FILE might name.
    assert!(
        dir.ends_with("test-tls"),
        "SSL_CERT_FILE={} is not the test CA; .cargo/config.toml sets it for cargo test",
        ca.display()
    );
    let files = TlsFiles { ca, cert: dir.join("server.pem"), key: dir.join("server.key") };
    if !files.ca.exists() || !files.cert.exists() || !files.key.exists() {
        generate_tls_files(&dir, &files);
    }
    files
}

/// Writes a CA and a server certificate into `dir`. Several test processes may race here:
/// each writes into its own temporary directory and renames it into place; losers use the
/// winner's files.
fn generate_tls_files(dir: &Path, files: &TlsFiles) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        SanType,
    };

    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "spin-redis-patterns test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let server_cert = params.signed_by(&server_key, &issuer).unwrap();

    let parent = dir.parent().expect("TLS directory has a parent");
    std::fs::create_dir_all(parent).unwrap();
    let tmp = tempfile::Builder::new().prefix(".test-tls-").tempdir_in(parent).unwrap();
    std::fs::write(tmp.path().join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(tmp.path().join("server.pem"), server_cert.pem()).unwrap();
    std::fs::write(tmp.path().join("server.key"), server_key.serialize_pem()).unwrap();
    let tmp = tmp.keep();
    if std::fs::rename(&tmp, dir).is_err() {
        // Another process won the race (or an older, incomplete directory is in the way).
        let _ = std::fs::remove_dir_all(&tmp);
        if !(files.ca.exists() && files.cert.exists() && files.key.exists()) {
            panic!("{} exists but is incomplete: delete it and rerun", dir.display());
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    password: Option<String>,
    tls: bool,
    /// Cluster mode, with its bus on this port.
    cluster_port: Option<u16>,
    /// Append-only file, fsynced on every write: a restart keeps every acknowledged write.
    persistent: bool,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// A plain server without a password.
    pub fn plain() -> Self {
        Self::start_new(false, None)
    }

    /// A TLS-only server requiring `password`, like Azure Cache for Redis on 6380.
    pub fn tls(password: &str) -> Self {
        Self::start_new(true, Some(password.to_owned()))
    }

    /// A TLS-only server requiring `password`, in cluster mode: one node with every slot. A
    /// client that does not speak the cluster protocol (Spin's) works as against one server,
    /// except that a command or script touching keys of two hash slots fails (`CROSSSLOT`).
    pub fn cluster_tls(password: &str) -> Self {
        Self::start_with(true, Some(password.to_owned()), Some(free_port()))
    }

    /// A plain server that persists every write before answering it (AOF with
    /// `appendfsync always`): [`Self::stop`] (SIGKILL) then [`Self::start`] loses nothing
    /// it acknowledged.
    pub fn persistent() -> Self {
        let mut server = Self::unstarted(false, None, None);
        server.persistent = true;
        server.start();
        server
    }

    fn unstarted(tls: bool, password: Option<String>, cluster_port: Option<u16>) -> Self {
        let dir = tempfile::Builder::new().prefix("srp-redis-").tempdir().unwrap();
        Self { child: None, port: free_port(), password, tls, cluster_port, persistent: false, dir }
    }

    fn start_new(tls: bool, password: Option<String>) -> Self {
        Self::start_with(tls, password, None)
    }

    fn start_with(tls: bool, password: Option<String>, cluster_port: Option<u16>) -> Self {
        let mut server = Self::unstarted(tls, password, cluster_port);
        server.start();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster_port.is_some()
    }

    /// Points an app at this server through its Spin variables, and defines the key-value
    /// stores `redis` and `redis_standby` (the fast path's) on it too, as the runtime config would.
    pub fn configure(&self, builder: TestAppBuilder) -> TestAppBuilder {
        // As the repo's runtime-config.toml: the pooled store and its standby on this Redis,
        // and the fast path's in-memory breaker beside them.
        builder
            .key_value_store("redis", self.url())
            .key_value_store("redis_standby", self.url())
            .in_memory_key_value_store("breaker")
            .variable("redis_host", "127.0.0.1")
            .variable("redis_port", self.port.to_string())
            .variable("redis_tls", self.tls.to_string())
            .variable("redis_access_key", self.password.clone().unwrap_or_default())
    }

    /// A URL for the test's own client (percent-encoded password).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = match &self.password {
            Some(p) => format!(
                ":{}@",
                url::form_urlencoded::byte_serialize(p.as_bytes()).collect::<String>()
            ),
            None => String::new(),
        };
        format!("{scheme}://{auth}127.0.0.1:{}", self.port)
    }

    /// A connection for the test itself, to read back what the components wrote.
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("test client connects to redis")
    }

    /// Starts (or restarts) the server on its port.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = self.dir.path().join("redis.log");
        let _ = std::fs::remove_file(&log);
        let mut cmd = Command::new("redis-server");
        let aof: &[&str] = if self.persistent {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        cmd.args(["--bind", "127.0.0.1", "--save", ""])
            .args(aof)
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.tls {
            let files = tls_files();
            cmd.args([
                "--port",
                "0",
                "--tls-port",
                &self.port.to_string(),
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(&files.cert)
            .arg("--tls-key-file")
            .arg(&files.key)
            .arg("--tls-ca-cert-file")
            .arg(&files.ca);
        } else {
            cmd.args(["--port", &self.port.to_string()]);
        }
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        if let Some(bus) = self.cluster_port {
            // The bus port is explicit: the default (port + 10000) may be taken or past 65535.
            cmd.args(["--cluster-enabled", "yes", "--cluster-port", &bus.to_string()])
                .arg("--cluster-config-file")
                .arg(self.dir.path().join("nodes.conf"));
        }
        let child = cmd.spawn().expect("redis-server is installed (apt-get install redis-server)");
        self.child = Some(child);

        // Milliseconds when idle; generous for a machine busy with other work.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Ready to accept connections") {
                break;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("redis-server exited ({status}) on port {}:\n{text}", self.port);
            }
            assert!(Instant::now() < deadline, "redis-server did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.is_cluster() {
            self.serve_every_slot();
        }
    }

    /// Gives this node all 16384 slots (once: a restart keeps them in nodes.conf) and waits
    /// until the cluster says it is ok.
    fn serve_every_slot(&self) {
        let mut conn = redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(10))
            .expect("test client connects to the cluster node");
        let info = |conn: &mut redis::Connection| -> String {
            redis::cmd("CLUSTER").arg("INFO").query(conn).expect("CLUSTER INFO")
        };
        if info(&mut conn).contains("cluster_slots_assigned:0\r") {
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(0)
                .arg(16383)
                .query(&mut conn)
                .expect("CLUSTER ADDSLOTSRANGE 0 16383");
        }
        // Generous: a busy machine must not fail this; it takes milliseconds when idle.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = info(&mut conn);
            if text.contains("cluster_state:ok") {
                return;
            }
            assert!(Instant::now() < deadline, "cluster never became ok:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freezes the server (SIGSTOP): it keeps its socket, the kernel still accepts
    /// connections, and nothing answers. What a failover that drops packets, or an overloaded
    /// server, looks like to a client.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server answer again (SIGCONT), with its data.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} redis-server");
    }

    /// Stops the server, for "Redis is down" tests.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
