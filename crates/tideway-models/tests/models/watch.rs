//! `compile --watch`: after an edit only what it reaches is planned again, and the result is
//! the one a cold compile gives.

use std::path::Path;

use anyhow::Result;
use tideway_models::watch::Watcher;
use tideway_models::{Compilation, Models, compile::compile};

fn write(dir: &Path, file: &str, text: &str) {
    let path = dir.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn schemas(c: &Compilation) -> Vec<String> {
    c.order
        .iter()
        .map(|&i| {
            let m = &c.models.models[i];
            match &c.compiled[i] {
                Some(cm) => format!("{}: {:?}", m.name, cm.schema.fields()),
                None => format!("{}: not compiled", m.name),
            }
        })
        .collect()
}

async fn cold(dir: &Path) -> Result<Compilation> {
    let (models, errors) = Models::load(dir);
    Ok(compile(models, errors, None).await?)
}

#[tokio::test]
async fn an_edit_replans_only_what_it_reaches_and_matches_a_cold_compile() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    write(dir, "models/s/a.sql", "select 1 as id, 'x' as name");
    write(
        dir,
        "models/s/b.sql",
        "select id, upper(name) as name from s.a",
    );
    write(dir, "models/s/c.sql", "select count(*) as n from s.b");
    write(dir, "models/s/other.sql", "select 2 as id");
    let mut w = Watcher::new(dir);
    w.scan();
    let first = w.check(None).await?;
    assert!(first.is_ok());
    assert_eq!(w.planned(), 4);
    assert!(w.scan().is_empty(), "nothing changed");

    // Same columns: c alone is planned again.
    write(
        dir,
        "models/s/c.sql",
        "select count(*) as n from s.b where id > 0",
    );
    let changes = w.scan();
    assert_eq!(
        changes.changed,
        vec![Path::new("models/s/c.sql").to_path_buf()]
    );
    let c = w.check(None).await?;
    assert_eq!(w.planned(), 1);
    assert_eq!(schemas(&c), schemas(&cold(dir).await?));

    // a gains a column: a and b are planned again; b's columns do not change, so c is not.
    write(
        dir,
        "models/s/a.sql",
        "select 1 as id, 'x' as name, 3.5 as score",
    );
    w.scan();
    let c = w.check(None).await?;
    assert_eq!(w.planned(), 2);
    assert_eq!(schemas(&c), schemas(&cold(dir).await?));

    // a loses the column b reads: b fails, c is not checked, as in a cold compile.
    write(dir, "models/s/a.sql", "select 1 as id");
    w.scan();
    let c = w.check(None).await?;
    assert_eq!(c.diagnostics.len(), 1, "{:?}", c.diagnostics);
    assert!(
        c.diagnostics[0].message.contains("name"),
        "{}",
        c.diagnostics[0]
    );
    assert_eq!(c.not_checked.len(), 1);
    let again = cold(dir).await?;
    assert_eq!(
        c.diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        again
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    // Fixed: everything downstream comes back.
    write(dir, "models/s/a.sql", "select 1 as id, 'y' as name");
    w.scan();
    let c = w.check(None).await?;
    assert!(c.is_ok());
    assert_eq!(schemas(&c), schemas(&cold(dir).await?));

    // A new file, and a removed one that another model reads.
    write(dir, "models/s/d.sql", "select id from s.other");
    let changes = w.scan();
    assert_eq!(
        changes.added,
        vec![Path::new("models/s/d.sql").to_path_buf()]
    );
    let c = w.check(None).await?;
    assert!(c.is_ok() && c.get("s.d").is_some());
    std::fs::remove_file(dir.join("models/s/other.sql"))?;
    let changes = w.scan();
    assert_eq!(
        changes.removed,
        vec![Path::new("models/s/other.sql").to_path_buf()]
    );
    let c = w.check(None).await?;
    assert!(
        c.diagnostics
            .iter()
            .any(|d| d.message.contains("unknown table `s.other`")),
        "{:?}",
        c.diagnostics
    );
    Ok(())
}
