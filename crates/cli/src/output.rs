//! Output files of `generate`: the PNG grid, raw x_0 as safetensors, the JSON report. Every file
//! is written atomically (temporary file + rename), so a failed run leaves nothing behind.

use std::path::Path;

use crate::cli_error::{CliError, CliResult};

/// Checks, before any work, that `path` can be created: its directory exists and it is not a
/// directory itself.
pub fn check_writable(flag: &str, path: &Path) -> CliResult<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(CliError::Usage(format!(
            "{flag} {}: directory {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    if path.is_dir() {
        return Err(CliError::Usage(format!(
            "{flag} {}: is a directory",
            path.display()
        )));
    }
    Ok(())
}

/// Each sample min-max scaled to 0..255 (truncating, as CipherDM's reference `image_u8`).
pub fn to_u8(sample: &[f32]) -> Vec<u8> {
    let (lo, hi) = sample
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let range = hi - lo;
    sample
        .iter()
        .map(|&v| {
            if range > 0.0 {
                ((v - lo) / range * 255.0) as u8
            } else {
                0
            }
        })
        .collect()
}

/// Pixels between tiles of the grid.
const GAP: usize = 2;

/// A PNG with the batch (N, C, H, W), C = 1 (grey) or 3 (RGB), as a near-square grid of tiles.
pub fn grid_png(shape: &[usize], data: &[f32]) -> CliResult<Vec<u8>> {
    let &[n, c, h, w] = shape else {
        return Err(CliError::Other(format!(
            "cannot draw a batch of shape {shape:?}"
        )));
    };
    let color = match c {
        1 => png::ColorType::Grayscale,
        3 => png::ColorType::Rgb,
        _ => {
            return Err(CliError::Usage(format!(
                "cannot write {c}-channel images as PNG (use --raw-out)"
            )))
        }
    };
    let cols = (n as f64).sqrt().ceil().max(1.0) as usize;
    let rows = n.div_ceil(cols).max(1);
    let (gw, gh) = (cols * w + (cols - 1) * GAP, rows * h + (rows - 1) * GAP);
    let mut pixels = vec![0u8; gw * gh * c];
    for (i, sample) in data.chunks_exact(c * h * w).enumerate() {
        let bytes = to_u8(sample);
        let (x0, y0) = ((i % cols) * (w + GAP), (i / cols) * (h + GAP));
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    pixels[((y0 + y) * gw + x0 + x) * c + ch] = bytes[(ch * h + y) * w + x];
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, gw as u32, gh as u32);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| CliError::Other(format!("PNG encoding: {e}")))?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| CliError::Other(format!("PNG encoding: {e}")))?;
    writer
        .finish()
        .map_err(|e| CliError::Other(format!("PNG encoding: {e}")))?;
    Ok(out)
}

pub fn write_file(path: &Path, bytes: &[u8]) -> CliResult<()> {
    Ok(nn::weights::write_atomic(path, bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u8_scaling_matches_the_reference_rule() {
        assert_eq!(to_u8(&[-1.0, 0.0, 1.0, 0.999]), vec![0, 127, 255, 254]);
        assert_eq!(to_u8(&[3.0, 3.0]), vec![0, 0]);
    }

    #[test]
    fn grid_decodes_to_the_tiles() {
        let data: Vec<f32> = (0..3 * 4).map(|i| i as f32).collect();
        let bytes = grid_png(&[3, 1, 2, 2], &data).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        // 3 tiles -> 2 columns x 2 rows of 2x2 with a 2-pixel gap: 6 x 6.
        assert_eq!((info.width, info.height), (6, 6));
        assert_eq!(&buf[..2], &[0, 85]);
        assert!(grid_png(&[1, 4, 2, 2], &[0.0; 16]).is_err());
    }
}
