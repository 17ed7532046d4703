//! Cross-process ring stress: a writer process publishes records as fast as it can while reader
//! processes read them; every record a reader accepts must be exactly what was written (a
//! checksum over every byte), in order, and a reader that is lapped must say so rather than
//! return torn data. Then, through the journal, every reader ends with the complete sequence.

use feed_handler::journal::{JournalWriter, Start, Subscriber, journal_path};
use feed_handler::ring::{Read, Record, RingReader, RingWriter};
use std::path::PathBuf;
use std::process::Command;

const N: u64 = 500_000;

fn payload(seq: u64) -> [u8; 48] {
    let mut b = [0u8; 48];
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for c in b.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    b
}

fn check(r: &Record) {
    assert_eq!(
        r.data(),
        &payload(r.seq)[..],
        "torn or wrong record at {}",
        r.seq
    );
    assert_eq!(r.exch_ts_ns, r.seq * 3);
    assert_eq!(r.recv_ns, r.seq * 5);
    assert_eq!(r.channel, (r.seq % 7) as u16);
}

fn ring_path() -> PathBuf {
    std::env::temp_dir().join(format!(
        "ring-stress-{}",
        std::env::var("STRESS_ID").unwrap()
    ))
}

/// The child processes: `STRESS_ROLE=writer|reader` re-runs this test binary.
fn child() -> bool {
    match std::env::var("STRESS_ROLE").as_deref() {
        Ok("writer") => {
            let path = ring_path();
            let mut w = RingWriter::create(&path, 4096).unwrap();
            let mut j = JournalWriter::create(&journal_path(&path), w.generation()).unwrap();
            std::fs::write(path.with_extension("ready"), b"").unwrap();
            for seq in 1..=N {
                let rec = Record::message((seq % 7) as u16, seq, seq * 3, seq * 5, &payload(seq))
                    .unwrap();
                let p = w.publish(&rec);
                j.append(p, &rec).unwrap();
                if seq % 64 == 0 {
                    w.wake_readers();
                }
                if seq % 256 == 0 {
                    let n = j.flush().unwrap();
                    w.set_journal_end(n);
                }
            }
            let n = j.flush().unwrap();
            w.set_journal_end(n);
            w.wake_readers();
            true
        }
        Ok("reader") => {
            // Reads the raw ring: records it accepts must be intact; laps are reported.
            let mut r = RingReader::attach(ring_path()).unwrap();
            // one reader spins when it has caught up, the other sleeps on the doorbell
            let bell =
                (std::env::var("STRESS_BELL").as_deref() == Ok("1")).then(|| r.doorbell().unwrap());
            r.seek(0);
            let (mut ok, mut laps, mut slept) = (0u64, 0u64, 0u64);
            loop {
                match r.read() {
                    Read::Record(rec) => {
                        check(&rec);
                        assert_eq!(rec.position + 1, rec.seq);
                        ok += 1;
                        if rec.seq == N {
                            break;
                        }
                    }
                    Read::Empty => match &bell {
                        Some(b) => slept += b.wait(r.position(), 1_000_000_000) as u64,
                        None => std::hint::spin_loop(),
                    },
                    Read::Overrun { oldest, .. } => {
                        laps += 1;
                        r.seek(oldest + 64);
                    }
                }
            }
            // Then through the subscriber (ring + journal), from the start: nothing missing.
            let mut s = Subscriber::attach(&ring_path(), Start::Beginning).unwrap();
            let mut next = 1;
            while next <= N {
                match s.next_record().unwrap() {
                    Some(rec) => {
                        check(&rec);
                        assert_eq!(rec.seq, next);
                        next += 1;
                    }
                    None => std::hint::spin_loop(),
                }
            }
            println!(
                "reader ok={ok} laps={laps} slept={slept} journal={}",
                s.from_journal
            );
            true
        }
        _ => false,
    }
}

#[test]
fn writer_and_readers_in_separate_processes() {
    if child() {
        return;
    }
    let id = format!("{}", std::process::id());
    let exe = std::env::current_exe().unwrap();
    let spawn = |role: &str, bell: bool| {
        Command::new(&exe)
            .args([
                "--exact",
                "writer_and_readers_in_separate_processes",
                "--nocapture",
            ])
            .env("STRESS_ROLE", role)
            .env("STRESS_ID", &id)
            .env("STRESS_BELL", if bell { "1" } else { "0" })
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let path = std::env::temp_dir().join(format!("ring-stress-{id}"));
    let mut writer = spawn("writer", false);
    while !path.with_extension("ready").exists() {
        std::thread::yield_now();
    }
    let readers: Vec<_> = (0..2).map(|i| spawn("reader", i == 1)).collect();
    assert!(writer.wait().unwrap().success());
    for r in readers {
        let out = r.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("reader ok="), "{text}");
    }
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(journal_path(&path));
    let _ = std::fs::remove_file(path.with_extension("ready"));
}
