//! The shipped monitoring (config/monitoring/) against a live gateway: every metric the
//! alerting rules, their unit tests and the Grafana dashboard use exists in its `/metrics`.
//! (promtool and systemd-analyze check the files themselves: tests/ops/check.sh.)

/// Metric names a file uses: every `jumpgate_…` word.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("jumpgate_") {
        let start = i + at;
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(text.len() - start);
        // A word of its own: not the tail of a longer identifier.
        let alone =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if alone {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_and_dashboard_use_is_exported() {
    let env = super::status::start().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/monitoring");
    let (_, exported) = env.gw.admin_get("/metrics").await;
    // A family as the exposition declares it; samples add _total, _bucket, _sum, _count.
    let families: Vec<&str> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let exists = |name: &str| {
        families.iter().any(|f| {
            name == *f
                || ["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(f))
        })
    };
    let mut checked = 0;
    for file in ["alerts.yml", "alerts.test.yml", "grafana-dashboard.json"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let names = metric_names(&text);
        assert!(!names.is_empty(), "{file} names no jumpgate metric");
        for name in names {
            assert!(
                exists(&name),
                "{file} uses {name}, which /metrics does not export:\n{exported}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} metric names found");
}

#[test]
fn metric_names_are_read_as_whole_words() {
    let names =
        metric_names("rate(jumpgate_requests_total{x=\"y\"}[5m]) / not_jumpgate_x + jumpgate_up");
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["jumpgate_requests_total", "jumpgate_up"]
    );
}
