//! The normalizer alone: JSON:API pages (bytes) to Arrow tables, in MB of JSON per second on
//! one core. Pages come from the shared workload when `TIDEWAY_BENCH_PAGES` names a folder of
//! `page-*.json` files (e.g. ../shared/bench/data/small/kustomer/day1/conversations), else
//! from the golden fixtures.
//!
//! ```sh
//! TIDEWAY_BENCH_PAGES=../shared/bench/data/small/kustomer/day1/customers \
//!   cargo bench -p tideway-extract --bench normalize
//! ```

use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use tideway_extract::jsonapi;
use tideway_extract::normalize::{NormalizeOptions, Normalizer};

fn pages() -> (String, Vec<Vec<u8>>) {
    if let Some(dir) = std::env::var_os("TIDEWAY_BENCH_PAGES") {
        let dir = Path::new(&dir);
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("TIDEWAY_BENCH_PAGES is a folder")
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files.truncate(200);
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        return (
            name,
            files.iter().map(|f| std::fs::read(f).unwrap()).collect(),
        );
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/normalize/kustomer_conversations.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    let page = serde_json::json!({ "data": doc["records"] });
    let bytes = serde_json::to_vec(&page).unwrap();
    ("fixture".into(), vec![bytes; 100])
}

fn normalize(c: &mut Criterion) {
    let (name, pages) = pages();
    let bytes: usize = pages.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("normalize");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.sample_size(10);
    group.bench_function(format!("jsonapi_pages/{name}"), |b| {
        b.iter(|| {
            let mut n =
                Normalizer::new("records", NormalizeOptions::default()).with_primary_key("id");
            let mut rows = 0;
            for page in &pages {
                let mut doc: Value = serde_json::from_slice(page).unwrap();
                let Value::Array(records) = doc["data"].take() else {
                    panic!("a page without data")
                };
                for record in records {
                    n.push(&jsonapi::unwrap(record)).unwrap();
                }
                if n.buffered_rows() > 20_000 {
                    rows += n.finish().iter().map(|t| t.batch.num_rows()).sum::<usize>();
                }
            }
            rows + n.finish().iter().map(|t| t.batch.num_rows()).sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, normalize);
criterion_main!(benches);
