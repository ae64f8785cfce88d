//! Debian's PostgreSQL 15 (`/usr/lib/postgresql/15/bin`) for the cluster
//! store's tests: one server per test binary, started on first use in a fresh
//! temporary data directory, listening on 127.0.0.1 only (a free TCP port,
//! its unix socket inside the temporary directory), run as the `postgres` OS
//! user (initdb and postgres refuse root). Each test takes a database of its
//! own ([`Postgres::fresh_database`]) reached as the role `backstop` with a
//! password (scram-sha-256), as a deployment would. [`Postgres::stop`] and
//! [`Postgres::start`] take it away and bring it back on the same data
//! directory and port, for the database-outage test.
//!
//! No server outlives the test binary: the postmaster is spawned from a
//! thread of its own that lives exactly as long as it does (it waits on it),
//! with `PR_SET_PDEATHSIG` = SIGKILL set in `pre_exec`, which std runs after
//! the switch to the `postgres` user (a credential change clears the
//! setting, so the order matters); its backends exit when it does. At a
//! normal exit an `atexit` hook stops it (fast shutdown) and removes the
//! directory (kept with `BACKSTOP_KEEP_PG` set: its log notes lock waits
//! and slow statements). Every wait is bounded.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The role the agents log in as, and its password.
pub const ROLE: &str = "backstop";
pub const PASSWORD: &str = "store-secret-0123456789";

static SHARED: OnceLock<Postgres> = OnceLock::new();

pub struct Postgres {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// The temporary directory: `data` (the cluster), `sock` (the unix socket), `postgres.log`.
    pub dir: PathBuf,
    uid: u32,
    gid: u32,
    /// The running postmaster: its pid, and where its thread reports its exit.
    running: Mutex<Option<(u32, mpsc::Receiver<std::io::Result<ExitStatus>>)>>,
}

impl Postgres {
    /// The test binary's server, started on first use.
    pub fn shared() -> &'static Postgres {
        SHARED.get_or_init(Postgres::init)
    }

    fn init() -> Postgres {
        assert!(
            Path::new(BIN).join("postgres").exists(),
            "PostgreSQL 15 must be installed (scripts/test.sh installs postgresql)"
        );
        let (uid, gid) = postgres_user();
        let dir = std::env::temp_dir().join(format!("backstop-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sock")).unwrap();
        for d in [dir.clone(), dir.join("sock")] {
            std::os::unix::fs::chown(&d, Some(uid), Some(gid)).unwrap();
        }
        let pg = Postgres { port: pg_port(), dir, uid, gid, running: Mutex::new(None) };
        let out = pg
            .as_postgres(&format!("{BIN}/initdb"))
            .arg("-D")
            .arg(pg.dir.join("data"))
            .args(["-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256"])
            .args(["-E", "UTF8", "--locale=C", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed:\n{}", text(&out));
        unsafe {
            libc::atexit(stop_at_exit);
        }
        pg.start();
        pg.psql("postgres", &format!("CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{PASSWORD}'"));
        pg
    }

    /// A command run as the `postgres` OS user, in the temporary directory.
    fn as_postgres(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.uid(self.uid)
            .gid(self.gid)
            .current_dir(&self.dir)
            .env("LC_ALL", "C")
            .env_remove("PGPASSWORD")
            .stdin(Stdio::null());
        cmd
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// A new, empty database owned by `backstop`; its URL (with the password).
    pub fn fresh_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\" OWNER {ROLE}"));
        format!("postgres://{ROLE}:{PASSWORD}@127.0.0.1:{}/{name}", self.port)
    }

    /// Run `sql` in database `db` as the superuser over the unix socket;
    /// its output unaligned, tuples only (`psql -At`). Panics on an error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.try_psql(db, sql);
        assert!(out.status.success(), "psql {db}: {sql}\n{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// As [`Postgres::psql`], the output as it is (the server may be down).
    pub fn try_psql(&self, db: &str, sql: &str) -> Output {
        Command::new("timeout")
            .arg("20")
            .arg(format!("{BIN}/psql"))
            .arg("-h")
            .arg(self.dir.join("sock"))
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .output()
            .expect("run psql")
    }

    /// Start the server on its data directory and port; returns once it
    /// accepts connections (30 s at most).
    pub fn start(&self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        assert!(running.is_none(), "PostgreSQL is already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("postgres.log")).unwrap();
        std::os::unix::fs::chown(self.dir.join("postgres.log"), Some(self.uid), Some(self.gid)).unwrap();
        let mut cmd = self.as_postgres(&format!("{BIN}/postgres"));
        cmd.arg("-D").arg(self.dir.join("data")).args(["-p", &self.port.to_string()]);
        for (k, v) in [
            ("listen_addresses", "127.0.0.1".to_string()),
            ("unix_socket_directories", self.dir.join("sock").display().to_string()),
            ("max_connections", "250".into()),
            ("shared_buffers", "32MB".into()),
            ("fsync", "off".into()),
            ("synchronous_commit", "off".into()),
            ("full_page_writes", "off".into()),
            ("password_encryption", "scram-sha-256".into()),
            ("log_min_messages", "warning".into()),
            // Diagnostics: lock waits past deadlock_timeout and slow statements.
            ("log_lock_waits", "on".into()),
            ("deadlock_timeout", "300ms".into()),
            ("log_min_duration_statement", "500".into()),
            ("log_line_prefix", "%m [%p] %d %a ".into()),
        ] {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.stdout(log.try_clone().unwrap()).stderr(log);
        // After std's setgid/setuid (a credential change clears the setting).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (pid_tx, pid_rx) = mpsc::channel();
        let (exit_tx, exit_rx) = mpsc::channel();
        // The postmaster's parent is this thread, which lives until it exits:
        // PR_SET_PDEATHSIG fires when the forking thread ends, not the process.
        std::thread::Builder::new()
            .name("postmaster".into())
            .spawn(move || match cmd.spawn() {
                Err(e) => {
                    let _ = pid_tx.send(Err(e));
                }
                Ok(mut child) => {
                    let _ = pid_tx.send(Ok(child.id()));
                    let _ = exit_tx.send(child.wait());
                }
            })
            .unwrap();
        let pid = pid_rx.recv().unwrap().expect("start postgres");
        *running = Some((pid, exit_rx));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((_, rx)) = running.as_ref()
                && let Ok(status) = rx.try_recv()
            {
                *running = None;
                panic!("postgres exited at start ({status:?}):\n{}", self.log());
            }
            let ready = Command::new(format!("{BIN}/pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", "2", "-q"])
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "postgres did not accept connections in 30 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fast shutdown (SIGINT: sessions cut, a checkpoint); returns once the
    /// postmaster has exited and its port is closed (30 s at most, then SIGKILL).
    pub fn stop(&self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let Some((pid, exited)) = running.take() else { return };
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGINT);
        }
        if exited.recv_timeout(Duration::from_secs(30)).is_err() {
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            let _ = exited.recv_timeout(Duration::from_secs(10));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() {
            assert!(Instant::now() < deadline, "port {} still open after postgres stopped", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&self) -> bool {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// The server's log (every run).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }
}

/// At the test binary's exit: stop the server (bounded) and remove its
/// directory, unless `BACKSTOP_KEEP_PG` is set (then its log, with lock
/// waits and slow statements, stays for a look).
extern "C" fn stop_at_exit() {
    if let Some(pg) = SHARED.get() {
        pg.stop();
        if std::env::var_os("BACKSTOP_KEEP_PG").is_some() {
            eprintln!("postgres kept (BACKSTOP_KEEP_PG): {}/postgres.log", pg.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&pg.dir);
        }
    }
    let _ = std::io::stderr().flush();
}

/// The `postgres` OS user's uid and gid.
fn postgres_user() -> (u32, u32) {
    let name = std::ffi::CString::new("postgres").unwrap();
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "no postgres OS user (the postgresql package creates it)");
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// A free TCP port below the kernel's ephemeral range (32768 up), so that no
/// client socket of an agent takes it while the server is stopped, and
/// outside the range the other helpers hand out.
fn pg_port() -> u16 {
    let base = 15432 + (std::process::id() % 4000) as u16;
    (0..4000u16)
        .map(|i| 15432 + (base - 15432 + i * 7) % 4000)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port for postgres")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
