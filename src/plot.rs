//! Plots (plotters, bitmap backend, bundled DejaVu Sans Mono): training curves (PNG) and
//! spectrograms (PNG, JPEG or BMP).

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::model::checkpoint::write_atomic;
use crate::{Error, Result};

const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSansMono.ttf");
const FAMILY: &str = "wavemamba-mono";

fn ensure_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// A plotting failure as [`Error::Io`] naming `path`, with a readable reason.
fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.to_owned(),
        source: std::io::Error::other(plot_reason(&e.to_string())),
    }
}

/// The reason in a plotters error. Its bitmap backend prints its causes in Debug form (e.g.
/// `Drawing backend error: ImageError(IoError(Os { code: 28, kind: StorageFull, message: "No
/// space left on device" }))`; its error type is not exported, so the text is all there is): an
/// OS error becomes `No space left on device (os error 28)`, anything else loses the wrappers.
fn plot_reason(text: &str) -> String {
    // The text after `name` up to `end`.
    let field = |name: &str, end: char| {
        let rest = &text[text.find(name)? + name.len()..];
        Some(rest[..rest.find(end)?].to_owned())
    };
    if let Some(message) = field("message: \"", '"') {
        return match field("code: ", ',') {
            Some(code) => format!("{message} (os error {code})"),
            None => message,
        };
    }
    let inner = text.strip_prefix("Drawing backend error: ").unwrap_or(text);
    format!("cannot draw the image: {inner}")
}

/// One line of a chart: a label and (x, y) points.
pub struct Series<'a> {
    pub label: &'a str,
    pub points: &'a [(f64, f64)],
    pub color: RGBColor,
}

/// Draws line series on one chart and writes a PNG atomically.
///
/// # Errors
/// [`Error::Io`] when the file cannot be written; empty input gives an empty chart.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()> {
    ensure_font();
    let all = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let target = crate::audio::output::resolve_link(path)?;
    write_atomic(&target, |tmp| {
        // plotters picks the encoder from the extension: give the temporary file a .png name.
        let png = tmp.with_extension("png");
        {
            let root = BitMapBackend::new(&png, (900, 500)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, (FAMILY, 22))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(|e| plot_err(path, e))?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .label_style((FAMILY, 14))
                .draw()
                .map_err(|e| plot_err(path, e))?;
            for s in series {
                let color = s.color;
                chart
                    .draw_series(LineSeries::new(
                        s.points.iter().copied(),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| plot_err(path, e))?
                    .label(s.label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .label_font((FAMILY, 14))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| plot_err(path, e))?;
            root.present().map_err(|e| plot_err(path, e))?;
        }
        std::fs::rename(&png, tmp).map_err(|source| Error::Io {
            path: tmp.to_owned(),
            source,
        })
    })
}

/// Training curves from a run's `metrics.jsonl`: the training loss and the validation score on one
/// chart at `png` when they share a unit (NLL in bits), else the loss at `png` and the validation
/// score beside it in `valid.png`.
///
/// # Errors
/// [`Error::Io`] if the metrics cannot be read; plotting errors.
pub fn loss_curves(metrics: &Path, png: &Path, metric: &crate::train::Metric) -> Result<()> {
    let text = std::fs::read_to_string(metrics).map_err(|source| Error::Io {
        path: metrics.to_owned(),
        source,
    })?;
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for v in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        let Some(step) = v["step"].as_f64() else {
            continue;
        };
        if let Some(l) = v[metric.loss_key].as_f64() {
            train.push((step, l));
        }
        if let Some(l) = v[metric.valid_key].as_f64() {
            valid.push((step, l));
        }
    }
    let train = Series {
        label: "train",
        points: &train,
        color: RGBColor(31, 119, 180),
    };
    let valid = Series {
        label: "validation",
        points: &valid,
        color: RGBColor(214, 39, 40),
    };
    if metric.loss_unit == metric.valid_unit {
        return line_chart(
            png,
            "wavemamba training",
            "step",
            metric.loss_unit,
            &[train, valid],
        );
    }
    line_chart(
        png,
        "wavemamba training",
        "step",
        metric.loss_unit,
        &[train],
    )?;
    line_chart(
        &png.with_file_name("valid.png"),
        "wavemamba validation",
        "step",
        metric.valid_unit,
        &[valid],
    )
}

/// Log-magnitude spectrogram (512-point STFT, Hann window, hop 128; for long clips the power of
/// neighbouring frames averaged into at most 1000 columns) of mono `samples` as an image, with a vertical line where the prompt ends (`marker_s`, seconds) when given. The
/// format follows `path`'s extension (PNG, JPEG or BMP); the file appears complete or not at all,
/// and a symbolic link at `path` is written through.
///
/// # Errors
/// [`Error::InvalidArgument`] for another extension; [`Error::Io`] (the image could not be
/// written).
pub fn spectrogram(
    path: &Path,
    samples: &[f32],
    sample_rate: u32,
    marker_s: Option<f64>,
    title: &str,
) -> Result<()> {
    use crate::audio::output::{OutputKind, Outputs};
    let mut outputs = Outputs::new();
    let i = outputs.add("spectrogram", path, OutputKind::Image)?;
    spectrogram_file(path, outputs.tmp(i), samples, sample_rate, marker_s, title)?;
    outputs.commit().map(drop)
}

/// [`spectrogram`] written straight to `file` (a temporary file whose extension picks the image
/// format, renamed by the caller); errors name `name`.
///
/// # Errors
/// [`Error::Io`] naming `name`.
pub fn spectrogram_file(
    name: &Path,
    file: &Path,
    samples: &[f32],
    sample_rate: u32,
    marker_s: Option<f64>,
    title: &str,
) -> Result<()> {
    use tch::{Kind, Tensor};
    const N_FFT: i64 = 512;
    const HOP: i64 = 128;
    // A clip shorter than one window is drawn as one frame of it, zero-padded.
    let mut padded = samples.to_vec();
    padded.resize(samples.len().max(N_FFT as usize), 0.0);
    ensure_font();
    let window = Tensor::hann_window(N_FFT, (Kind::Float, tch::Device::Cpu));
    let spec = Tensor::from_slice(&padded).stft(
        N_FFT,
        HOP,
        N_FFT,
        Some(&window),
        false,
        true,
        true,
        false,
    ); // (F, T) complex
    let mut power = spec.abs().square(); // (F, T)
                                         // More frames than the image has columns: average the power of neighbouring frames, so that a
                                         // long clip draws MAX_COLUMNS cells per row, not one per frame (an hour had 28 M cells).
    const MAX_COLUMNS: i64 = 1000;
    if power.size()[1] > MAX_COLUMNS {
        power = power
            .unsqueeze(0)
            .adaptive_avg_pool1d(MAX_COLUMNS)
            .squeeze_dim(0);
    }
    let db = (power + 1e-10).log10() * 10.0; // (F, columns)
    let (bins, frames) = (db.size()[0] as usize, db.size()[1] as usize);
    let values = Vec::<f32>::try_from(db.reshape([-1]))?;
    let top = values.iter().copied().fold(f32::MIN, f32::max);
    let floor = top - 80.0;
    let duration = samples.len() as f64 / sample_rate as f64;
    let nyquist = sample_rate as f64 / 2.0 / 1000.0;
    let err = |e| plot_err(name, e);
    let root = BitMapBackend::new(file, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 20))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..duration, 0.0..nyquist)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("time (s)")
        .y_desc("kHz")
        .label_style((FAMILY, 13))
        .draw()
        .map_err(err)?;
    let (dt, df) = (duration / frames as f64, nyquist / bins as f64);
    let cells = (0..frames)
        .flat_map(|t| (0..bins).map(move |f| (t, f)))
        .map(|(t, f)| {
            let v = ((values[f * frames + t] - floor) / 80.0).clamp(0.0, 1.0) as f64;
            let color = heat(v);
            Rectangle::new(
                [
                    (t as f64 * dt, f as f64 * df),
                    ((t + 1) as f64 * dt, (f + 1) as f64 * df),
                ],
                color.filled(),
            )
        });
    chart.draw_series(cells).map_err(err)?;
    if let Some(m) = marker_s {
        chart
            .draw_series(LineSeries::new(
                [(m, 0.0), (m, nyquist)],
                WHITE.stroke_width(2),
            ))
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// A dark-blue → magenta → yellow colour ramp for v in [0, 1].
fn heat(v: f64) -> RGBColor {
    let lerp = |a: f64, b: f64, t: f64| (a + (b - a) * t).round() as u8;
    if v < 0.5 {
        let t = v / 0.5;
        RGBColor(
            lerp(10.0, 180.0, t),
            lerp(10.0, 30.0, t),
            lerp(60.0, 120.0, t),
        )
    } else {
        let t = (v - 0.5) / 0.5;
        RGBColor(
            lerp(180.0, 250.0, t),
            lerp(30.0, 230.0, t),
            lerp(120.0, 60.0, t),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{plot_reason, spectrogram};

    #[test]
    fn a_long_clip_is_pooled_into_the_image_columns() {
        // 2000 frames of hop 128: more than the 1000 columns, so neighbouring frames are pooled.
        let x: Vec<f32> = (0..2000 * 128)
            .map(|i| (i as f32 * 0.3).sin() * 0.5)
            .collect();
        let png = std::env::temp_dir().join(format!("wm-spec-{}.png", std::process::id()));
        spectrogram(&png, &x, 16_000, Some(4.0), "long").unwrap();
        let bytes = std::fs::read(&png).unwrap();
        std::fs::remove_file(&png).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    }

    #[test]
    fn plotters_debug_text_becomes_a_reason() {
        let text = "Drawing backend error: ImageError(IoError(Os { code: 28, kind: StorageFull, \
                    message: \"No space left on device\" }))";
        assert_eq!(plot_reason(text), "No space left on device (os error 28)");
        assert_eq!(
            plot_reason("Drawing backend error: InvalidBuffer"),
            "cannot draw the image: InvalidBuffer"
        );
    }
}
