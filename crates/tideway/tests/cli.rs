//! The `tideway` binary, end to end: each test runs the real binary in a scratch project.

use std::path::Path;
use std::process::{Command, Output};

fn tideway(project: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tideway"))
        .arg("--project")
        .arg(project)
        .args(args)
        .env_remove("TIDEWAY_LOG")
        .output()
        .expect("the tideway binary runs")
}

fn ok(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn err(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "unexpectedly succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn import(project: &Path, file: &Path, table: &str, extra: &[&str]) -> Output {
    let mut args = vec!["lake", "import", file.to_str().unwrap(), "--table", table];
    args.extend_from_slice(extra);
    tideway(project, &args)
}

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .arg("init")
        .arg(dir.path())
        .output()
        .unwrap();
    ok(&out);
    dir
}

#[test]
fn init_scaffolds_a_project_that_works() {
    let dir = project();
    for path in [
        "tideway.toml",
        "sources",
        "models",
        "syncs",
        "transformations",
    ] {
        assert!(dir.path().join(path).exists(), "{path} missing");
    }
    let out = ok(&tideway(dir.path(), &["tables"]));
    assert!(out.contains("0 tables"), "{out}");
    // The example REST source, uncommented, is a valid source file: the check gets as far as
    // connecting.
    let example =
        std::fs::read_to_string(dir.path().join("sources/rest_api.toml.example")).unwrap();
    let text: String = example
        .lines()
        .map(|l| l.strip_prefix("# ").or(l.strip_prefix("#")).unwrap_or(l))
        .filter(|l| !l.starts_with("Any REST API"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("https://api.example.com/v2/", "http://127.0.0.1:9/v2/")
        .replace(
            "requests_per_minute = 600",
            "requests_per_minute = 600\nmax_attempts = 1",
        );
    std::fs::write(dir.path().join("sources/crm.toml"), text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .arg("--project")
        .arg(dir.path())
        .args(["sources", "check"])
        .env("CRM_TOKEN", "t")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAIL  crm") && stdout.contains("failed 1 times, last: cannot connect"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(dir.path().join("sources/crm.toml")).unwrap();
    // A second init refuses to overwrite.
    let again = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .arg("init")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(err(&again).contains("already exists"));
}

#[test]
fn a_malformed_project_file_reports_every_error_with_its_line() {
    let dir = project();
    std::fs::write(
        dir.path().join("tideway.toml"),
        "[project]\nnmae = \"x\"\n\n[lake]\nlocation = 5\n\n[colect]\nport = 8080\n",
    )
    .unwrap();
    let stderr = err(&tideway(dir.path(), &["tables"]));
    assert!(
        stderr.contains("3 problems in the configuration"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tideway.toml:2:1: unknown field `nmae`, expected `name`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tideway.toml:5:12: invalid type: integer `5`, expected a string"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "tideway.toml:7:2: unknown field `colect`, expected one of `project`, `lake`, `collect`"
        ),
        "{stderr}"
    );
}

#[test]
fn an_unknown_table_is_named_with_the_known_ones() {
    let dir = project();
    ok(&tideway(
        dir.path(),
        &["sql", "CREATE TABLE crm.customers AS SELECT 1 AS id"],
    ));
    let stderr = err(&tideway(dir.path(), &["sql", "SELECT * FROM crm.customer"]));
    assert!(
        stderr.contains("table `crm.customer` does not exist (did you mean `crm.customers`?); known tables: crm.customers"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: `tideway tables` lists every table"),
        "{stderr}"
    );
}

#[test]
fn an_unwritable_lake_path_says_so() {
    let dir = project();
    std::fs::write(
        dir.path().join("blocker"),
        "a file where the lake should be",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tideway.toml"),
        "[lake]\nlocation = \"blocker/lake\"\n",
    )
    .unwrap();
    let stderr = err(&tideway(dir.path(), &["tables"]));
    assert!(stderr.contains("cannot use the lake at"), "{stderr}");
    assert!(stderr.contains("blocker/lake"), "{stderr}");
    assert!(
        stderr.contains("set [lake] location in tideway.toml"),
        "{stderr}"
    );
}

#[test]
fn sql_output_formats() {
    let dir = project();
    ok(&tideway(
        dir.path(),
        &[
            "sql",
            "CREATE TABLE s.t AS SELECT * FROM (VALUES (1, 'a'), (2, NULL)) AS v(id, name)",
        ],
    ));
    let csv = ok(&tideway(
        dir.path(),
        &["sql", "--format", "csv", "SELECT * FROM s.t ORDER BY id"],
    ));
    assert_eq!(csv, "id,name\n1,a\n2,\n");
    let json = ok(&tideway(
        dir.path(),
        &["sql", "--format", "json", "SELECT * FROM s.t ORDER BY id"],
    ));
    assert_eq!(json, "{\"id\":1,\"name\":\"a\"}\n{\"id\":2}\n");
    let table = ok(&tideway(
        dir.path(),
        &["sql", "SELECT * FROM s.t ORDER BY id"],
    ));
    assert!(
        table.contains("NULL") && table.contains("2 rows"),
        "{table}"
    );
}

/// Two processes append to one table at the same time; every row of both is there.
#[test]
fn two_processes_appending_concurrently_lose_no_rows() {
    let dir = project();
    ok(&tideway(
        dir.path(),
        &["sql", "CREATE TABLE events.log (writer VARCHAR, n BIGINT)"],
    ));
    let script = |writer: &str| {
        let mut s = String::new();
        for n in 0..8 {
            s.push_str(&format!(
                "\"$TIDEWAY\" --project \"$PROJECT\" sql \"INSERT INTO events.log VALUES ('{writer}', {n})\" || exit 1\n"
            ));
        }
        s
    };
    let spawn = |writer: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(script(writer))
            .env("TIDEWAY", env!("CARGO_BIN_EXE_tideway"))
            .env("PROJECT", dir.path())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn("a"), spawn("b"));
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    let csv = ok(&tideway(
        dir.path(),
        &[
            "sql",
            "--format",
            "csv",
            "SELECT writer, count(DISTINCT n) AS n FROM events.log GROUP BY writer ORDER BY writer",
        ],
    ));
    assert_eq!(csv, "writer,n\na,8\nb,8\n");
    let tables = ok(&tideway(dir.path(), &["tables", "--format", "csv"]));
    assert!(
        tables.contains("events.log,16,16,"),
        "17 commits: version 16 with 16 rows\n{tables}"
    );
}

#[test]
fn import_then_maintenance() {
    let dir = project();
    let csv = dir.path().join("seeds/plans.csv");
    std::fs::write(&csv, "Plan Name,Monthly Price\nfree,0\npro,99\n").unwrap();
    let out = ok(&import(dir.path(), &csv, "ref.plans", &[]));
    assert!(
        out.contains("imported 2 row(s) from 1 file(s) into ref.plans (version 0)"),
        "{out}"
    );
    assert!(
        out.contains("column `Plan Name` is named `plan_name` in the lake"),
        "{out}"
    );
    ok(&import(dir.path(), &csv, "ref.plans", &[]));
    let out = ok(&tideway(dir.path(), &["lake", "optimize", "ref.plans"]));
    assert!(
        out.contains("ref.plans: 2 file(s) compacted into 1"),
        "{out}"
    );
    let out = ok(&tideway(
        dir.path(),
        &["lake", "vacuum", "--retain-hours", "0", "--dry-run"],
    ));
    assert!(out.contains("ref.plans: would delete 2 file(s)"), "{out}");
    let out = ok(&tideway(dir.path(), &["lake", "checkpoint"]));
    assert!(out.contains("ref.plans: checkpoint at version 2"), "{out}");
    let out = ok(&import(dir.path(), &csv, "ref.plans", &["--replace"]));
    assert!(out.contains("version 3"), "{out}");
    let csv_out = ok(&tideway(
        dir.path(),
        &["sql", "-f", "csv", "SELECT count(*) AS n FROM ref.plans"],
    ));
    assert_eq!(csv_out, "n\n2\n");
}

/// `tideway serve`, as the demo's closing hints give it, starts in the finished demo project
/// although the demo's destination secrets are not set in this shell, and collects.
fn serve_collects_in_the_demo_project(dir: &Path) {
    let addr = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap().to_string()
    };
    let mut server = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .arg("--project")
        .arg(dir)
        .args(["serve", "--listen", &addr])
        .env_remove("TIDEWAY_LOG")
        .env_remove("TIDEWAY_DEMO_CUSTOMERIO_KEY")
        .env_remove("TIDEWAY_DEMO_SALESFORCE_SECRET")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let mut status = None;
    for _ in 0..200 {
        if let Some(exit) = server.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.join("serve.log")).unwrap();
            panic!("`tideway serve` stopped ({exit}) in the demo project:\n{log}");
        }
        let body =
            r#"{"writeKey":"wk_demo_web","userId":"u1","event":"Signed Up","messageId":"serve-1"}"#;
        status = post(&addr, "/v1/track", body);
        if status.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(status, Some(200), "the demo's write key was not accepted");
}

#[test]
fn the_demo_runs_and_leaves_a_working_project() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["demo", "--customers", "300", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = ok(&out);
    assert!(
        stdout.contains("the same batch retried: skipped"),
        "{stdout}"
    );
    assert!(
        stdout.contains("kept in `properties__revenue__v_text`"),
        "{stdout}"
    );
    let csv = ok(&tideway(
        &dir,
        &[
            "sql",
            "-f",
            "csv",
            "SELECT count(*) AS n FROM crm.customers",
        ],
    ));
    assert_eq!(csv, "n\n303\n");
    let csv = ok(&tideway(
        &dir,
        &[
            "sql",
            "-f",
            "csv",
            "SELECT count(*) AS n FROM events.tracks",
        ],
    ));
    assert_eq!(csv, "n\n3600\n");
    // Live forwarding: every "Order Completed" the app sent reached the local webhook.
    let orders = ok(&tideway(
        &dir,
        &[
            "sql",
            "-f",
            "csv",
            "SELECT count(*) AS n FROM app.order_completed",
        ],
    ));
    let n = orders.lines().nth(1).unwrap();
    assert!(n.parse::<u64>().unwrap() > 0);
    assert!(
        stdout.contains(&format!("a local webhook): {n} \"Order Completed\" events")),
        "{stdout}"
    );
    // Kustomer, extracted in full then incrementally: 300 customers + 6 new.
    assert!(stdout.contains("Day 2, incrementally"), "{stdout}");
    let csv = ok(&tideway(
        &dir,
        &[
            "sql",
            "-f",
            "csv",
            "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM kustomer.customers",
        ],
    ));
    assert_eq!(csv, "n,ids\n303,303\n");
    // The models ran: one health score and one lead score per billing customer.
    let csv = ok(&tideway(
        &dir,
        &[
            "sql",
            "-f",
            "csv",
            "SELECT (SELECT count(*) FROM marts.customer_health) AS health, \
             (SELECT count(*) FROM marts.lead_score) AS leads, \
             (SELECT count(DISTINCT model) FROM _tideway.model_runs) AS models",
        ],
    ));
    assert_eq!(csv, "health,leads,models\n300,300,15\n");
    // Lineage and impact analysis in the demo's output.
    assert!(
        stdout
            .contains("marts.customer_health.health_score\n   <- marts.engagement.active_days_90d"),
        "{stdout}"
    );
    assert!(
        stdout.contains("error[breaking]: `marts.lifetime_value.lifetime_value` is renamed to `ltv`, and `marts.customer_health` reads it"),
        "{stdout}"
    );
    let status = ok(&tideway(&dir, &["status"]));
    assert!(
        status.contains("marts.customer_health") && status.contains("no failed runs"),
        "{status}"
    );
    assert!(ok(&tideway(&dir, &["plan"])).contains("no changes"));
    // Syncs: the lead score reached Customer.io, a second run sent only the changed users, and
    // the old/new-truth transformation updated Salesforce Accounts; compile checks sync files.
    assert!(
        stdout.contains("Customer.io now holds 300 people"),
        "{stdout}"
    );
    assert!(stdout.contains("(only those users)"), "{stdout}");
    assert!(
        stdout.contains("Accounts updated") && stdout.contains("\"Plan__c\""),
        "{stdout}"
    );
    // The insert-mode sync created every lead once and left the changed ones alone.
    assert!(
        stdout.contains("mode = \"insert\": run 1 created 300")
            && stdout.contains("sent 0; Salesforce holds 300 Contacts"),
        "{stdout}"
    );
    let syncs = ok(&tideway(&dir, &["sync", "status"]));
    assert!(
        syncs.contains("leads_to_customerio")
            && syncs.contains("accounts_to_salesforce")
            && syncs.contains("leads_to_salesforce"),
        "{syncs}"
    );
    ok(&tideway(&dir, &["compile"]));
    serve_collects_in_the_demo_project(&dir);
    let out = ok(&tideway(
        &dir,
        &[
            "transform",
            "test",
            "old_new_truth",
            "--event",
            r#"{"type":"identify","userId":"u1","traits":{"account_id":"0015g0000000001AAA","new_truth":"[[\"plan\",\"pro\"]]"}}"#,
        ],
    ));
    assert!(
        out.contains("\"Salesforce\": true") && out.contains("\"plan\": \"pro\""),
        "{out}"
    );
    // Customer 360: web visitors, app users, Kustomer and CRM customers stitched into
    // profiles, a churn model trained and its scores written back by customer and by profile,
    // and the Profile API answering with them.
    for want in [
        "Web performance by os, browser and url",
        "Customer 360 (tideway unify)",
        "profiles by size:",
        "Churn model (tideway predict train churn",
        "profiles into profiles.churn_scores",
        "joined via",
        "\"churn_scores\"",
    ] {
        assert!(stdout.contains(want), "{want} missing from:\n{stdout}");
    }
    let again = ok(&tideway(&dir, &["unify"]));
    assert!(again.contains("nothing new since run 1"), "{again}");
    let report = ok(&tideway(&dir, &["unify", "report"]));
    assert!(
        report.contains("refused by rule") || report.contains("refused: none"),
        "{report}"
    );
    let explained = ok(&tideway(&dir, &["unify", "explain", "user_id:cus_00001"]));
    assert!(explained.contains("user_id:cus_00001"), "{explained}");
    let e = err(&tideway(
        &dir,
        &["unify", "explain", "email:nobody@nowhere.example"],
    ));
    assert!(
        e.contains("no profile holds `email:nobody@nowhere.example`"),
        "{e}"
    );
    let csv = ok(&tideway(
        &dir,
        &[
            "sql",
            "-f",
            "csv",
            "SELECT count(*) AS n, count(DISTINCT user_id) AS ids, \
             min(churn_probability) >= 0 AND max(churn_probability) <= 1 AS probabilities \
             FROM crm.realtime_churn_predictions",
        ],
    ));
    assert_eq!(csv, "n,ids,probabilities\n300,300,true\n");
    // The project's models compile and run again from the command line; a typo is refused
    // with its place and the right name.
    ok(&tideway(&dir, &["run", "+marts.customer_health"]));
    let health = dir.join("models/marts/customer_health.sql");
    let sql = std::fs::read_to_string(&health).unwrap();
    std::fs::write(
        &health,
        sql.replace("l.lifetime_value,", "l.lifetme_value,"),
    )
    .unwrap();
    let e = err(&tideway(&dir, &["run"]));
    assert!(
        e.contains("`l` has no column `lifetme_value`")
            && e.contains("models/marts/customer_health.sql:15:9")
            && e.contains("did you mean `lifetime_value`?")
            && e.contains("nothing was run"),
        "{e}"
    );
    // Running it again replaces the earlier demo.
    let again = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["demo", "--customers", "50", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    ok(&again);
}

/// Tables Tideway writes are read back by an independent Delta reader: the `deltalake` Python
/// package (delta-rs's Python build, with its own Parquet and log readers via PyArrow).
#[test]
fn an_independent_delta_reader_reads_the_lake() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("demo");
    ok(&Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["demo", "--customers", "200", "--dir"])
        .arg(&dir)
        .output()
        .unwrap());
    let expected = ok(&tideway(
        &dir,
        &[
            "sql",
            "-f",
            "csv",
            "SELECT count(*) AS n, round(sum(mrr), 2) AS mrr, count(DISTINCT plan) AS plans FROM crm.customers",
        ],
    ));
    let expected = expected.lines().nth(1).unwrap().to_string();
    let lake = dir.join(".tideway/lake");
    let script = r#"
import sys, deltalake, pyarrow.compute as pc
lake = sys.argv[1]
c = deltalake.DeltaTable(lake + "/crm/customers").to_pyarrow_table()
print("%d,%s,%d" % (c.num_rows, round(pc.sum(c["mrr"]).as_py(), 2), len(pc.unique(c["plan"]))))
t = deltalake.DeltaTable(lake + "/events/tracks")
tracks = t.to_pyarrow_table()
assert "properties__revenue__v_text" in tracks.column_names, tracks.column_names
assert "context__campaign__name" in tracks.column_names
print(tracks.num_rows, t.version())
# deltalake 1.6 (Python) sometimes aborts in its runtime's teardown at interpreter exit
# ("terminate called without an active exception"), after the reads succeeded: leave at once.
sys.stdout.flush()
import os
os._exit(0)
"#;
    let python = std::env::var("TIDEWAY_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&lake)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the deltalake Python package could not read the lake (is it installed? `.ci/run` installs it and sets TIDEWAY_PYTHON):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let got = lines.next().unwrap();
    // Python prints floats like 12345.0 where DataFusion prints 12345; compare as numbers.
    let norm = |s: &str| {
        s.split(',')
            .map(|v| v.parse::<f64>().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        norm(got),
        norm(&expected),
        "python: {got}, tideway: {expected}"
    );
    assert_eq!(
        lines.next().unwrap(),
        "2400 2",
        "tracks rows and version (2 appends, a skipped retry, optimize)"
    );
}

/// A collector project on a free port, loading in small batches so that commits are frequent.
fn collect_project() -> (tempfile::TempDir, String) {
    let dir = project();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    std::fs::write(
        dir.path().join("tideway.toml"),
        format!(
            "[project]\nname = \"kill\"\n\n[collect]\nlisten = \"{addr}\"\nload_batch_events = 2000\nload_batch_seconds = 0.1\n\n[collect.sources.web]\nwrite_key = \"wk_kill\"\n"
        ),
    )
    .unwrap();
    (dir, addr)
}

fn serve(project: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_tideway"))
        .arg("--project")
        .arg(project)
        .arg("serve")
        .env_remove("TIDEWAY_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(project.join("serve.log")).unwrap())
        .spawn()
        .unwrap()
}

/// Posts a batch with raw HTTP/1.1; the status, or `None` if the connection failed.
fn post_batch(addr: &str, ids: &[String]) -> Option<u16> {
    let events: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                r#"{{"type":"track","userId":"u-{id}","event":"Order Completed","messageId":"{id}","properties":{{"revenue":12.5}}}}"#
            )
        })
        .collect();
    let body = format!(r#"{{"writeKey":"wk_kill","batch":[{}]}}"#, events.join(","));
    post(addr, "/v1/batch", &body)
}

/// Posts `body` to `path` with raw HTTP/1.1; the status, or `None` if the connection failed.
fn post(addr: &str, path: &str, body: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.split(' ').nth(1)?.parse().ok()
}

fn wait_until_up(addr: &str) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the collector did not start on {addr}");
}

#[test]
fn kill_9_during_load_loses_no_acknowledged_event_and_duplicates_none() {
    use std::sync::{Arc, Mutex, atomic::AtomicBool, atomic::AtomicU64, atomic::Ordering};
    let (dir, addr) = collect_project();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    for round in 0..3 {
        let t = std::time::Instant::now();
        let mut server = serve(dir.path());
        wait_until_up(&addr);
        eprintln!(
            "round {round}: up after {:?}, {} acked so far",
            t.elapsed(),
            acked.lock().unwrap().len()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let (addr, acked, next, stop) =
                    (addr.clone(), acked.clone(), next.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let first = next.fetch_add(50, Ordering::Relaxed);
                        let ids: Vec<String> =
                            (first..first + 50).map(|i| format!("m{i}")).collect();
                        // Some requests are retried with the same ids, as SDKs do.
                        for _ in 0..2 {
                            match post_batch(&addr, &ids) {
                                Some(200) => {
                                    acked.lock().unwrap().extend(ids.iter().cloned());
                                    break;
                                }
                                Some(_) | None => {
                                    std::thread::sleep(std::time::Duration::from_millis(5))
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(900 + 300 * round));
        server.kill().unwrap(); // SIGKILL: no shutdown, no flush
        server.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
    }
    // A last, clean run loads what the log holds and stops.
    let started = std::time::Instant::now();
    let mut server = serve(dir.path());
    wait_until_up(&addr);
    assert_eq!(post_batch(&addr, &["final".to_string()]), Some(200));
    let pid = server.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = server.wait().unwrap();
    assert!(
        exit.success(),
        "{exit}: {}",
        std::fs::read_to_string(dir.path().join("serve.log")).unwrap()
    );
    eprintln!("final run: {:?}", started.elapsed());

    let out = ok(&tideway(
        dir.path(),
        &[
            "sql",
            "--format",
            "csv",
            "SELECT id FROM web.tracks ORDER BY id",
        ],
    ));
    eprintln!("query: {:?}", started.elapsed());
    let stored: Vec<&str> = out.lines().skip(1).collect();
    let unique: std::collections::BTreeSet<&str> = stored.iter().copied().collect();
    assert_eq!(unique.len(), stored.len(), "duplicates in web.tracks");
    let acked = acked.lock().unwrap();
    assert!(
        acked.len() > 500,
        "the test sent too little: {}",
        acked.len()
    );
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !unique.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(unique.contains("final"));
    // The per-event table got the same events exactly once too.
    let out = ok(&tideway(
        dir.path(),
        &[
            "sql",
            "--format",
            "csv",
            "SELECT count(*) AS n, count(DISTINCT id) AS d FROM web.order_completed",
        ],
    ));
    let row = out.lines().nth(1).unwrap();
    let (n, d) = row.split_once(',').unwrap();
    assert_eq!(n, d, "duplicates in web.order_completed");
    assert_eq!(n.parse::<usize>().unwrap(), stored.len());
}

/// A live connection forwards to a webhook while `tideway serve` is killed with SIGKILL
/// twice during load: after a restart every acknowledged event reaches the webhook (at least
/// once; the kill can only cause re-sends), and `tideway tail` shows events arrive and go out.
#[test]
fn kill_9_during_live_forwarding_loses_no_acknowledged_event() {
    use std::io::BufRead;
    use std::sync::{Arc, Mutex, atomic::AtomicBool, atomic::AtomicU64, atomic::Ordering};
    use tideway_activate::fake::webhook::{SinkOptions, WebhookSink};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sink = rt
        .block_on(WebhookSink::start(SinkOptions::default()))
        .unwrap();
    let (dir, addr) = collect_project();
    let toml = std::fs::read_to_string(dir.path().join("tideway.toml")).unwrap();
    std::fs::write(
        dir.path().join("tideway.toml"),
        format!(
            "{toml}\n[destinations.hook]\ntype = \"webhook\"\nurl = \"{}\"\n\n[connections.live]\nsource = \"web\"\ndestination = \"hook\"\nstart = \"earliest\"\n",
            sink.url
        ),
    )
    .unwrap();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    for round in 0..2 {
        let mut server = serve(dir.path());
        wait_until_up(&addr);
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..3)
            .map(|_| {
                let (addr, acked, next, stop) =
                    (addr.clone(), acked.clone(), next.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let first = next.fetch_add(20, Ordering::Relaxed);
                        let ids: Vec<String> =
                            (first..first + 20).map(|i| format!("f{i}")).collect();
                        if post_batch(&addr, &ids) == Some(200) {
                            acked.lock().unwrap().extend(ids);
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(700 + 400 * round));
        server.kill().unwrap(); // SIGKILL while forwarding
        server.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
    }
    let before_restart = sink.event_count();
    // Restart with the admin token: the tail shows what arrives and what goes out.
    let mut server = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .arg("--project")
        .arg(dir.path())
        .arg("serve")
        .env("TIDEWAY_ADMIN_TOKEN", "tail-secret")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    wait_until_up(&addr);
    let mut tail = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["tail", "--format", "json", "--url"])
        .arg(format!("http://{addr}"))
        .env("TIDEWAY_ADMIN_TOKEN", "tail-secret")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The tail says so once the server answered: from then on it sees every event.
    let mut said = String::new();
    std::io::BufReader::new(tail.stderr.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert!(said.starts_with("tailing http://"), "{said}");
    let lines = std::io::BufReader::new(tail.stdout.take().unwrap()).lines();
    let reader = std::thread::spawn(move || {
        let mut seen = (false, false);
        for line in lines.map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["messageId"] == "tail-probe" {
                match v["kind"].as_str() {
                    Some("received") => seen.0 = true,
                    Some("delivered") => seen.1 = true,
                    _ => {}
                }
            }
            if seen == (true, true) {
                break;
            }
        }
        seen
    });
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 200,
        "the test sent too little: {}",
        acked.len()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let missing = loop {
        let got: std::collections::BTreeSet<String> = sink
            .events()
            .iter()
            .filter_map(|e| e["messageId"].as_str().map(str::to_string))
            .collect();
        let missing: Vec<&String> = acked.iter().filter(|id| !got.contains(*id)).collect();
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break missing.len();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(
        missing,
        0,
        "acknowledged events never forwarded ({} delivered before the restart): {}",
        before_restart,
        std::fs::read_to_string(dir.path().join("serve.log")).unwrap()
    );
    // Caught up: a new event shows in the tail as it arrives and as it goes out.
    assert_eq!(post_batch(&addr, &["tail-probe".to_string()]), Some(200));
    for _ in 0..200 {
        if reader.is_finished() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = tail.kill();
    let _ = tail.wait();
    let (received, delivered) = reader.join().unwrap();
    assert!(
        received && delivered,
        "the tail showed the probe arrive and go out"
    );
    // /metrics: what this process delivered (the sink's calls since the restart), a delay for
    // each of them, and no lag once caught up.
    let value = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = rt
            .block_on(async {
                reqwest::get(format!("http://{addr}/metrics"))
                    .await?
                    .text()
                    .await
            })
            .unwrap();
        let want = (sink.event_count() - before_restart) as f64;
        let got = [
            "tideway_forward_delivered_total{connection=\"live\"}",
            "tideway_forward_delay_seconds_count{connection=\"live\"}",
            "tideway_forward_lag_events{connection=\"live\"}",
        ]
        .map(|name| value(&text, name));
        if got == [Some(want), Some(want), Some(0.0)] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "delivered, delays and lag: {got:?}, want [{want}, {want}, 0]:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    server.kill().unwrap();
    server.wait().unwrap();
}

/// `tideway extract` and `tideway sources check` against a Kustomer-shaped API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extract_and_sources_check_run_a_kustomer_source() {
    let fake = tideway_extract::fake::FakeKustomer::start(120, 80, 9)
        .await
        .unwrap();
    let dir = project();
    std::fs::write(
        dir.path().join("sources/kustomer.toml"),
        format!(
            "type = \"kustomer\"\napi_key = \"${{KUSTOMER_API_KEY}}\"\nbase_url = \"{}\"\nrequests_per_minute = 100000\nresources = [\"customers\", \"conversations\", \"messages\"]\n",
            fake.base_url
        ),
    )
    .unwrap();
    let run = |args: &[&str], key: &str| {
        Command::new(env!("CARGO_BIN_EXE_tideway"))
            .arg("--project")
            .arg(dir.path())
            .args(args)
            .env("KUSTOMER_API_KEY", key)
            .output()
            .unwrap()
    };
    let key = tideway_extract::fake::TOKEN;
    let stdout = ok(&run(&["sources", "check"], key));
    assert!(stdout.contains("ok    kustomer"), "{stdout}");
    assert!(
        stdout.contains("customers: 100 records on the first page"),
        "{stdout}"
    );
    let stderr = err(&run(&["sources", "check"], "wrong"));
    let stdout = String::from_utf8_lossy(&run(&["sources", "check"], "wrong").stdout).into_owned();
    assert!(
        stdout.contains("FAIL  kustomer") && stdout.contains("answered 401"),
        "{stdout}"
    );
    assert!(stderr.contains("1 source(s) failed the check"), "{stderr}");

    let stdout = ok(&run(&["extract"], key));
    assert!(stdout.contains("kustomer: "), "{stdout}");
    assert!(stdout.contains("kustomer.customers__emails"), "{stdout}");
    fake.advance(4, 2, 1);
    let stdout = ok(&run(
        &["extract", "kustomer", "--resource", "customers"],
        key,
    ));
    assert!(stdout.contains("incremental"), "{stdout}");
    let csv = ok(&tideway(
        dir.path(),
        &[
            "sql",
            "-f",
            "csv",
            "SELECT count(*) AS n FROM kustomer.customers",
        ],
    ));
    assert_eq!(csv, "n\n122\n");
    let stderr = err(&run(&["extract", "zendesk"], key));
    assert!(stderr.contains("unknown source `zendesk`"), "{stderr}");
    assert!(
        stderr.contains("sources in ") && stderr.contains(": kustomer"),
        "{stderr}"
    );
}

/// An error whose causes repeat each other's text is printed once (DataFusion's do).
#[test]
fn a_query_error_is_printed_once() {
    let dir = project();
    let file = dir.path().join("c.csv");
    std::fs::write(&file, "id,plan\n1,pro\n").unwrap();
    ok(&import(dir.path(), &file, "crm.customers", &[]));
    let stderr = err(&tideway(
        dir.path(),
        &["sql", "SELECT nosuch FROM crm.customers"],
    ));
    assert_eq!(
        stderr.matches("No field named nosuch").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("Valid fields are"), "{stderr}");
}

#[test]
fn compile_reports_every_model_error_and_its_json_lists_schemas() {
    let dir = project();
    ok(&tideway(
        dir.path(),
        &[
            "sql",
            "CREATE TABLE crm.people (id BIGINT, email VARCHAR, plan VARCHAR)",
        ],
    ));
    let models = dir.path().join("models");
    std::fs::create_dir_all(models.join("marts")).unwrap();
    std::fs::write(
        models.join("marts/plans.sql"),
        "select plan, count(*) as people from crm.people group by plan",
    )
    .unwrap();
    std::fs::write(models.join("marts/typo.sql"), "select id from crm.peopel").unwrap();
    std::fs::write(models.join("marts/syntax.sql"), "select id from").unwrap();
    let e = err(&tideway(dir.path(), &["compile"]));
    assert!(
        e.contains("unknown table `crm.peopel`") && e.contains("did you mean `crm.people`?"),
        "{e}"
    );
    assert!(e.contains("models/marts/syntax.sql:1:"), "{e}");
    assert!(
        e.contains("compiled 1 of 3 model(s)") && e.contains("2 error(s)"),
        "{e}"
    );
    std::fs::remove_file(models.join("marts/typo.sql")).unwrap();
    std::fs::remove_file(models.join("marts/syntax.sql")).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&ok(&tideway(dir.path(), &["compile", "--format", "json"]))).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["models"][0]["name"], "marts.plans");
    assert_eq!(json["models"][0]["columns"][1]["name"], "people");
    assert_eq!(json["models"][0]["columns"][1]["type"], "Int64");
    assert_eq!(json["models"][0]["reads_tables"][0], "crm.people");
    // The scaffolded example model, enabled, has a valid header.
    let example = std::fs::read_to_string(models.join("customer_health.sql.example")).unwrap();
    let model = tideway_models::Model::parse("models/customer_health.sql".into(), example);
    assert!(model.is_ok(), "{:?}", model.err());
    let e = err(&tideway(dir.path(), &["run", "plnas"]));
    assert!(e.contains("did you mean `marts.plans`?"), "{e}");
    ok(&tideway(dir.path(), &["run", "plans"]));
}

#[test]
fn plan_refuses_a_breaking_change_run_refuses_it_too_and_lineage_traces_columns() {
    let dir = project();
    ok(&tideway(
        dir.path(),
        &[
            "sql",
            "CREATE TABLE crm.people (id BIGINT, email VARCHAR, plan VARCHAR)",
        ],
    ));
    let marts = dir.path().join("models/marts");
    std::fs::create_dir_all(&marts).unwrap();
    let plans = "select plan, count(*) as people\nfrom crm.people\ngroup by plan";
    std::fs::write(marts.join("plans.sql"), plans).unwrap();
    std::fs::write(
        marts.join("big_plans.sql"),
        "select plan\nfrom marts.plans\nwhere people > 10",
    )
    .unwrap();
    let first = ok(&tideway(dir.path(), &["plan"]));
    assert!(
        first.contains("nothing is deployed yet") && first.contains("+ marts.plans (added)"),
        "{first}"
    );
    ok(&tideway(dir.path(), &["run"]));
    assert!(ok(&tideway(dir.path(), &["plan"])).contains("no changes"));
    // Renaming `people`, which big_plans reads in its WHERE: refused, at that line.
    std::fs::write(
        marts.join("plans.sql"),
        plans.replace("as people", "as members"),
    )
    .unwrap();
    let out = tideway(dir.path(), &["plan"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(!out.status.success());
    assert!(
        stdout.contains(
            "people: renamed to `members`; read by marts.big_plans models/marts/big_plans.sql:3"
        ),
        "{stdout}"
    );
    assert!(
        stderr.contains("error[breaking]: `marts.plans.people` is renamed to `members`, and `marts.big_plans` reads it")
            && stderr.contains("--> models/marts/big_plans.sql:3:7")
            && stderr.contains("refused"),
        "{stderr}"
    );
    let e = err(&tideway(dir.path(), &["run"]));
    assert!(e.contains("nothing was run"), "{e}");
    // Changing the reader in the same change-set: accepted, and run deploys it.
    std::fs::write(
        marts.join("big_plans.sql"),
        "select plan\nfrom marts.plans\nwhere members > 10",
    )
    .unwrap();
    let fixed = ok(&tideway(dir.path(), &["plan"]));
    assert!(fixed.contains("(changed too)"), "{fixed}");
    ok(&tideway(dir.path(), &["run"]));
    assert!(ok(&tideway(dir.path(), &["plan"])).contains("no changes"));

    // Lineage, in every format.
    let text = ok(&tideway(
        dir.path(),
        &["lineage", "big_plans.plan", "--upstream"],
    ));
    assert_eq!(
        text,
        "marts.big_plans.plan\n   <- marts.plans.plan\n      <- crm.people.plan  (lake table)\n"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&tideway(
        dir.path(),
        &[
            "lineage",
            "crm.people.plan",
            "--downstream",
            "--format",
            "json",
        ],
    )))
    .unwrap();
    assert_eq!(json["direction"], "downstream");
    assert_eq!(
        json["edges"],
        serde_json::json!([
            {"from": "crm.people.plan", "to": "marts.plans.plan"},
            {"from": "marts.plans.plan", "to": "marts.big_plans.plan"},
        ])
    );
    let dot = ok(&tideway(
        dir.path(),
        &["lineage", "marts.plans", "-f", "dot"],
    ));
    assert!(
        dot.starts_with("digraph lineage {")
            && dot.contains("\"crm.people.plan\" -> \"marts.plans.plan\";"),
        "{dot}"
    );
    let mermaid = ok(&tideway(
        dir.path(),
        &["lineage", "marts.plans", "-f", "mermaid"],
    ));
    assert!(
        mermaid.starts_with("flowchart LR") && mermaid.contains(" --> "),
        "{mermaid}"
    );
    let e = err(&tideway(dir.path(), &["lineage", "marts.plans.membrs"]));
    assert!(
        e.contains("`marts.plans` has no column `membrs`: did you mean `marts.plans.members`?"),
        "{e}"
    );
}

/// The acceptance check of the models: the demo's customer-health pipeline and lead score,
/// run by an independent engine (DuckDB, on the same source rows read by the `deltalake`
/// Python package), give the rows Tideway's models wrote.
#[test]
fn the_demo_models_give_what_duckdb_gives_for_the_same_sql() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("demo");
    ok(&Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["demo", "--customers", "400", "--dir"])
        .arg(&dir)
        .output()
        .unwrap());
    let python = std::env::var("TIDEWAY_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/models_duckdb.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "DuckDB disagrees, or could not run (`.ci/run` installs duckdb and deltalake and sets TIDEWAY_PYTHON):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for mart in [
        "lifetime_value",
        "satisfaction",
        "engagement",
        "customer_health",
        "lead_score",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{mart}: ")) && l.ends_with("columns equal")),
            "{stdout}"
        );
    }
}

/// Reverse ETL from the command line: a sync planned, run against a webhook receiver, its
/// status; `tideway compile` checking sync files (unknown column, non-unique key, unknown
/// destination) with file:line.
#[test]
fn a_sync_plans_runs_reports_and_compile_checks_sync_files() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sink = rt
        .block_on(tideway_activate::fake::webhook::WebhookSink::start(
            Default::default(),
        ))
        .unwrap();
    let dir = project();
    let toml = dir.path().join("tideway.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        format!(
            "{text}\n[destinations.hook]\ntype = \"webhook\"\nurl = \"{}\"\n",
            sink.url
        ),
    )
    .unwrap();
    ok(&tideway(
        dir.path(),
        &[
            "sql",
            "CREATE TABLE marts.scores (user_id VARCHAR, score BIGINT); \
             INSERT INTO marts.scores VALUES ('u1', 10), ('u2', 20), ('u3', 30)",
        ],
    ));
    std::fs::write(
        dir.path().join("syncs/scores.toml"),
        "source = \"marts.scores\"\nkey = \"user_id\"\ndestination = \"hook\"\ntype = \"identify\"\n[mapping]\nrename = { score = \"lead_score\" }\n",
    )
    .unwrap();
    let plan = ok(&tideway(dir.path(), &["sync", "plan", "scores"]));
    assert!(
        plan.contains("3 added, 0 changed, 0 removed, 0 invalid"),
        "{plan}"
    );
    assert!(plan.contains("would send: 3 events in 1 calls"), "{plan}");
    assert!(plan.contains("\"lead_score\":10"), "{plan}");
    assert_eq!(sink.event_count(), 0, "a plan sends nothing");
    let run = ok(&tideway(dir.path(), &["sync", "run"]));
    assert!(run.contains("delivered 3"), "{run}");
    assert_eq!(sink.event_count(), 3);
    ok(&tideway(
        dir.path(),
        &[
            "sql",
            "UPDATE marts.scores SET score = 11 WHERE user_id = 'u1'",
        ],
    ));
    let json = ok(&tideway(
        dir.path(),
        &["sync", "run", "scores", "-f", "json"],
    ));
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["counts"]["changed"], 1, "{json}");
    assert_eq!(report["counts"]["delivered"], 1, "{json}");
    assert_eq!(sink.event_count(), 4, "only the changed row went out");
    let status = ok(&tideway(dir.path(), &["sync", "status"]));
    assert!(status.contains("scores"), "{status}");
    // compile: a sync naming a column the source lacks, and a key that is not unique.
    ok(&tideway(
        dir.path(),
        &[
            "sql",
            "INSERT INTO marts.scores VALUES ('u1', 99), ('u1', 98), ('u2', 97)",
        ],
    ));
    std::fs::write(
        dir.path().join("syncs/typo.toml"),
        "source = \"marts.scores\"\nkey = \"user_id\"\ndestination = \"hook\"\ntype = \"identify\"\n[mapping]\ninclude = [\"scroe\"]\n",
    )
    .unwrap();
    let e = err(&tideway(dir.path(), &["compile"]));
    assert!(
        e.contains(
            "syncs/typo.toml:6:12: `marts.scores` has no column `scroe`; did you mean `score`?"
        ),
        "{e}"
    );
    assert!(
        e.contains("syncs/scores.toml:2:7: the key (user_id) is not unique in `marts.scores`: `u1` is held by several rows"),
        "{e}"
    );
    assert!(
        e.contains("`u1` is held by several rows (3), and so is 1 other key value;"),
        "{e}"
    );
    std::fs::write(
        dir.path().join("syncs/typo.toml"),
        "source = \"marts.scores\"\nkey = \"user_id\"\ndestination = \"hoook\"\ntype = \"identify\"\n",
    )
    .unwrap();
    let e = err(&tideway(dir.path(), &["compile"]));
    assert!(
        e.contains("syncs/typo.toml:3:15: unknown destination `hoook`; did you mean `hook`?"),
        "{e}"
    );
    sink.stop();
}

/// The acceptance check of churn prediction: the demo's churn model (clicks joined with the
/// CRM documents, `churn_risk >= 20`) reaches a test AUC within 0.02 of scikit-learn's
/// HistGradientBoostingClassifier trained on the same encoded features and the same split
/// (`.ci/run` installs scikit-learn and sets TIDEWAY_PYTHON).
#[test]
fn the_demo_churn_model_is_within_0_02_auc_of_scikit_learn() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("demo");
    ok(&Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["demo", "--customers", "3000", "--dir"])
        .arg(&dir)
        .output()
        .unwrap());
    let csv = scratch.path().join("churn.csv");
    let out = ok(&tideway(
        &dir,
        &[
            "predict",
            "train",
            "churn",
            "-f",
            "json",
            "--export-csv",
            csv.to_str().unwrap(),
        ],
    ));
    let trained: serde_json::Value = serde_json::from_str(&out).unwrap();
    let auc = trained["report"]["auc"].as_f64().unwrap();
    assert!(auc > 0.7, "the demo's churn signal is learnable: AUC {auc}");
    let python = std::env::var("TIDEWAY_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tideway-unify/tests/compare_sklearn.py"
    );
    let out = Command::new(&python)
        .args([
            script,
            "--csv",
            csv.to_str().unwrap(),
            "--tideway-auc",
            &auc.to_string(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "Tideway's AUC is not within 0.02 of scikit-learn's, or sklearn could not run (`.ci/run` installs scikit-learn, pandas and sets TIDEWAY_PYTHON):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
}

/// Rows of `tideway sql -f csv` as (first column, second column as a number).
fn csv_pairs(dir: &Path, sql: &str) -> Vec<(String, f64)> {
    let csv = ok(&tideway(dir, &["sql", "-f", "csv", sql]));
    csv.lines()
        .skip(1)
        .map(|l| {
            let (k, v) = l.split_once(',').expect("two columns");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect()
}

/// Given servers (the ones `.ci/run` starts), the demo forwards the app's live events to
/// Kafka, syncs the churn score to Redis and upserts the lead score into Postgres; each is
/// checked on the server itself against the lake.
#[test]
fn the_demo_streams_to_kafka_redis_and_postgres() {
    let vars = ["TIDEWAY_KAFKA", "TIDEWAY_REDIS", "TIDEWAY_POSTGRES"];
    let servers: Vec<String> = vars.iter().filter_map(|v| std::env::var(v).ok()).collect();
    let [kafka, redis, postgres] = servers.as_slice() else {
        eprintln!(
            "skipped: {} must all be set (`.ci/run` starts the servers)",
            vars.join(", ")
        );
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["demo", "--customers", "300", "--dir"])
        .arg(&dir)
        .args(["--kafka", kafka, "--redis", redis, "--postgres", postgres])
        .output()
        .unwrap();
    let stdout = ok(&out);

    // Kafka: every event the app sent and the collector accepted, once.
    let line = stdout
        .lines()
        .find(|l| l.contains("Kafka: connection `app_to_kafka`"))
        .unwrap_or_else(|| panic!("no Kafka line:\n{stdout}"));
    let added: u64 = line
        .split_once('(')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no record count in {line}"));
    let tracks = ok(&tideway(
        &dir,
        &["sql", "-f", "csv", "SELECT count(*) AS n FROM app.tracks"],
    ));
    assert_eq!(format!("n\n{added}\n"), tracks, "{line}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Redis: HGET profile:<id> churn_score is the lake's score, for every profile.
    let scores = csv_pairs(
        &dir,
        "SELECT profile_id, churn_probability FROM profiles.churn_scores ORDER BY 1",
    );
    assert!(scores.len() > 50, "{} profiles scored", scores.len());
    runtime.block_on(async {
        let client = redis::Client::open(redis.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        for (profile, score) in &scores {
            let answer: Option<String> = redis::cmd("HGET")
                .arg(format!("profile:{profile}"))
                .arg("churn_score")
                .query_async(&mut conn)
                .await
                .unwrap();
            let answer: f64 = answer
                .unwrap_or_else(|| panic!("Redis has no churn_score for profile:{profile}"))
                .parse()
                .unwrap();
            assert!(
                (answer - score).abs() < 1e-9,
                "profile:{profile}: Redis {answer}, lake {score}"
            );
        }
    });

    // Postgres: one row per customer with the lake's lead score.
    let leads = csv_pairs(
        &dir,
        "SELECT customer_id, lead_score FROM marts.lead_score ORDER BY 1",
    );
    assert!(leads.len() > 50, "{} leads", leads.len());
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(postgres, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let rows = client
            .query(
                "SELECT user_id, lead_score::float8 FROM public.tideway_demo_lead_scores",
                &[],
            )
            .await
            .unwrap();
        let held: std::collections::BTreeMap<String, f64> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        for (customer, score) in &leads {
            let got = held
                .get(customer)
                .unwrap_or_else(|| panic!("Postgres has no row for {customer}"));
            assert!(
                (got - score).abs() < 1e-9,
                "{customer}: Postgres {got}, lake {score}"
            );
        }
    });
    assert!(
        stdout.contains("Redis: sync `churn_to_redis` wrote"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Postgres: sync `leads_to_postgres` upserted"),
        "{stdout}"
    );
}

/// Writes `n` clicks (JSON, `response_time_ms` as text, as the Customer 360 story has them)
/// to a new topic of 3 partitions.
fn produce_clicks(brokers: &str, topic: &str, n: u64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let brokers = [brokers.to_string()];
        let writer = tideway_extract::kafka::KafkaWriter::new(&brokers, &Default::default())
            .await
            .unwrap();
        writer.create_topic(topic, 3).await.unwrap();
        for seq in 0..n {
            let user = format!("u{}", seq % 101);
            let click = serde_json::json!({
                "seq": seq, "user_id": user, "os": "linux", "browser": "firefox",
                "response_time_ms": format!("{}", 20 + seq % 300), "url": "/p",
            });
            writer.send_json(topic, Some(&user), &click).await.unwrap();
        }
        writer.flush().await.unwrap();
    });
}

/// The rows of `table`, or 0 while it does not exist yet.
fn rows_so_far(project: &Path, table: &str) -> u64 {
    let sql = format!("SELECT count(*) FROM {table}");
    let out = tideway(project, &["sql", "--format", "csv", &sql]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

fn kafka_source(project: &Path, brokers: &str, topic: &str) {
    std::fs::write(
        project.join("sources/clicks.toml"),
        format!(
            "type = \"kafka\"\nbrokers = [\"{brokers}\"]\ntopics = [\"{topic}\"]\nmax_batch_records = 500\ncommit_records = 1000\nmax_wait_ms = 200\n"
        ),
    )
    .unwrap();
}

/// `tideway sources check` with a Kafka source whose brokers do not answer: the failure
/// names the source (not its topics) and the brokers tried. Needs no broker.
#[test]
fn a_kafka_source_that_cannot_connect_fails_its_check_under_its_own_name() {
    let dir = project();
    std::fs::write(
        dir.path().join("sources/clicks.toml"),
        "type = \"kafka\"\nbrokers = [\"127.0.0.1:1\"]\ntopics = [\"web-clicks\", \"app-clicks\"]\nrequest_timeout_ms = 2000\n",
    )
    .unwrap();
    let out = tideway(dir.path(), &["sources", "check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("FAIL  clicks"))
        .unwrap_or_else(|| panic!("no FAIL line for `clicks`:\n{stdout}"));
    assert!(!out.status.success(), "{stdout}");
    assert!(line.contains("clicks: "), "{line}");
    assert!(!line.contains("web-clicks, app-clicks:"), "{line}");
    assert!(line.contains("127.0.0.1:1"), "{line}");
}

/// `tideway extract` of a Kafka source killed with SIGKILL mid-read, twice, then run to the
/// end: every record produced is in the lake exactly once (tested against the real broker).
#[test]
fn kill_9_during_a_kafka_extract_then_a_rerun_gives_every_record_once() {
    let Ok(brokers) = std::env::var("TIDEWAY_KAFKA") else {
        eprintln!("skipped: TIDEWAY_KAFKA is unset (`.ci/run` starts a broker)");
        return;
    };
    let topic = format!("clicks-kill-{}", std::process::id());
    const RECORDS: u64 = 30_000;
    produce_clicks(&brokers, &topic, RECORDS);
    let dir = project();
    kafka_source(dir.path(), &brokers, &topic);
    let extract = || {
        Command::new(env!("CARGO_BIN_EXE_tideway"))
            .arg("--project")
            .arg(dir.path())
            .args(["extract", "clicks"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let table = format!("clicks.{}", topic.replace('-', "_"));
    let rows = |sql: &str| -> u64 {
        let out = tideway(dir.path(), &["sql", "--format", "csv", sql]);
        ok(&out)
            .lines()
            .nth(1)
            .unwrap_or("0")
            .trim()
            .parse()
            .unwrap()
    };
    let mut killed_with = Vec::new();
    for _ in 0..2 {
        let mut run = extract();
        // Killed once some rows are in and before it ends (or at the latest after 20 s).
        let started = std::time::Instant::now();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let n = rows_so_far(dir.path(), &table);
            if n > killed_with.last().copied().unwrap_or(0)
                || started.elapsed().as_secs() > 20
                || run.try_wait().unwrap().is_some()
            {
                killed_with.push(n);
                break;
            }
        }
        let _ = run.kill(); // SIGKILL
        run.wait().unwrap();
    }
    eprintln!("killed with {killed_with:?} rows committed");
    assert!(
        killed_with[0] > 0 && killed_with[0] < RECORDS,
        "the first run was killed midway: {killed_with:?}"
    );
    let out = tideway(dir.path(), &["extract", "clicks"]);
    ok(&out);
    assert_eq!(
        rows(&format!("SELECT count(*) FROM {table}")),
        RECORDS,
        "killed at {killed_with:?} rows"
    );
    assert_eq!(
        rows(&format!("SELECT count(DISTINCT seq) FROM {table}")),
        RECORDS
    );
}

/// `tideway serve` follows the project's Kafka sources: records are in the lake within
/// seconds of being produced.
#[test]
fn serve_follows_a_kafka_source_as_records_arrive() {
    let Ok(brokers) = std::env::var("TIDEWAY_KAFKA") else {
        eprintln!("skipped: TIDEWAY_KAFKA is unset (`.ci/run` starts a broker)");
        return;
    };
    let topic = format!("clicks-live-{}", std::process::id());
    let (dir, addr) = collect_project();
    produce_clicks(&brokers, &topic, 300);
    kafka_source(dir.path(), &brokers, &topic);
    let mut server = serve(dir.path());
    wait_until_up(&addr);
    let table = format!("clicks.{}", topic.replace('-', "_"));
    let started = std::time::Instant::now();
    while rows_so_far(dir.path(), &table) < 300 {
        assert!(
            started.elapsed().as_secs() < 30,
            "not in the lake after 30 s; serve.log: {}",
            std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(rows_so_far(dir.path(), &table), 300);
}
