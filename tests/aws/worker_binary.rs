//! The binary the worker instances run must load on Amazon Linux 2023,
//! whose glibc is 2.34: built here (Debian 12, glibc 2.36) it asked for
//! GLIBC_2.35 symbols and would not start there. scripts/build-worker
//! links it against glibc 2.34 with cargo-zigbuild; this reads the glibc
//! versions the binary requires straight from its ELF version-needs table
//! (no objdump needed).
//!
//! The build takes 15-25 minutes on 2 cores, so scripts/test runs it only
//! with IMAGEFLEET_WORKER_BUILD=1 (CI sets it); otherwise the check runs on
//! whatever scripts/build-worker last produced, and says so if nothing.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Amazon Linux 2023's glibc.
const NEWEST_ALLOWED: (u32, u32) = (2, 34);
const SHT_GNU_VERNEED: u32 = 0x6fff_fffe;

fn read_at(file: &mut File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut buf)?;
    Ok(buf)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Every version name (e.g. `GLIBC_2.34`) an x86_64 ELF binary needs from
/// its shared libraries: the `.gnu.version_r` section, reading only the
/// headers and the sections it needs (the binary may be hundreds of MB).
fn needed_versions(path: &Path) -> std::io::Result<BTreeSet<String>> {
    let mut file = File::open(path)?;
    let header = read_at(&mut file, 0, 64)?;
    assert_eq!(&header[..4], b"\x7fELF", "{} is not ELF", path.display());
    assert_eq!(header[4], 2, "64-bit ELF expected");
    assert_eq!(header[5], 1, "little-endian ELF expected");
    let (shoff, shentsize, shnum) = (
        u64_at(&header, 0x28),
        u16_at(&header, 0x3a) as u64,
        u16_at(&header, 0x3c) as u64,
    );
    let sections = read_at(&mut file, shoff, (shentsize * shnum) as usize)?;
    let section = |i: u64| &sections[(i * shentsize) as usize..((i + 1) * shentsize) as usize];
    let mut names = BTreeSet::new();
    for i in 0..shnum {
        let s = section(i);
        if u32_at(s, 4) != SHT_GNU_VERNEED {
            continue;
        }
        let (offset, size, link, count) = (
            u64_at(s, 0x18),
            u64_at(s, 0x20),
            u32_at(s, 0x28),
            u32_at(s, 0x2c),
        );
        let strings = section(link as u64);
        let strtab = read_at(
            &mut file,
            u64_at(strings, 0x18),
            u64_at(strings, 0x20) as usize,
        )?;
        let string = |at: u32| {
            let start = at as usize;
            let end = strtab[start..].iter().position(|b| *b == 0).unwrap() + start;
            String::from_utf8_lossy(&strtab[start..end]).into_owned()
        };
        let table = read_at(&mut file, offset, size as usize)?;
        let mut entry = 0usize;
        for _ in 0..count {
            // Elf64_Verneed: version, cnt, file, aux, next.
            let (cnt, aux, next) = (
                u16_at(&table, entry + 2),
                u32_at(&table, entry + 8) as usize,
                u32_at(&table, entry + 12) as usize,
            );
            let mut vernaux = entry + aux;
            for _ in 0..cnt {
                // Elf64_Vernaux: hash, flags, other, name, next.
                names.insert(string(u32_at(&table, vernaux + 8)));
                vernaux += u32_at(&table, vernaux + 12) as usize;
            }
            if next == 0 {
                break;
            }
            entry += next;
        }
    }
    Ok(names)
}

/// The newest `GLIBC_x.y` among `names`.
fn newest_glibc(names: &BTreeSet<String>) -> Option<(u32, u32)> {
    names
        .iter()
        .filter_map(|n| n.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .max()
}

/// Where scripts/build-worker puts the binary, unless told otherwise.
fn worker_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("IMAGEFLEET_WORKER_BINARY") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("IMAGEFLEET_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("imagefleet")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/imagefleet")))
        .expect("a cache directory");
    cache.join("worker-target/x86_64-unknown-linux-gnu/release/imagefleet")
}

#[test]
fn the_worker_binary_needs_glibc_2_34_at_most() {
    let binary = worker_binary();
    if !binary.exists() {
        let required = std::env::var("IMAGEFLEET_WORKER_BUILD").is_ok_and(|v| v == "1")
            || std::env::var_os("IMAGEFLEET_WORKER_BINARY").is_some();
        assert!(!required, "no worker binary at {}", binary.display());
        eprintln!(
            "SKIPPED: no worker binary at {} (run scripts/build-worker, or scripts/test with IMAGEFLEET_WORKER_BUILD=1)",
            binary.display()
        );
        return;
    }
    let names = needed_versions(&binary).unwrap();
    let newest = newest_glibc(&names).expect("the worker links glibc dynamically");
    println!(
        "{} needs glibc {}.{} at most",
        binary.display(),
        newest.0,
        newest.1
    );
    assert!(
        newest <= NEWEST_ALLOWED,
        "{} needs GLIBC_{}.{}; Amazon Linux 2023 has {}.{}: build it with scripts/build-worker",
        binary.display(),
        newest.0,
        newest.1,
        NEWEST_ALLOWED.0,
        NEWEST_ALLOWED.1
    );
}

/// The reader itself, on a binary at hand: the one this test runs in.
#[test]
fn glibc_versions_are_read_from_the_elf_tables() {
    let names = needed_versions(&std::env::current_exe().unwrap()).unwrap();
    assert!(names.contains("GLIBC_2.2.5"), "{names:?}");
    let newest = newest_glibc(&names).unwrap();
    assert!(newest >= (2, 2), "{newest:?}");
    println!("this host's build needs glibc {}.{}", newest.0, newest.1);
    assert_eq!(
        newest_glibc(
            &["GLIBC_2.2.5", "GLIBC_2.34", "GLIBC_2.4", "GCC_3.0"]
                .map(String::from)
                .into()
        ),
        Some((2, 34))
    );
}
