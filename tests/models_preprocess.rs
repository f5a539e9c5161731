//! The Qwen2-VL image processor against transformers 4.57.1 on a real photograph
//! (tests/fixtures/preprocess, made by tools/gen_preprocess_fixtures.py), for both
//! the fast (torchvision) and the slow (Pillow) implementation, plus the CLI and errors.

use std::path::PathBuf;
use std::process::Command;

use vlkernels::models::image_resize::{resize_bicubic_rgb8, ResizeFlavor};
use vlkernels::models::processor::{preprocess, smart_resize, ProcessorConfig, ProcessorFlavor, RgbImage};
use vlkernels::models::{read_json, JsonView};
use vlkernels::npy::read_npy;
use vlkernels::DType;

const CASES: [&str; 3] = ["default", "downscale", "upscale"];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn photo() -> RgbImage {
    RgbImage::open(fixtures().join("images/chelsea_crop_131x97.png")).unwrap()
}

fn f32s(path: PathBuf) -> (Vec<f32>, Vec<usize>) {
    let a = read_npy(&path).unwrap();
    assert_eq!(a.dtype, DType::F32, "{}", path.display());
    (bytemuck::pod_collect_to_vec(&a.data), a.shape)
}

fn grid(path: PathBuf) -> [usize; 3] {
    let a = read_npy(&path).unwrap();
    let v: Vec<i64> = bytemuck::pod_collect_to_vec(&a.data);
    assert_eq!(v.len(), 3);
    [v[0] as usize, v[1] as usize, v[2] as usize]
}

fn flavors() -> [(ProcessorFlavor, &'static str, ResizeFlavor); 2] {
    [
        (ProcessorFlavor::Fast, "fast", ResizeFlavor::Torchvision),
        (ProcessorFlavor::Slow, "slow", ResizeFlavor::Pil),
    ]
}

fn config(case: &str, flavor: ProcessorFlavor) -> ProcessorConfig {
    ProcessorConfig::from_model_dir(fixtures().join("preprocess").join(case), flavor).unwrap()
}

/// The resize alone: torchvision's uint8 kernel is reproduced bit for bit. Pillow is
/// reproduced with its horizontal-then-vertical order (Pillow ≤ 12); Pillow 13 runs the
/// vertical pass first when the height shrinks much more than the width, which moves
/// some pixels by one level, so the slow flavour is held to one level.
#[test]
fn bicubic_resize_matches_pillow_and_torchvision() {
    let img = photo();
    for case in CASES {
        for (_, name, resize_flavor) in flavors() {
            let expect = read_npy(fixtures().join(format!("preprocess/{case}/{name}_resized.npy"))).unwrap();
            assert_eq!(expect.dtype, DType::U8);
            let (h, w) = (expect.shape[0], expect.shape[1]);
            // The script resizes both flavours to the fast processor's size (the slow
            // one ignores `size`, see ProcessorConfig::from_json).
            let cfg = config(case, ProcessorFlavor::Fast);
            let want = smart_resize(
                img.height,
                img.width,
                cfg.factor().unwrap(),
                cfg.min_pixels,
                cfg.max_pixels,
            );
            assert_eq!(want.unwrap(), (h, w), "{case}/{name}: smart_resize");
            let got = resize_bicubic_rgb8(&img.data, img.height, img.width, h, w, resize_flavor).unwrap();
            let diffs: Vec<i32> = got
                .iter()
                .zip(&expect.data)
                .map(|(&a, &b)| (a as i32 - b as i32).abs())
                .collect();
            let max = diffs.iter().copied().max().unwrap();
            let off = diffs.iter().filter(|&&d| d != 0).count();
            eprintln!(
                "{case}/{name}: resize to {h}x{w}: {off} of {} bytes differ, max {max}",
                diffs.len()
            );
            match resize_flavor {
                ResizeFlavor::Torchvision => assert_eq!(max, 0, "{case}: torchvision resize must be exact"),
                ResizeFlavor::Pil => assert!(max <= 1, "{case}: Pillow resize off by {max}"),
            }
        }
    }
}

/// Fast: equal to f32 rounding (≤ 1e-6). Slow: within one 8-bit level, which is
/// 1/255/std ≤ 0.0151 for the CLIP std (0.0078 for std 0.5); measured values are printed.
#[test]
fn pixel_values_match_transformers() {
    let img = photo();
    for case in CASES {
        for (flavor, name, _) in flavors() {
            let dir = fixtures().join("preprocess").join(case);
            let (expect, shape) = f32s(dir.join(format!("{name}_pixel_values.npy")));
            let expect_grid = grid(dir.join(format!("{name}_grid_thw.npy")));
            let out = preprocess(&img, &config(case, flavor)).unwrap();
            assert_eq!(out.grid_thw, expect_grid, "{case}/{name}: grid");
            assert_eq!(
                [out.pixel_values.len() / out.patch_dim, out.patch_dim],
                [shape[0], shape[1]]
            );
            let mut max = 0f32;
            let mut sum = 0f64;
            let mut exact = 0usize;
            for (&a, &b) in out.pixel_values.iter().zip(&expect) {
                let d = (a - b).abs();
                assert!(d.is_finite(), "{case}/{name}: non-finite value");
                max = max.max(d);
                sum += d as f64;
                exact += (d <= 1e-6) as usize;
            }
            let mean = sum / expect.len() as f64;
            eprintln!(
                "{case}/{name}: pixel_values {:?}: max abs {max:.3e}, mean abs {mean:.3e}, {exact}/{} within 1e-6",
                shape,
                expect.len()
            );
            match flavor {
                ProcessorFlavor::Fast => assert!(max <= 1e-6, "{case}/fast: max abs {max}"),
                ProcessorFlavor::Slow => {
                    assert!(max <= 0.0151, "{case}/slow: max abs {max}");
                    assert!(mean <= 5e-3, "{case}/slow: mean abs {mean}");
                }
            }
        }
    }
}

#[test]
fn cli_writes_pixel_values_and_prints_grid() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("pv.npy");
    let case = fixtures().join("preprocess/downscale");
    let out = Command::new(env!("CARGO_BIN_EXE_vlk"))
        .args(["preprocess", "--model"])
        .arg(&case)
        .arg("--image")
        .arg(fixtures().join("images/chelsea_crop_131x97.png"))
        .arg("--output")
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("grid_thw: 1,4,4"), "stdout: {stdout}");
    let (got, shape) = f32s(out_path);
    let (expect, expect_shape) = f32s(case.join("fast_pixel_values.npy"));
    assert_eq!(shape, expect_shape);
    let max = got.iter().zip(&expect).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max <= 1e-6, "CLI pixel values off by {max}");

    let bad = Command::new(env!("CARGO_BIN_EXE_vlk"))
        .args(["preprocess", "--model"])
        .arg(&case)
        .args(["--image", "/nonexistent/cat.png", "--output"])
        .arg(dir.path().join("x.npy"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("/nonexistent/cat.png"), "stderr: {err}");
}

#[test]
fn smart_resize_follows_python_rounding_and_limits() {
    // round(42/28) = round(1.5) = 2 and round(70/28) = round(2.5) = 2 (half to even).
    assert_eq!(smart_resize(42, 70, 28, 56 * 56, 28 * 28 * 1280).unwrap(), (56, 56));
    // Far below min_pixels: scaled up and rounded up.
    assert_eq!(smart_resize(10, 10, 28, 56 * 56, 28 * 28 * 1280).unwrap(), (56, 56));
    // Above max_pixels: scaled down and rounded down.
    assert_eq!(
        smart_resize(1000, 1000, 28, 56 * 56, 28 * 28 * 256).unwrap(),
        (448, 448)
    );
    // Aspect ratio 200 is allowed, 201 is not (transformers raises above 200).
    assert!(smart_resize(1, 200, 28, 56 * 56, 28 * 28 * 1280).is_ok());
    let err = smart_resize(1, 201, 28, 56 * 56, 28 * 28 * 1280)
        .unwrap_err()
        .to_string();
    assert!(err.contains("aspect ratio") && err.contains("201"), "{err}");
    assert!(smart_resize(0, 5, 28, 1, 10).is_err());
}

#[test]
fn errors_name_the_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    // Unreadable image: the path is named.
    let path = dir.path().join("not_an_image.png");
    std::fs::write(&path, b"this is not a png").unwrap();
    let err = RgbImage::open(&path).unwrap_err().to_string();
    assert!(err.contains("not_an_image.png"), "{err}");
    let err = RgbImage::open(dir.path().join("missing.jpg")).unwrap_err().to_string();
    assert!(err.contains("missing.jpg"), "{err}");
    // Extreme aspect ratio.
    let strip = RgbImage::new(1, 300, vec![7; 900]).unwrap();
    let err = preprocess(&strip, &ProcessorConfig::default()).unwrap_err().to_string();
    assert!(err.contains("aspect ratio"), "{err}");
    // Wrong buffer size.
    assert!(RgbImage::new(2, 2, vec![0; 11]).is_err());
    // Bad config values, named with their key.
    for (json, key) in [
        (r#"{"patch_size": 0}"#, "patch_size"),
        (r#"{"image_std": [0.5, 0.0, 0.5]}"#, "image_std"),
        (r#"{"image_mean": [0.5, 0.5]}"#, "image_mean"),
        (r#"{"min_pixels": 5000, "max_pixels": 100}"#, "min_pixels"),
        (r#"{"merge_size": "two"}"#, "merge_size"),
        (r#"{"size": {"shortest_edge": 10}}"#, "size"),
    ] {
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        let view = JsonView::new("preprocessor_config.json", &value).unwrap();
        let err = ProcessorConfig::from_json(&view, ProcessorFlavor::Fast)
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{json}: {err}");
    }
    // A folder whose preprocessor_config.json is broken is reported with the file.
    std::fs::write(dir.path().join("preprocessor_config.json"), "{").unwrap();
    let err = ProcessorConfig::from_model_dir(dir.path(), ProcessorFlavor::Fast)
        .unwrap_err()
        .to_string();
    assert!(err.contains("preprocessor_config.json"), "{err}");
    let _ = read_json(fixtures().join("preprocess/default"), "preprocessor_config.json").unwrap();
}

/// Patchify order on a synthetic image whose every pixel encodes its coordinates:
/// row `(bh, bw, mh, mw)` holds channel-major, then temporal copies, then the patch.
#[test]
fn patch_rows_follow_transformers_order() {
    let (h, w) = (8, 12);
    let data: Vec<u8> = (0..h * w * 3)
        .map(|i| {
            let (y, x, c) = (i / 3 / w, i / 3 % w, i % 3);
            (y * 16 + x + c * 100 % 7) as u8
        })
        .collect();
    let img = RgbImage::new(h, w, data.clone()).unwrap();
    let cfg = ProcessorConfig {
        patch_size: 2,
        merge_size: 2,
        temporal_patch_size: 2,
        do_rescale: false,
        do_normalize: false,
        min_pixels: 1,
        max_pixels: 1 << 20,
        ..ProcessorConfig::default()
    };
    let out = preprocess(&img, &cfg).unwrap();
    assert_eq!(out.grid_thw, [1, 4, 6]);
    let (p, m, t, gw) = (2usize, 2usize, 2usize, 6usize);
    let mut row = 0;
    for bh in 0..4 / m {
        for bw in 0..gw / m {
            for mh in 0..m {
                for mw in 0..m {
                    let mut col = 0;
                    for c in 0..3 {
                        for _ in 0..t {
                            for ph in 0..p {
                                for pw in 0..p {
                                    let y = (bh * m + mh) * p + ph;
                                    let x = (bw * m + mw) * p + pw;
                                    let want = data[(y * w + x) * 3 + c] as f32;
                                    assert_eq!(out.pixel_values[row * out.patch_dim + col], want);
                                    col += 1;
                                }
                            }
                        }
                    }
                    row += 1;
                }
            }
        }
    }
    assert_eq!(row * out.patch_dim, out.pixel_values.len());
}

/// JPEG files and grey or RGBA images decode to RGB8 as `convert_to_rgb` does.
#[test]
fn jpeg_grey_and_alpha_inputs_become_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let rgb = photo();
    let buf = image::RgbImage::from_raw(rgb.width as u32, rgb.height as u32, rgb.data.clone()).unwrap();
    let jpeg = dir.path().join("photo.jpg");
    buf.save_with_format(&jpeg, image::ImageFormat::Jpeg).unwrap();
    let decoded = RgbImage::open(&jpeg).unwrap();
    assert_eq!((decoded.height, decoded.width), (rgb.height, rgb.width));
    let mean_err = decoded
        .data
        .iter()
        .zip(&rgb.data)
        .map(|(&a, &b)| (a as f64 - b as f64).abs())
        .sum::<f64>()
        / rgb.data.len() as f64;
    assert!(mean_err < 8.0, "JPEG round trip mean error {mean_err}");
    let out = preprocess(&decoded, &config("default", ProcessorFlavor::Fast)).unwrap();
    assert_eq!(out.grid_thw, [1, 6, 10]);

    let grey = image::GrayImage::from_fn(5, 3, |x, y| image::Luma([(x * 40 + y) as u8]));
    let grey_path = dir.path().join("grey.png");
    grey.save(&grey_path).unwrap();
    let g = RgbImage::open(&grey_path).unwrap();
    assert_eq!((g.height, g.width), (3, 5));
    assert_eq!(&g.data[3 * 6..3 * 7], &[41, 41, 41]);

    let rgba = image::RgbaImage::from_fn(2, 2, |x, _| image::Rgba([10 * x as u8, 20, 30, 0]));
    let rgba_path = dir.path().join("alpha.png");
    rgba.save(&rgba_path).unwrap();
    let c = RgbImage::open(&rgba_path).unwrap();
    assert_eq!(c.data, vec![0, 20, 30, 10, 20, 30, 0, 20, 30, 10, 20, 30]);
}
