//! Kamailio (Debian's `kamailio`) as a child process on a loopback UDP port,
//! with a config the test gives: started in the foreground (`-DD -E`), ready
//! once it answers OPTIONS with 200, restartable, stopped on drop.

use super::{free_port, options_request};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Kamailio {
    child: Child,
    /// Its UDP port on 127.0.0.1.
    pub port: u16,
    /// Where its config, run directories (`run{N}`) and logs (`kamailio{N}.log`) are.
    pub dir: PathBuf,
    /// How many times it has been started.
    runs: u32,
}

impl Kamailio {
    /// Kamailio in `dir` with the config `cfg`, its `@PORT@` replaced by a
    /// free port (any other placeholder is the caller's to fill in). Returns
    /// once it answers OPTIONS.
    pub fn start(dir: &Path, cfg: &str) -> Kamailio {
        let port = free_port();
        std::fs::write(dir.join("kamailio.cfg"), cfg.replace("@PORT@", &port.to_string())).unwrap();
        let child = Self::spawn(dir, 0);
        let k = Kamailio { child, port, dir: dir.to_path_buf(), runs: 1 };
        k.wait_ready();
        k
    }

    fn spawn(dir: &Path, run: u32) -> Child {
        let rundir = dir.join(format!("run{run}"));
        std::fs::create_dir_all(&rundir).unwrap();
        let log = std::fs::File::create(dir.join(format!("kamailio{run}.log"))).unwrap();
        let bin = if Path::new("/usr/sbin/kamailio").exists() { "/usr/sbin/kamailio" } else { "kamailio" };
        Command::new(bin)
            .args(["-DD", "-E", "-f"])
            .arg(dir.join("kamailio.cfg"))
            .arg("-Y")
            .arg(&rundir)
            .arg("-w")
            .arg(&rundir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("kamailio must be installed (scripts/test.sh installs it)")
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// Polls with OPTIONS until a 200 comes back (15 s at most).
    fn wait_ready(&self) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            let msg = options_request(sock.local_addr().unwrap(), "kamailio-ready")
                .replace("backstop@127.0.0.1", &format!("127.0.0.1:{}", self.port));
            let _ = sock.send_to(msg.as_bytes(), self.addr());
            if let Ok((n, _)) = sock.recv_from(&mut buf)
                && buf[..n].starts_with(b"SIP/2.0 200")
            {
                return;
            }
        }
        panic!("kamailio did not come up:\n{}", self.log());
    }

    /// The log of the current run.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("kamailio{}.log", self.runs - 1))).unwrap_or_default()
    }

    /// Stop Kamailio and the workers it forked: SIGTERM to the main process,
    /// which takes its children down with it (SIGKILL would orphan them).
    pub fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stop it and start it again on the same port, with a fresh state and log.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(&self.dir, self.runs);
        self.runs += 1;
        self.wait_ready();
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The text-file database (`db_text`) of Kamailio's auth: `DIR/db` with the
/// `subscriber` table holding `users` (name, password) at 127.0.0.1; the
/// configs read it from `@DBDIR@`.
pub fn write_subscribers(dir: &Path, users: &[(&str, &str)]) -> std::path::PathBuf {
    let db = dir.join("db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(
        db.join("version"),
        "id(int,auto) table_name(string) table_version(int) \n0:version:1\n1:subscriber:7\n",
    )
    .unwrap();
    let mut table =
        String::from("id(int,auto) username(string) domain(string) password(string) ha1(string) ha1b(string) \n");
    for (i, (user, password)) in users.iter().enumerate() {
        table.push_str(&format!("{}:{user}:127.0.0.1:{password}:null:null\n", i + 1));
    }
    std::fs::write(db.join("subscriber"), table).unwrap();
    db
}
