//! Sample grids as 8-bit grayscale PNGs (written atomically).

use std::path::Path;

use crate::{Error, Result};

/// Writes `n` single-channel `side x side` images (values in [-1, 1], row-major, concatenated)
/// as a grid with `cols` columns and a 2-pixel gray border.
pub fn write_grid(path: &Path, images: &[f32], side: usize, cols: usize) -> Result<()> {
    let per = side * side;
    if per == 0 || cols == 0 || !images.len().is_multiple_of(per) || images.is_empty() {
        return Err(Error::shape(
            "grid",
            format!("{} values are not whole {side}x{side} images", images.len()),
        ));
    }
    let n = images.len() / per;
    let rows = n.div_ceil(cols);
    let gap = 2;
    let (w, h) = (cols * (side + gap) + gap, rows * (side + gap) + gap);
    let mut pixels = vec![128u8; w * h];
    for (k, img) in images.chunks(per).enumerate() {
        let (r, c) = (k / cols, k % cols);
        for y in 0..side {
            for x in 0..side {
                let v = ((img[y * side + x] + 1.0) * 127.5)
                    .round()
                    .clamp(0.0, 255.0) as u8;
                pixels[(gap + r * (side + gap) + y) * w + gap + c * (side + gap) + x] = v;
            }
        }
    }
    let mut bytes = vec![];
    {
        let mut enc = png::Encoder::new(&mut bytes, w as u32, h as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| Error::File {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        writer.write_image_data(&pixels).map_err(|e| Error::File {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::File {
            path: dir.display().to_string(),
            detail: e.to_string(),
        })?;
    }
    super::weights::write_atomic(path, &bytes)
}
