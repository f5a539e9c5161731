//! The tuning cache: every block order survives the JSON file and is applied
//! by tuned plans, the tuner offers both band walks, and a tuned problem's
//! entry is what a tuned plan then runs. (Its own test binary: it points
//! `VLK_TUNE_CACHE` at a temporary file for the whole process.)

mod common;

use common::{c_strides, random_bytes, reference_permute, POISON};
use vlkernels::permute::tune::{candidates, key, tune_problem, TuneCache, TuneEntry};
use vlkernels::{BlockOrder, NonTemporal, PermuteOptions, PermutePlan};

/// A streamed (2,1,0) transpose whose default plan walks line bands across.
const SHAPE: [usize; 3] = [384, 3, 1402];
const PERM: [usize; 3] = [2, 1, 0];

fn opts() -> PermuteOptions {
    PermuteOptions::default()
        .with_threads(1)
        .with_non_temporal(NonTemporal::On)
}

/// The plan's output, poisoned first, against the reference.
fn check(plan: &PermutePlan, what: &str) {
    let n: usize = SHAPE.iter().product();
    let src = random_bytes(n * 4, 41);
    let elems: Vec<[u8; 4]> = src.chunks_exact(4).map(|c| c.try_into().unwrap()).collect();
    let expect: Vec<u8> = reference_permute(&elems, &SHAPE, &c_strides(&SHAPE), &PERM).concat();
    let mut dst = vec![POISON; n * 4];
    plan.execute_bytes(&src, &mut dst).unwrap();
    assert!(dst == expect, "{what}: wrong output; {}", plan.describe());
}

#[test]
fn tuning_cache_round_trips_and_tuned_plans_use_it() {
    let dir = std::env::temp_dir().join(format!("vlk-tune-test-{}", std::process::id()));
    let path = dir.join("permute-tune.json");
    std::env::set_var("VLK_TUNE_CACHE", &path);

    let plan = PermutePlan::new(&SHAPE, &PERM, 4, &opts()).unwrap();
    assert!(plan.describe().contains("across=true"), "{}", plan.describe());

    // The tuner offers both walks of the bands.
    let cands = candidates(&plan);
    for walk in [BlockOrder::BandsAlong, BlockOrder::BandsAcross] {
        assert!(cands.iter().any(|t| t.block_order == walk), "no {walk:?} candidate");
    }
    // ... and none to a problem without line bands (a run copy).
    let runs = PermutePlan::new(&[64, 48, 32], &[1, 0, 2], 4, &opts()).unwrap();
    assert!(candidates(&runs).iter().all(|t| !t.block_order.banded()));
    // Channel strips (HWC→CHW) differ only in their thread count.
    let hwc = PermutePlan::new(&[48, 64, 3], &[2, 0, 1], 1, &opts()).unwrap();
    if hwc.describe().contains("strips(") {
        let base = hwc.tuning();
        let cands = candidates(&hwc);
        assert!(!cands.is_empty());
        assert!(cands.iter().all(|t| vlkernels::Tuning {
            threads: base.threads,
            ..*t
        } == base));
    } else {
        eprintln!(
            "channel strips not checked: this CPU's kernels have none ({})",
            hwc.describe()
        );
    }

    // Every order survives the file, and a tuned plan takes it.
    for order in [
        BlockOrder::DstFastest,
        BlockOrder::SrcFastest,
        BlockOrder::Bands,
        BlockOrder::BandsAlong,
        BlockOrder::BandsAcross,
    ] {
        let mut tuning = plan.tuning();
        tuning.block_order = order;
        let mut cache = TuneCache::default();
        cache.entries.insert(
            key(&plan, 1),
            TuneEntry {
                problem: format!("{SHAPE:?} {PERM:?}"),
                tuning,
                gibs: 2.0,
                default_gibs: 1.0,
            },
        );
        assert_eq!(cache.save().unwrap(), path);
        assert_eq!(TuneCache::load().unwrap(), cache);
        let tuned = PermutePlan::new(&SHAPE, &PERM, 4, &opts().with_tuned(true)).unwrap();
        assert_eq!(tuned.tuning().block_order, order);
        let described = tuned.describe();
        match order {
            BlockOrder::BandsAlong => assert!(described.contains("across=false)"), "{described}"),
            BlockOrder::BandsAcross | BlockOrder::Bands => {
                assert!(described.contains("across=true)"), "{described}")
            }
            _ => assert!(!described.contains("bands("), "{described}"),
        }
        check(&tuned, &format!("{order:?}"));
    }

    // A tuned problem's entry is what the tuned plan then runs.
    let mut cache = TuneCache::default();
    let mut calls = 0;
    let entry = tune_problem(&SHAPE, &PERM, 4, &opts(), 1, &mut cache, |i, n| {
        assert!(i <= n);
        calls += 1;
    })
    .unwrap();
    assert_eq!(calls, cands.len());
    assert!(entry.gibs > 0.0 && entry.default_gibs > 0.0);
    cache.save().unwrap();
    let tuned = PermutePlan::new(&SHAPE, &PERM, 4, &opts().with_tuned(true)).unwrap();
    assert_eq!(tuned.tuning(), entry.tuning);
    check(&tuned, "tuned");

    // A cache that is not JSON is an error naming the file, not a panic.
    std::fs::write(&path, "not json").unwrap();
    let err = PermutePlan::new(&SHAPE, &PERM, 4, &opts().with_tuned(true)).unwrap_err();
    assert!(err.to_string().contains("permute-tune.json"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
