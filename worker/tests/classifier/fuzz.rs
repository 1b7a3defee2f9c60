//! Fuzzing the upload path's sniff and decode: mutated fixtures of every
//! format must give an image or a typed error, never a panic. A handful of
//! cases run in the normal suite; `scripts/fuzz` runs them for a set time
//! (`FUZZ_SECONDS`, seed `FUZZ_SEED`). A crashing input is written to
//! `FUZZ_CRASH_DIR` (default: the temp dir); keep it under
//! worker/tests/fixtures/fuzz/, where `fuzz_regressions_decode_cleanly`
//! replays it forever after.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use imagefleet_worker::decode::{decode_rgb_within, sniff_format, DecodeLimits};
use imagefleet_worker::ClassifyError;

use super::decoding::{fixture, FIXTURES};
use super::repo_root;

/// SplitMix64: a seeded generator, so a run is repeatable from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// How long and from which seed: the normal suite runs a fixed, small
/// number of cases; `FUZZ_SECONDS` turns that into a time budget.
pub struct Budget {
    pub seed: u64,
    cases: u64,
    until: Option<Instant>,
}

impl Budget {
    pub fn from_env(default_cases: u64) -> Budget {
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        Budget {
            seed: env("FUZZ_SEED").unwrap_or(0x1337),
            cases: default_cases,
            until: env("FUZZ_SECONDS").map(|s| Instant::now() + Duration::from_secs(s)),
        }
    }

    pub fn more(&self, done: u64) -> bool {
        match self.until {
            Some(until) => Instant::now() < until,
            None => done < self.cases,
        }
    }
}

/// Small limits: the same checks as the defaults, and no case spends its
/// time allocating hundreds of megabytes.
const LIMITS: DecodeLimits = DecodeLimits {
    max_pixels: 4_000_000,
    max_bytes: 32 * 1024 * 1024,
};

/// Values that break parsers: zero, signs, powers of two, all ones.
const INTERESTING: &[u32] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        if bytes.is_empty() {
            bytes.push(rng.next() as u8);
        }
        // Headers hold the interesting fields: aim there half the time.
        let at = if rng.below(2) == 0 {
            rng.below(bytes.len().min(64))
        } else {
            rng.below(bytes.len())
        };
        match rng.below(7) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = rng.next() as u8,
            2 => {
                let value = INTERESTING[rng.below(INTERESTING.len())];
                let width = [1, 2, 4][rng.below(3)];
                let encoded = if rng.below(2) == 0 {
                    value.to_be_bytes()
                } else {
                    value.to_le_bytes()
                };
                let end = (at + width).min(bytes.len());
                let take = end - at;
                bytes[at..end].copy_from_slice(&encoded[4 - take..]);
            }
            3 => bytes.truncate(at.max(1)),
            4 => {
                let len = rng.below(64).min(bytes.len() - at);
                bytes.drain(at..at + len);
            }
            5 => {
                let len = rng.below(64).min(bytes.len() - at);
                let copy = bytes[at..at + len].to_vec();
                let to = rng.below(bytes.len());
                bytes.splice(to..to, copy);
            }
            _ => {
                let to = rng.below(bytes.len() + 1);
                let noise: Vec<u8> = (0..rng.below(16)).map(|_| rng.next() as u8).collect();
                bytes.splice(to..to, noise);
            }
        }
    }
    bytes
}

/// The upload path for one input: sniff as the web tier does, then decode
/// as the classifier does. Panics propagate to the caller.
fn sniff_and_decode(bytes: &[u8]) -> Result<(u32, u32), ClassifyError> {
    sniff_format(bytes)?;
    let image = decode_rgb_within(bytes, LIMITS, Some(256))?;
    assert!(image.width() > 0 && image.height() > 0);
    Ok(image.dimensions())
}

fn crash_dir() -> PathBuf {
    std::env::var_os("FUZZ_CRASH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("imagefleet-fuzz"))
}

#[test]
fn fuzz_sniff_and_decode() {
    let budget = Budget::from_env(240);
    let mut rng = Rng::new(budget.seed);
    let seeds: Vec<Vec<u8>> = FIXTURES.iter().map(|name| fixture(name)).collect();
    let (mut cases, mut decoded, mut slowest) = (0u64, 0u64, Duration::ZERO);
    while budget.more(cases) {
        let input = mutate(&mut rng, &seeds[cases as usize % seeds.len()]);
        cases += 1;
        let started = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| sniff_and_decode(&input))) {
            Ok(result) => decoded += u64::from(result.is_ok()),
            Err(_) => {
                let dir = crash_dir();
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join(format!("crash-{:016x}-{cases}.bin", budget.seed));
                std::fs::write(&path, &input).unwrap();
                panic!(
                    "decoding panicked (seed {}, case {cases}); input saved to {}",
                    budget.seed,
                    path.display()
                );
            }
        }
        slowest = slowest.max(started.elapsed());
    }
    println!(
        "fuzz_sniff_and_decode: seed {}, {cases} cases, {decoded} decoded, slowest {slowest:?}",
        budget.seed
    );
}

/// Inputs the fuzzer once found; each must decode or be refused cleanly.
/// (None so far: the folder appears with the first.)
#[test]
fn fuzz_regressions_decode_cleanly() {
    let dir = repo_root().join("worker/tests/fixtures/fuzz");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            let bytes = std::fs::read(&path).unwrap();
            let result = catch_unwind(AssertUnwindSafe(|| sniff_and_decode(&bytes)));
            assert!(result.is_ok(), "{} panics", path.display());
        }
    }
}
