//! The binary's allocator is a vendored mimalloc (vendor/mimalloc) that sends layouts aligned to
//! no more than a word through mimalloc's plain `malloc`/`zalloc`/`realloc`, on the strength of
//! every mimalloc block being word-aligned. These tests hold that to account through the same
//! allocator installed the same way: if a size class ever handed out a less aligned block, or a
//! zeroed block came back dirty, they fail.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[repr(align(16))]
struct Align16(#[allow(dead_code)] [u8; 16]);

#[repr(align(64))]
struct Align64(#[allow(dead_code)] [u8; 64]);

/// Sizes across mimalloc's small, medium and large classes, with odd ones between.
fn sizes() -> impl Iterator<Item = usize> {
    (1..=64).chain((72..=2048).step_by(24)).chain([
        4095,
        4096,
        8191,
        16_384,
        65_537,
        262_144,
        1 << 20,
    ])
}

fn assert_aligned<T>(v: &[T], what: &str, n: usize) {
    let align = std::mem::align_of::<T>();
    let addr = v.as_ptr() as usize;
    assert_eq!(
        addr % align,
        0,
        "{what}: {n} elements at {addr:#x} not {align}-aligned"
    );
}

#[test]
fn every_block_honours_its_alignment() {
    // Other allocations stay alive in between, so blocks come from partly used pages.
    let mut keep: Vec<Vec<u8>> = Vec::new();
    for n in sizes() {
        keep.push(vec![1u8; n % 97 + 1]);
        assert_aligned(&Vec::<u16>::with_capacity(n), "u16", n);
        assert_aligned(&Vec::<u32>::with_capacity(n), "u32", n);
        assert_aligned(&Vec::<[u32; 3]>::with_capacity(n), "[u32; 3]", n);
        assert_aligned(&Vec::<u64>::with_capacity(n), "u64", n);
        assert_aligned(&Vec::<Align16>::with_capacity(n.min(4096)), "align 16", n);
        assert_aligned(&Vec::<Align64>::with_capacity(n.min(1024)), "align 64", n);
    }
}

#[test]
fn zeroed_blocks_are_zero() {
    // Dirty the pages first, so a zeroed block that were only recycled would show it.
    for n in sizes() {
        drop(vec![0xa5u8; n * 8]);
        let z = vec![0u64; n];
        assert_aligned(&z, "zeroed u64", n);
        assert!(z.iter().all(|&w| w == 0), "{n} zeroed u64s were not zero");
        // u128 is 16-aligned: the `_aligned` path, zeroed.
        drop(vec![u128::MAX; n.min(4096)]);
        let z = vec![0u128; n.min(4096)];
        assert_aligned(&z, "zeroed u128", n);
        assert!(z.iter().all(|&w| w == 0), "{n} zeroed u128s were not zero");
    }
}

#[test]
fn grown_blocks_keep_their_alignment_and_contents() {
    let mut v: Vec<u64> = Vec::new();
    for i in 0..200_000u64 {
        v.push(i);
        if v.len() == v.capacity() {
            assert_aligned(&v, "grown u64", v.len());
        }
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
    v.truncate(3);
    v.shrink_to_fit();
    assert_aligned(&v, "shrunk u64", v.len());
    assert_eq!(v, [0, 1, 2]);
}
