//! `cargo bench -p imagefleet-worker --bench kernels`: the 1x1 convolution
//! kernel alone on each of EfficientNet-Lite0's shapes, in GFMA/s and as a
//! share of this core's FMA peak; then the depthwise kernel on each of its
//! shapes, on every path this CPU runs (which path pays where); then the
//! fused expansions on every route this CPU runs. The peak is timed right before every
//! shape, by a loop of independent register-only FMAs, so the share holds
//! still while the (shared, noisy) machine's speed drifts; it is the figure
//! to compare between builds.
//!
//! Arguments: `[--filter CIN:COUT:SIDE]` to time one shape.
//!
//! Each shape runs over and over on the same buffers, so its weights stay
//! in cache in a way they do not in a whole pass of the model: this times
//! the arithmetic, `worker-bench --profile-nodes` the layers in place.

use std::time::{Duration, Instant};

use imagefleet_worker::bench::Summary;
use std::sync::Arc;

use imagefleet_worker::ops::depthwise::kernel::{depthwise_on, Geometry, Path};
use imagefleet_worker::ops::depthwise::op::FastDepthwise;
use imagefleet_worker::ops::expand::op::{FastExpandDepthwise, Route};
use imagefleet_worker::ops::pointwise::kernel::{pointwise, PackedWeights, Pointwise};
use imagefleet_worker::ops::pointwise::op::FastPointwise;
use tract_onnx::prelude::{tvec, Tensor};

/// (input channels, output channels, plane side, what it is) of every
/// distinct pointwise layer, plus the chunks the fused expansions run.
const SHAPES: &[(usize, usize, usize, &str)] = &[
    (16, 8, 112, "expansion chunk, fused"),
    (32, 16, 112, "projection"),
    (24, 40, 56, "expansion chunk, fused"),
    (96, 24, 56, "projection"),
    (144, 24, 56, "projection + residual"),
    (144, 40, 28, "projection"),
    (40, 240, 28, "expansion"),
    (240, 40, 28, "projection + residual"),
    (240, 80, 14, "projection"),
    (80, 480, 14, "expansion"),
    (480, 80, 14, "projection + residual"),
    (480, 112, 14, "projection"),
    (112, 672, 14, "expansion"),
    (672, 112, 14, "projection + residual"),
    (672, 192, 7, "projection"),
    (192, 1152, 7, "expansion"),
    (1152, 192, 7, "projection + residual"),
    (1152, 320, 7, "projection"),
    (320, 1280, 7, "head"),
];

/// (channels, kernel, stride, input side, padding before, after) of every
/// distinct depthwise layer; the fused ones run on a chunk of channels.
const DEPTHWISE_SHAPES: &[(usize, usize, usize, usize, usize, usize, &str)] = &[
    (32, 3, 1, 112, 1, 1, ""),
    (10, 3, 2, 112, 0, 1, "fused chunk"),
    (40, 3, 1, 56, 1, 1, "fused chunk"),
    (40, 5, 2, 56, 1, 2, "fused chunk"),
    (240, 5, 1, 28, 2, 2, ""),
    (240, 3, 2, 28, 0, 1, ""),
    (480, 3, 1, 14, 1, 1, ""),
    (480, 5, 1, 14, 2, 2, ""),
    (672, 5, 1, 14, 2, 2, ""),
    (672, 5, 2, 14, 1, 2, ""),
    (1152, 5, 1, 7, 2, 2, ""),
    (1152, 3, 1, 7, 1, 1, ""),
];

/// (input channels, expanded channels, input side, kernel, stride,
/// padding before, after) of the fused expansions: the three fused on any
/// CPU, then some of those fused where the streamed route runs.
const EXPAND_SHAPES: &[(usize, usize, usize, usize, usize, usize, usize)] = &[
    (16, 96, 112, 3, 2, 0, 1),
    (24, 144, 56, 3, 1, 1, 1),
    (24, 144, 56, 5, 2, 1, 2),
    (40, 240, 28, 5, 1, 2, 2),
    (80, 480, 14, 3, 1, 1, 1),
    (112, 672, 14, 5, 1, 2, 2),
];

/// Timed repetitions per shape; the median is reported.
const REPEATS: usize = 9;
/// Minimum length of one timed repetition.
const SPAN: Duration = Duration::from_millis(15);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let filter = args
        .iter()
        .position(|a| a == "--filter")
        .and_then(|i| args.get(i + 1).cloned());
    if std::env::var("ONLY_EXPAND").is_ok() {
        for _ in 0..3 {
            expand_table();
        }
        return;
    }
    println!(
        "{:>5} {:>5} {:>4}  {:<24} {:>9} {:>9} {:>8}",
        "cin", "cout", "side", "layer", "us/call", "GFMA/s", "of peak"
    );
    let mut shares = Vec::new();
    for &(cin, cout, side, what) in SHAPES {
        if filter
            .as_deref()
            .is_some_and(|f| f != format!("{cin}:{cout}:{side}"))
        {
            continue;
        }
        let (seconds, share) = time_shape(cin, cout, side);
        let fma = (cin * cout * side * side) as f64;
        println!(
            "{cin:>5} {cout:>5} {side:>4}  {what:<24} {:>9.1} {:>9.1} {:>7.0}%",
            seconds * 1e6,
            fma / seconds / 1e9,
            share * 100.0
        );
        shares.push(share);
    }
    if let Some(share) = median(shares) {
        println!("median share of peak: {:.0}%", share * 100.0);
    }
    if filter.is_none() {
        depthwise_table();
        expand_table();
    }
}

/// Microseconds per call of every fused expansion on every available route.
fn expand_table() {
    let routes: Vec<Route> = [Route::Chunks, Route::Streamed]
        .into_iter()
        .filter(|route| route.is_available())
        .collect();
    let leading = format!(
        "{:>5} {:>5} {:>4} {:>2} {:>2}",
        "cin", "cout", "side", "k", "s"
    );
    print_header(&leading, &routes, 14);
    let relu6 = Some((0f32.to_bits(), 6f32.to_bits()));
    for &(cin, cout, side, kernel, stride, before, after) in EXPAND_SHAPES {
        let pixels = side * side;
        let geometry = Geometry::padded(
            cout,
            (kernel, stride),
            (side, side),
            (before, before, after, after),
        );
        let out = geometry.out_h;
        let weights: Vec<f32> = (0..cin * cout).map(|i| pseudo_random(i) * 0.1).collect();
        let bias: Vec<f32> = (0..cout).map(pseudo_random).collect();
        let expand = FastPointwise {
            weights: Arc::new(PackedWeights::new(&weights, &bias, cout, cin, pixels)),
            clamp: relu6,
            residual: false,
            pixels,
            output_shape: tvec![cout, side, side],
        };
        let filters: Vec<f32> = (0..cout * kernel * kernel)
            .map(|i| pseudo_random(i + 3))
            .collect();
        let depthwise = FastDepthwise {
            clamp: relu6,
            ..FastDepthwise::new(
                geometry,
                Tensor::from_shape(&[cout, kernel, kernel], &filters).expect("shape"),
                Tensor::from_shape(&[cout], &bias).expect("shape"),
                tvec![cout, out, out],
            )
            .expect("shapes fit")
        };
        let op = FastExpandDepthwise::new(&expand, &depthwise).expect("shapes fit");
        let input: Vec<f32> = (0..cin * pixels).map(|i| pseudo_random(i + 7)).collect();
        let mut output = vec![0f32; cout * out * out];
        print!("{cin:>5} {cout:>5} {side:>4} {kernel:>2} {stride:>2}");
        for &route in &routes {
            let seconds = time_calls(|| op.run(route, &input, &mut output).expect("shapes fit"));
            print!(" {:>14.1}", seconds * 1e6);
        }
        println!();
    }
}

/// Microseconds per call of every depthwise shape on every available path.
fn depthwise_table() {
    let paths: Vec<Path> = Path::ALL
        .into_iter()
        .filter(|path| path.is_available())
        .collect();
    let leading = format!(
        "{:>5} {:>2} {:>2} {:>4}  {:<12}",
        "ch", "k", "s", "side", "layer"
    );
    print_header(&leading, &paths, 20);
    for &(channels, kernel, stride, side, before, after, what) in DEPTHWISE_SHAPES {
        let geo = Geometry::padded(
            channels,
            (kernel, stride),
            (side, side),
            (before, before, after, after),
        );
        let input: Vec<f32> = (0..geo.input_len()).map(pseudo_random).collect();
        let weights: Vec<f32> = (0..channels * kernel * kernel)
            .map(|i| pseudo_random(i + 3))
            .collect();
        let bias: Vec<f32> = (0..channels).map(pseudo_random).collect();
        let mut output = vec![0f32; geo.output_len()];
        print!("{channels:>5} {kernel:>2} {stride:>2} {side:>4}  {what:<12}");
        for &path in &paths {
            let seconds = time_calls(|| {
                depthwise_on(
                    path,
                    &geo,
                    &input,
                    &weights,
                    &bias,
                    Some((0.0, 6.0)),
                    &mut output,
                )
            });
            print!(" {:>20.1}", seconds * 1e6);
        }
        println!();
    }
}

/// A table's header after a blank line: the `leading` columns, then one
/// "`variant` us" column `width` wide per kernel variant timed.
fn print_header<T: std::fmt::Debug>(leading: &str, variants: &[T], width: usize) {
    println!();
    print!("{leading}");
    for variant in variants {
        print!(" {:>width$}", format!("{variant:?} us"));
    }
    println!();
}

/// Median seconds per call of `call`, repeated for [`SPAN`] per repetition.
fn time_calls(mut call: impl FnMut()) -> f64 {
    call();
    let seconds: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let started = Instant::now();
            let mut calls = 0u32;
            while started.elapsed() < SPAN {
                call();
                calls += 1;
            }
            started.elapsed().as_secs_f64() / f64::from(calls)
        })
        .collect();
    median(seconds).expect("repeats")
}

/// Median seconds per call, and the median share of the FMA peak timed
/// just before each repetition.
fn time_shape(cin: usize, cout: usize, side: usize) -> (f64, f64) {
    let pixels = side * side;
    let weights: Vec<f32> = (0..cin * cout).map(|i| pseudo_random(i) * 0.1).collect();
    let bias: Vec<f32> = (0..cout).map(pseudo_random).collect();
    let input: Vec<f32> = (0..cin * pixels).map(|i| pseudo_random(i + 7)).collect();
    let packed = PackedWeights::new(&weights, &bias, cout, cin, pixels);
    let conv = Pointwise {
        weights: &packed,
        pixels,
        input: &input,
        clamp: Some((0.0, 6.0)),
        residual: None,
    };
    let mut output = vec![0f32; cout * pixels];
    pointwise(&conv, &mut output);
    let fma = (cin * cout * pixels) as f64;
    let mut seconds = Vec::new();
    let mut shares = Vec::new();
    for _ in 0..REPEATS {
        let peak = peak::fma_per_second();
        let started = Instant::now();
        let mut calls = 0u32;
        while started.elapsed() < SPAN {
            pointwise(&conv, &mut output);
            calls += 1;
        }
        let per_call = started.elapsed().as_secs_f64() / f64::from(calls);
        seconds.push(per_call);
        if let Some(peak) = peak {
            shares.push(fma / per_call / peak);
        }
    }
    std::hint::black_box(&output);
    (
        median(seconds).expect("repeats"),
        median(shares).unwrap_or(f64::NAN),
    )
}

fn pseudo_random(i: usize) -> f32 {
    let x = (i as u32).wrapping_mul(2_654_435_761) >> 8;
    x as f32 / (1u32 << 24) as f32 - 0.5
}

/// The bench module's median (its field says ms; the rule holds for any
/// unit).
fn median(values: Vec<f64>) -> Option<f64> {
    Summary::of(&values).map(|summary| summary.median_ms)
}

#[cfg(target_arch = "x86_64")]
mod peak {
    use std::arch::x86_64::*;
    use std::time::Instant;

    /// Independent FMA chains: more than the 2 ports x 4 cycles of latency
    /// needs, few enough that the compiler keeps every one in a register.
    const CHAINS: usize = 12;

    /// Lane FMAs per second of [`CHAINS`] independent AVX-512 (else AVX2)
    /// FMA chains.
    pub fn fma_per_second() -> Option<f64> {
        let lanes = if is_x86_feature_detected!("avx512f") {
            16
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            8
        } else {
            return None;
        };
        const ROUNDS: u64 = 1_000_000;
        let started = Instant::now();
        // SAFETY: the features each loop needs were detected above.
        let sum = unsafe {
            if lanes == 16 {
                chains_avx512(ROUNDS)
            } else {
                chains_avx2(ROUNDS)
            }
        };
        std::hint::black_box(sum);
        let seconds = started.elapsed().as_secs_f64();
        Some((ROUNDS * CHAINS as u64 * lanes) as f64 / seconds)
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn chains_avx512(rounds: u64) -> f32 {
        let x = _mm512_set1_ps(std::hint::black_box(0.9999));
        let w = _mm512_set1_ps(std::hint::black_box(0.0001));
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..rounds {
            for a in &mut acc {
                *a = _mm512_fmadd_ps(*a, x, w);
            }
        }
        acc.iter().map(|a| _mm512_reduce_add_ps(*a)).sum()
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn chains_avx2(rounds: u64) -> f32 {
        let x = _mm256_set1_ps(std::hint::black_box(0.9999));
        let w = _mm256_set1_ps(std::hint::black_box(0.0001));
        let mut acc = [_mm256_setzero_ps(); CHAINS];
        for _ in 0..rounds {
            for a in &mut acc {
                *a = _mm256_fmadd_ps(*a, x, w);
            }
        }
        let mut lanes = [0f32; 8];
        acc.iter()
            .map(|a| {
                _mm256_storeu_ps(lanes.as_mut_ptr(), *a);
                lanes.iter().sum::<f32>()
            })
            .sum()
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod peak {
    /// No reference loop off x86-64: the share prints as NaN.
    pub fn fma_per_second() -> Option<f64> {
        None
    }
}
