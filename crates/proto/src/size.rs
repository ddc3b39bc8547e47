//! The original backup script's human-readable size, `15.32 MB`, written the same way by the daemon (manifests,
//! logs) and the client (progress, restore summaries).

/// Divides by 1024 while at least 1024, two decimals, B to TB (Python's
/// `f"{size:.2f} {unit}"` in the original backup script).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    #[allow(clippy::cast_precision_loss)] // display only
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    format!("{size:.2} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_match_the_original_backup_script() {
        assert_eq!(human_size(0), "0.00 B");
        assert_eq!(human_size(1023), "1023.00 B");
        assert_eq!(human_size(1024), "1.00 KB");
        assert_eq!(human_size(1536), "1.50 KB");
        assert_eq!(human_size(16_064_184), "15.32 MB");
        assert_eq!(human_size(1 << 30), "1.00 GB");
        assert_eq!(human_size(5 << 40), "5.00 TB");
        assert_eq!(human_size(2048 << 40), "2048.00 TB");
    }
}
