//! The gateway's fuzz targets (`feed-handler/fuzz`: `resp_reply`, `client_messages`) run by the
//! ordinary tests over their committed seeds and deterministic mutations of them.

/// Runs `f` over every seed of `target` (`feed-handler/fuzz/seeds/TARGET/`, at least `min`
/// of them) and 1,500 mutations of each: bit flips, truncations, splices with another seed.
pub(crate) fn seeds_and_mutations(target: &str, min: usize, f: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../feed-handler/fuzz/seeds")
        .join(target);
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(seeds.len() >= min, "seeds in {}", dir.display());
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n.max(1) as u64) as usize
    };
    for s in &seeds {
        f(s);
        for _ in 0..1500 {
            let mut m = s.clone();
            match rnd(3) {
                0 if !m.is_empty() => {
                    let i = rnd(m.len());
                    m[i] ^= 1 << rnd(8);
                }
                1 => m.truncate(rnd(m.len() + 1)),
                _ => {
                    let o = &seeds[rnd(seeds.len())];
                    let cut = rnd(m.len() + 1);
                    m.truncate(cut);
                    m.extend_from_slice(&o[rnd(o.len() + 1)..]);
                }
            }
            f(&m);
        }
    }
}
