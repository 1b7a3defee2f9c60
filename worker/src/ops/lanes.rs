//! How an activation (`[channels][pixels]`) lies in memory between our
//! kernels: tract's NCHW planes, or sixteen channels to a register, the
//! layout the AVX-512 channels-in-lanes kernels compute in. Handing the
//! lanes layout from one kernel to the next skips the transposes into and
//! out of planes (`ops::lanes_block`).

/// Channels per group of the lanes layout: one AVX-512 register of f32.
pub const LANES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[channel][pixel]`.
    Planes,
    /// `[channel / 16][pixel][channel % 16]`, the last group padded to
    /// sixteen channels. The padding lanes hold junk that no kernel reads
    /// into a real channel. Only the x86-64 (AVX-512) kernels use it.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Lanes,
}

impl Layout {
    /// Floats an activation of `channels` x `pixels` takes.
    pub fn len(self, channels: usize, pixels: usize) -> usize {
        match self {
            Layout::Planes => channels * pixels,
            Layout::Lanes => channels.div_ceil(LANES) * LANES * pixels,
        }
    }
}

/// `planes` (`[channels][pixels]`) in the lanes layout, the padding lanes
/// zero: how a depthwise convolution's filters (`[channels][taps]`) are
/// kept, one register per tap for each group of sixteen channels.
pub fn planes_to_lanes(planes: &[f32], channels: usize, pixels: usize) -> Vec<f32> {
    assert_eq!(planes.len(), channels * pixels);
    let mut lanes = vec![0f32; Layout::Lanes.len(channels, pixels)];
    for (c, plane) in planes.chunks_exact(pixels.max(1)).enumerate() {
        let group = &mut lanes[(c / LANES) * LANES * pixels..][..LANES * pixels];
        for (p, &value) in plane.iter().enumerate() {
            group[p * LANES + c % LANES] = value;
        }
    }
    lanes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_go_into_lanes_with_zero_padding() {
        // 18 channels of 2 pixels: channel c, pixel p holds 10 c + p.
        let planes: Vec<f32> = (0..18)
            .flat_map(|c| (0..2).map(move |p| (10 * c + p) as f32))
            .collect();
        let lanes = planes_to_lanes(&planes, 18, 2);
        assert_eq!(lanes.len(), 2 * LANES * 2);
        for c in 0..2 * LANES {
            for p in 0..2 {
                let want = if c < 18 { (10 * c + p) as f32 } else { 0.0 };
                assert_eq!(lanes[(c / LANES) * LANES * 2 + p * LANES + c % LANES], want);
            }
        }
    }

    #[test]
    fn lanes_pad_the_last_group() {
        assert_eq!(Layout::Planes.len(20, 49), 20 * 49);
        assert_eq!(Layout::Lanes.len(20, 49), 32 * 49);
        assert_eq!(Layout::Lanes.len(1152, 49), 1152 * 49);
    }
}
