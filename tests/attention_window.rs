//! Qwen2.5-VL window machinery against transformers 4.57.1 goldens
//! (tests/fixtures/window, made by tools/gen_window_goldens.py), and the
//! reorder into window order and back against a plain gather.

use vlkernels::attention::window::{
    frame_cu_seqlens, get_window_index, layer_cu_seqlens, reorder, reverse_index, Order, WindowConfig,
};

const CASES: [&str; 6] = ["g1_10_12", "g2_8_8", "g1_3_5", "g1_16_16", "g3_6_10", "batch_all"];

fn load(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/fixtures/window/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn usizes(v: &serde_json::Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn grid(v: &serde_json::Value) -> Vec<[usize; 3]> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let g = usizes(g);
            [g[0], g[1], g[2]]
        })
        .collect()
}

#[test]
fn window_index_matches_transformers() {
    for name in CASES {
        let doc = load(name);
        assert_eq!(doc["transformers"], "4.57.1", "{name}");
        let cfg = WindowConfig {
            window_size: doc["window_size"].as_u64().unwrap() as usize,
            patch_size: doc["patch_size"].as_u64().unwrap() as usize,
            spatial_merge_size: doc["spatial_merge_size"].as_u64().unwrap() as usize,
        };
        assert_eq!(cfg, WindowConfig::QWEN25_VL);
        let g = grid(&doc["grid_thw"]);
        let wi = get_window_index(&g, &cfg).unwrap();
        assert_eq!(wi.window_index, usizes(&doc["window_index"]), "{name}: window_index");
        assert_eq!(
            wi.cu_window_seqlens_raw,
            usizes(&doc["cu_window_seqlens_raw"]),
            "{name}: raw cu"
        );
        assert_eq!(wi.cu_window_seqlens, usizes(&doc["cu_window_seqlens"]), "{name}: cu");
        assert_eq!(
            frame_cu_seqlens(&g).unwrap(),
            usizes(&doc["frame_cu_seqlens"]),
            "{name}: frame cu"
        );
    }
}

#[test]
fn divisible_grid_gets_the_empty_window_quirk() {
    // 16×16 patches → 8×8 units, window 4 units: transformers pads to 3×3 windows,
    // so the raw boundaries repeat and deduplication leaves 4 windows of 64 patches.
    let wi = get_window_index(&[[1, 16, 16]], &WindowConfig::QWEN25_VL).unwrap();
    assert_eq!(wi.cu_window_seqlens_raw.len(), 10);
    assert_eq!(wi.cu_window_seqlens, vec![0, 64, 128, 192, 256]);
}

#[test]
fn layer_selection_follows_fullatt_block_indexes() {
    let (frame, window) = ([0usize, 64], [0usize, 16, 64]);
    let full = [7, 15, 23, 31];
    assert_eq!(layer_cu_seqlens(7, &full, &frame, &window), &frame);
    assert_eq!(layer_cu_seqlens(8, &full, &frame, &window), &window);
}

/// Reorder with the library (engine or gather) vs. a plain gather of units.
#[test]
fn reorder_round_trips_and_matches_gather() {
    let grids: Vec<Vec<[usize; 3]>> = vec![
        vec![[1, 10, 12]],
        vec![[2, 8, 8]],
        vec![[1, 16, 16]], // divisible: permutation engine
        vec![[3, 6, 10]],
        vec![[1, 16, 16], [1, 10, 12], [2, 16, 8]],
        vec![[1, 2, 2]],
        vec![[0, 4, 4], [1, 4, 4]],
    ];
    for g in grids {
        let wi = get_window_index(&g, &WindowConfig::QWEN25_VL).unwrap();
        for row_len in [1usize, 3, 40] {
            let unit = wi.merge_unit * row_len;
            let n = wi.window_index.len() * unit;
            let x: Vec<u32> = (0..n as u32).map(|i| i.wrapping_mul(2654435761)).collect();
            let mut expect = vec![0u32; n];
            for (pos, &u) in wi.window_index.iter().enumerate() {
                expect[pos * unit..(pos + 1) * unit].copy_from_slice(&x[u * unit..(u + 1) * unit]);
            }
            let mut win = vec![u32::MAX; n];
            reorder(&x, row_len, &g, &wi, Order::ToWindows, &mut win).unwrap();
            assert_eq!(win, expect, "grid {g:?} row {row_len}: to windows");
            let mut back = vec![u32::MAX; n];
            reorder(&win, row_len, &g, &wi, Order::FromWindows, &mut back).unwrap();
            assert_eq!(back, x, "grid {g:?} row {row_len}: back");
            // argsort(window_index) undoes the order, as transformers uses it.
            let inv = reverse_index(&wi.window_index).unwrap();
            for (u, &pos) in inv.iter().enumerate() {
                assert_eq!(wi.window_index[pos], u);
            }
        }
    }
}

#[test]
fn bad_arguments_are_errors() {
    let cfg = WindowConfig {
        window_size: 20,
        ..WindowConfig::QWEN25_VL
    };
    assert!(get_window_index(&[[1, 4, 4]], &cfg)
        .unwrap_err()
        .to_string()
        .contains("window_size 20"));
    let zero = WindowConfig {
        patch_size: 0,
        ..WindowConfig::QWEN25_VL
    };
    assert!(get_window_index(&[[1, 4, 4]], &zero).is_err());
    let g = [[1, 3, 5]];
    let wi = get_window_index(&g, &WindowConfig::QWEN25_VL).unwrap();
    let x = vec![0f32; 8];
    let mut out = vec![0f32; 8];
    let err = reorder(&x, 1, &g, &wi, Order::ToWindows, &mut out).unwrap_err();
    assert!(err.to_string().contains("multiples of spatial_merge_size"), "{err}");
    let g = [[1, 4, 4]];
    let wi = get_window_index(&g, &WindowConfig::QWEN25_VL).unwrap();
    let mut short = vec![0f32; 15];
    assert!(reorder(&[0f32; 16], 1, &g, &wi, Order::ToWindows, &mut short).is_err());
    assert!(reverse_index(&[0, 0]).is_err());
    assert!(reverse_index(&[0, 2]).is_err());
}
