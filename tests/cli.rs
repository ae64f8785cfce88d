//! The command line: `backstop check` on good and bad configs.

mod common;

use std::process::Command;

fn check(config: &str) -> (bool, String) {
    let dir = common::scratch_dir("cli");
    let path = dir.join("c.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .current_dir(common::manifest_dir())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(&dir).ok();
    (out.status.success(), text)
}

#[test]
fn shipped_config_checks_clean() {
    let out = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .current_dir(common::manifest_dir())
        .args(["check", "--config", "config/backstop.toml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("greeting"));
}

#[test]
fn bad_value_names_the_key_and_line_and_fails() {
    let (ok, text) = check("[sip]\n# comment\nlisten = \"not-an-address\"\n");
    assert!(!ok);
    assert!(text.contains(":3: sip.listen:"), "{text}");
    let (ok, text) = check("[rtp]\nport_min = \"twenty\"\n");
    assert!(!ok);
    assert!(text.contains(":2: rtp.port_min:"), "{text}");
}

#[test]
fn missing_prompt_fails_the_check() {
    let (ok, text) = check("[prompts]\ngreeting = \"nope.wav\"\n");
    assert!(!ok);
    assert!(text.contains("prompts.greeting") && text.contains("nope.wav"), "{text}");
}
