//! The normalizer against golden files: nested JSON in, tables out.

use serde_json::Value;
use tideway_extract::jsonapi;
use tideway_extract::normalize::{NormalizeOptions, Normalizer};

use crate::golden;

/// Runs every `tests/golden/normalize/*.json` through the normalizer in two batches (the
/// records split in half, to check that types carry over between batches) and compares the
/// tables with `*.out`.
#[test]
fn nested_json_to_tables_matches_the_golden_files() {
    let dir = golden::dir("normalize");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 3, "golden inputs are missing");
    for input in inputs {
        let doc: Value = serde_json::from_slice(&std::fs::read(&input).unwrap()).unwrap();
        let options = &doc["options"];
        let mut normalizer = Normalizer::new(
            options["table"].as_str().unwrap(),
            NormalizeOptions {
                max_depth: options["max_depth"].as_u64().unwrap_or(5) as usize,
                ..NormalizeOptions::default()
            },
        );
        if let Some(key) = options["primary_key"].as_str() {
            normalizer = normalizer.with_primary_key(key);
        }
        let records = doc["records"].as_array().unwrap();
        let half = records.len().div_ceil(2);
        let mut out = String::new();
        for (n, part) in records.chunks(half).enumerate() {
            for record in part {
                let record = if options["jsonapi"].as_bool() == Some(true) {
                    jsonapi::unwrap(record.clone())
                } else {
                    record.clone()
                };
                normalizer.push(&record).unwrap();
            }
            for table in normalizer.finish() {
                out += &golden::render(&format!("batch {n}: {}", table.table), &table.batch);
                out.push('\n');
            }
        }
        golden::check(&input.with_extension("out"), &out);
    }
}

#[test]
fn a_record_without_its_primary_key_is_refused_by_name() {
    let mut n = Normalizer::new("customers", NormalizeOptions::default()).with_primary_key("id");
    let err = n.push(&serde_json::json!({"name": "x"})).unwrap_err();
    assert_eq!(
        err.to_string(),
        "record has no usable primary key `id` (found nothing); every record of `customers` needs one: set `primary_key` to a field every record has"
    );
    let err = n.push(&serde_json::json!([1])).unwrap_err();
    assert!(err.to_string().contains("not a list"), "{err}");
}

#[test]
fn child_ids_are_stable_across_reloads() {
    let record =
        serde_json::json!({"id": 7, "items": [{"sku": "a", "parts": [1, 2]}, {"sku": "b"}]});
    let ids = |n: &mut Normalizer| {
        n.push(&record).unwrap();
        n.finish()
            .into_iter()
            .map(|t| {
                let ids = t.batch.column_by_name("_tideway_id").unwrap();
                format!("{}:{:?}", t.table, ids)
            })
            .collect::<Vec<_>>()
    };
    let mut first = Normalizer::new("orders", NormalizeOptions::default()).with_primary_key("id");
    let mut second = Normalizer::new("orders", NormalizeOptions::default()).with_primary_key("id");
    let a = ids(&mut first);
    assert_eq!(a.len(), 3, "{a:?}");
    assert_eq!(a, ids(&mut second));
    // Every child row points at the root.
    second.push(&record).unwrap();
    let tables = second.finish();
    let root = tables[0]
        .batch
        .column_by_name("_tideway_id")
        .unwrap()
        .clone();
    let grand = &tables[2].batch;
    assert_eq!(tables[2].table, "orders__items__parts");
    {
        let col = "_tideway_root_id";
        let roots = grand.column_by_name(col).unwrap();
        assert_eq!(
            format!("{:?}", roots.slice(0, 1)),
            format!("{:?}", root.slice(0, 1))
        );
    }
}
