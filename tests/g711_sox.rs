//! G.711 against sox, the reference the team measured as exact to the
//! G.711 tables: every one of the 65536 inputs, in both laws. The README's
//! test command installs sox.

use backstop_core::media::g711::Law;

#[test]
fn encoder_matches_sox_for_every_input() {
    let dir = std::env::temp_dir().join(format!("backstop-g711-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input: Vec<u8> = (i16::MIN..=i16::MAX).flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("all.s16"), &input).unwrap();
    for (enc, law) in [("u-law", Law::Pcmu), ("a-law", Law::Pcma)] {
        let out = dir.join(format!("all.{enc}"));
        let status = std::process::Command::new("sox")
            .args(["-D", "-V1", "-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "1"])
            .arg(dir.join("all.s16"))
            .args(["-t", "raw", "-e", enc])
            .arg(&out)
            .status()
            .expect("sox is needed for this test (apt-get install sox)");
        assert!(status.success());
        let expected = std::fs::read(&out).unwrap();
        assert_eq!(expected.len(), 65536);
        let mismatches: Vec<i16> =
            (i16::MIN..=i16::MAX).filter(|v| law.encode(*v) != expected[(*v as i32 + 32768) as usize]).collect();
        assert!(
            mismatches.is_empty(),
            "{enc}: {} mismatches, first {:?}",
            mismatches.len(),
            &mismatches[..mismatches.len().min(5)]
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
