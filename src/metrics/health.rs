//! Readiness: what `/readyz` checks besides the outbox (whose last
//! background check is read, `scrape::Sources::outbox_problem`): the SIP sockets are bound,
//! every `[[register]]` account is registered (or none is configured), and
//! the agent is not draining. Each unmet condition is one reason, one line
//! in the 503's body, so an operator reads at once what is wrong.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// The readiness conditions the runtime reports as they change.
#[derive(Default, Debug)]
pub struct Health {
    sip: Mutex<Option<SocketAddr>>,
    draining: AtomicBool,
    /// Each configured account, and whether it is registered now.
    accounts: Mutex<BTreeMap<String, bool>>,
}

/// The answer of a readiness check: ready when there is nothing wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub problems: Vec<String>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.problems.is_empty()
    }

    /// The body `/readyz` answers: `ok`, or one reason a line.
    pub fn body(&self) -> String {
        if self.is_ready() { "ok\n".into() } else { self.problems.iter().map(|p| format!("{p}\n")).collect() }
    }

    /// The body for an open face: `ok`, or each kind of reason once
    /// (`sip`, `register`, `outbox`, `draining`), without account names or
    /// SQLite's errors.
    pub fn brief_body(&self) -> String {
        if self.is_ready() {
            return "ok\n".into();
        }
        let mut kinds: Vec<&str> = self.problems.iter().map(|p| p.split(':').next().unwrap_or(p)).collect();
        kinds.dedup();
        kinds.iter().map(|k| format!("{k}: not ready\n")).collect()
    }
}

impl Health {
    /// The agent's SIP sockets are bound on this address.
    pub fn set_sip_bound(&self, addr: SocketAddr) {
        *self.sip.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
    }

    /// Shutdown has begun: readiness fails from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// An account that must be registered before the agent is ready.
    pub(super) fn account_configured(&self, account: &str) {
        self.accounts.lock().unwrap_or_else(|p| p.into_inner()).entry(account.to_string()).or_insert(false);
    }

    pub(super) fn set_registered(&self, account: &str, up: bool) {
        self.accounts.lock().unwrap_or_else(|p| p.into_inner()).insert(account.to_string(), up);
    }

    /// What is not ready, apart from the outbox; empty when all is well.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.sip.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
            problems.push("sip: the SIP sockets are not bound yet".to_string());
        }
        for (account, up) in self.accounts.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if !up {
                problems.push(format!("register: account {account} is not registered"));
            }
        }
        if self.is_draining() {
            problems.push("draining: shutting down, new calls are refused".to_string());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_bound_with_every_account_registered_until_draining() {
        let h = Health::default();
        assert_eq!(h.problems(), ["sip: the SIP sockets are not bound yet"]);
        h.set_sip_bound("127.0.0.1:5060".parse().unwrap());
        assert!(h.problems().is_empty(), "no accounts configured: ready once bound");
        h.account_configured("100@pbx.example");
        h.account_configured("200@pbx.example");
        assert_eq!(
            h.problems(),
            [
                "register: account 100@pbx.example is not registered",
                "register: account 200@pbx.example is not registered"
            ]
        );
        h.set_registered("100@pbx.example", true);
        assert_eq!(h.problems(), ["register: account 200@pbx.example is not registered"]);
        h.set_registered("200@pbx.example", true);
        assert!(h.problems().is_empty());
        // Configured again (a restart of its task) does not forget it is registered.
        h.account_configured("200@pbx.example");
        assert!(h.problems().is_empty());
        h.set_registered("100@pbx.example", false);
        assert_eq!(h.problems().len(), 1, "a failed refresh makes it unready");
        h.set_registered("100@pbx.example", true);
        h.set_draining();
        assert_eq!(h.problems(), ["draining: shutting down, new calls are refused"]);
    }

    #[test]
    fn the_body_is_ok_or_one_reason_a_line() {
        assert_eq!(Readiness { problems: vec![] }.body(), "ok\n");
        let r = Readiness { problems: vec!["a".into(), "b".into()] };
        assert!(!r.is_ready());
        assert_eq!(r.body(), "a\nb\n");
        let r = Readiness {
            problems: vec![
                "register: account 100@pbx.example is not registered".into(),
                "register: account 200@pbx.example is not registered".into(),
                "outbox: not writable: database is locked".into(),
            ],
        };
        assert_eq!(r.brief_body(), "register: not ready\noutbox: not ready\n");
        assert_eq!(Readiness { problems: vec![] }.brief_body(), "ok\n");
    }
}
