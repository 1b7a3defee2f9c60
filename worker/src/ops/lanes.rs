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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_pad_the_last_group() {
        assert_eq!(Layout::Planes.len(20, 49), 20 * 49);
        assert_eq!(Layout::Lanes.len(20, 49), 32 * 49);
        assert_eq!(Layout::Lanes.len(1152, 49), 1152 * 49);
    }
}
