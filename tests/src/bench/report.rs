//! The benchmark report: a markdown table on stdout and the same figures as JSON.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub section: String,
    pub metric: String,
    /// NaN when the figure is not available (printed `n/a`, `null` in JSON).
    pub value: f64,
    pub unit: String,
    pub note: String,
}

impl Row {
    pub fn new(
        section: &str,
        metric: &str,
        value: f64,
        unit: &str,
        note: impl Into<String>,
    ) -> Self {
        Self {
            section: section.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
            note: note.into(),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub machine: String,
    pub command: String,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = format!("Machine: {}\nCommand: `{}`\n\n", self.machine, self.command);
        out.push_str("| section | metric | value | unit | note |\n|---|---|---:|---|---|\n");
        for r in &self.rows {
            let v = if !r.value.is_finite() {
                "n/a".to_string()
            } else if r.value.abs() >= 100.0 {
                format!("{:.0}", r.value)
            } else {
                format!("{:.2}", r.value)
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                r.section, r.metric, v, r.unit, r.note
            ));
        }
        out
    }
}

/// Percentile of sorted samples (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    format!("{cores} cores, {cpu}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 50.0);
        assert_eq!(percentile(&s, 99.0), 99.0);
        assert_eq!(percentile(&s, 100.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
