//! Tables, summaries and SVG plots of benchmark results.

use std::fmt::Write as _;
use std::path::Path;

use vlkernels::{Error, Result};

use crate::permute_bench::Row;

fn geomean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut s, mut n) = (0.0, 0usize);
    for x in v {
        s += x.ln();
        n += 1;
    }
    (n > 0).then(|| (s / n as f64).exp())
}

/// Prints the per-case table and a per-suite summary (plain or Markdown).
pub fn print_permute(rows: &[Row], markdown: bool) {
    let numpy = rows.iter().any(|r| r.numpy_gibs.is_some());
    let mut head = vec![
        "case",
        "dtype",
        "MiB",
        "vlk GiB/s",
        "memcpy GiB/s",
        "× memcpy",
        "naive GiB/s",
        "× naive",
    ];
    if numpy {
        head.extend(["NumPy GiB/s", "× NumPy"]);
    }
    head.push("check");
    let mut table: Vec<Vec<String>> = Vec::new();
    for r in rows {
        let mut line = vec![
            r.case.clone(),
            r.dtype.clone(),
            format!("{:.1}", r.mib),
            format!("{:.2}", r.vlk_gibs),
            format!("{:.2}", r.memcpy_gibs),
            format!("{:.2}", r.ratio),
            format!("{:.2}", r.naive_gibs),
            format!("{:.1}", r.vlk_gibs / r.naive_gibs),
        ];
        if numpy {
            match r.numpy_gibs {
                Some(n) => line.extend([format!("{n:.2}"), format!("{:.1}", r.vlk_gibs / n)]),
                None => line.extend(["-".into(), "-".into()]),
            }
        }
        line.push(if r.check { "ok" } else { "FAIL" }.into());
        table.push(line);
    }
    print_table(&head, &table, markdown);
    println!();
    let mut suites: Vec<&str> = rows.iter().map(|r| r.suite.as_str()).collect();
    suites.dedup();
    let mut head = vec![
        "suite",
        "cases",
        "threads",
        "geomean × memcpy",
        "min × memcpy",
        "geomean × naive",
    ];
    if numpy {
        head.push("geomean × NumPy");
    }
    let mut table = Vec::new();
    for s in suites {
        let rs: Vec<&Row> = rows.iter().filter(|r| r.suite == s).collect();
        let mut line = vec![
            s.to_string(),
            rs.len().to_string(),
            rs[0].threads.to_string(),
            format!("{:.3}", geomean(rs.iter().map(|r| r.ratio)).unwrap_or(0.0)),
            format!("{:.3}", rs.iter().map(|r| r.ratio).fold(f64::INFINITY, f64::min)),
            format!(
                "{:.1}",
                geomean(rs.iter().map(|r| r.vlk_gibs / r.naive_gibs)).unwrap_or(0.0)
            ),
        ];
        if numpy {
            let g = geomean(rs.iter().filter_map(|r| r.numpy_gibs.map(|n| r.vlk_gibs / n)));
            line.push(g.map_or("-".into(), |g| format!("{g:.1}")));
        }
        table.push(line);
    }
    print_table(&head, &table, markdown);
}

fn print_table(head: &[&str], rows: &[Vec<String>], markdown: bool) {
    if markdown {
        println!("| {} |", head.join(" | "));
        println!("|{}", head.iter().map(|_| "---|").collect::<String>());
        for r in rows {
            println!("| {} |", r.join(" | "));
        }
        return;
    }
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            if i == 0 {
                let _ = write!(s, "{c}{}  ", " ".repeat(pad));
            } else {
                let _ = write!(s, "{}{c}  ", " ".repeat(pad));
            }
        }
        println!("{}", s.trim_end());
    };
    line(head.to_vec());
    for r in rows {
        line(r.iter().map(|s| s.as_str()).collect());
    }
}

/// One SVG per suite: a bar per case (vlk GiB/s) with each case's memcpy GiB/s as a marker line.
pub fn plot_permute(rows: &[Row], path: &Path) -> Result<()> {
    let mut suites: Vec<&str> = rows.iter().map(|r| r.suite.as_str()).collect();
    suites.dedup();
    for s in suites {
        let rs: Vec<&Row> = rows.iter().filter(|r| r.suite == s).collect();
        let stem = path.file_stem().and_then(|x| x.to_str()).unwrap_or("permute");
        let out = path.with_file_name(format!("{stem}-{s}.svg"));
        std::fs::write(&out, svg_bars(s, &rs)).map_err(|e| Error::io(&out, e))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

fn svg_bars(title: &str, rows: &[&Row]) -> String {
    let (bw, gap, left, top, h) = (14.0, 4.0, 60.0, 40.0, 300.0);
    // Wide enough for the title even with few cases.
    let width = (left + rows.len() as f64 * (bw + gap) + 20.0).max(760.0);
    let ymax = rows.iter().map(|r| r.vlk_gibs.max(r.memcpy_gibs)).fold(1.0, f64::max) * 1.1;
    let y = |v: f64| top + h - v / ymax * h;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{:.0}" font-family="sans-serif" font-size="11">"#,
        top + h + 40.0
    );
    let _ = write!(
        s,
        r#"<text x="{left}" y="20" font-size="14">{title}: GiB/s per case (bars: vlkernels, red ticks: memcpy of the same bytes, {} thread(s))</text>"#,
        rows.first().map_or(0, |r| r.threads)
    );
    for i in 0..=5 {
        let v = ymax * i as f64 / 5.0;
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{width:.0}" y1="{0:.1}" y2="{0:.1}" stroke="#ddd"/><text x="5" y="{1:.1}">{v:.1}</text>"##,
            y(v),
            y(v) + 4.0
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let x = left + i as f64 * (bw + gap);
        let _ = write!(
            s,
            r##"<rect x="{x:.1}" y="{:.1}" width="{bw}" height="{:.1}" fill="#4a7ebb"><title>{}: {:.2} GiB/s ({:.2} × memcpy)</title></rect>"##,
            y(r.vlk_gibs),
            top + h - y(r.vlk_gibs),
            r.case,
            r.vlk_gibs,
            r.ratio
        );
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" x2="{:.1}" y1="{1:.1}" y2="{1:.1}" stroke="#c00" stroke-width="2"/>"##,
            x + bw,
            y(r.memcpy_gibs)
        );
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="8">{}</text>"#,
            x + 3.0,
            top + h + 12.0,
            i + 1
        );
    }
    s.push_str("</svg>\n");
    s
}
