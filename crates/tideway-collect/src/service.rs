//! The running collector: the log, the dedupe index, the HTTP API and the lake loader, wired
//! together and stopped together.
//!
//! ```no_run
//! # async fn demo(lake: tideway_lake::Lake, config: tideway_core::config::CollectConfig) -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind(&config.listen).await?;
//! let service = tideway_collect::service::Service::start(lake, &config, ".tideway/log".as_ref()).await?;
//! service.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::Utc;
use tideway_core::config::CollectConfig;
use tideway_lake::Lake;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::api::{Collector, router};
use crate::dedupe::Dedupe;
use crate::event::{Meta, parse_time};
use crate::loader::{LoadError, Loader, LoaderOptions};
use crate::log::{EventLog, FileLog, FileLogOptions, LogError};

/// The log consumer name of the dedupe index (it keeps the records its snapshot does not
/// cover).
pub const DEDUPE_CONSUMER: &str = "dedupe";
/// How often the dedupe index is written.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(30);

/// Why the collector stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The loader failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Listening or the dedupe snapshot failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The process-wide Prometheus recorder (installed once).
pub fn metrics_handle() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                ])
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // In tests another recorder may exist; then metrics still render, empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// A started collector.
#[derive(Debug)]
pub struct Service {
    collector: Arc<Collector>,
    log: FileLog,
    loader: Loader,
    snapshot_path: PathBuf,
}

impl Service {
    /// Opens the log in `log_dir` (recovering it after a crash), rebuilds the dedupe index,
    /// and prepares the loader; nothing is served until [`Service::serve`].
    pub async fn start(
        lake: Lake,
        config: &CollectConfig,
        log_dir: &Path,
    ) -> Result<Service, ServiceError> {
        let log = FileLog::open(
            log_dir,
            FileLogOptions {
                budget_bytes: config.log_budget_bytes,
                ..FileLogOptions::default()
            },
        )?;
        let shared: Arc<dyn EventLog> = Arc::new(log.clone());
        // The loader registers first, so no segment it still needs can go.
        let loader = Loader::new(
            lake,
            shared.clone(),
            LoaderOptions {
                batch_events: config.load_batch_events,
                batch_age: Duration::from_millis(config.load_batch_millis),
            },
        )
        .await?;
        let snapshot_path = log_dir.join("dedupe.snapshot");
        let (dedupe, covered) = Dedupe::load(
            &snapshot_path,
            config.dedupe_window_secs,
            config.dedupe_capacity,
        )
        .map_err(|source| ServiceError::Io {
            what: format!("cannot read {}", snapshot_path.display()),
            source,
        })?;
        let collector = Arc::new(Collector::new(config.clone(), shared.clone(), dedupe));
        // Replay what the snapshot does not cover.
        let mut from = covered.max(shared.stats().start);
        let mut replayed = 0u64;
        loop {
            let records = shared.read(from, 50_000, Duration::ZERO).await?;
            let Some(last) = records.last() else { break };
            from = last.offset + 1;
            for r in &records {
                if let Ok((meta, _)) = Meta::parse(&r.payload)
                    && let Some(id) = meta.message_id.as_deref()
                {
                    let at = parse_time(&meta.received_at)
                        .map_or(Utc::now().timestamp(), |t| t.timestamp());
                    collector.remember(&meta.source, id, at);
                    replayed += 1;
                }
            }
        }
        if shared.committed(DEDUPE_CONSUMER).is_none() {
            shared
                .commit(DEDUPE_CONSUMER, covered.max(shared.stats().start))
                .await?;
        }
        info!(
            replayed,
            log_end = shared.stats().end,
            loader_at = loader.position(),
            "collector started"
        );
        Ok(Service {
            collector,
            log,
            loader,
            snapshot_path,
        })
    }

    /// The collector behind the API.
    pub fn collector(&self) -> &Arc<Collector> {
        &self.collector
    }

    /// The durable event log, for more consumers (live connections).
    pub fn log(&self) -> Arc<dyn EventLog> {
        Arc::new(self.log.clone())
    }

    /// Serves the API on `listener` and runs the loader until `stop` resolves; then stops
    /// taking requests, loads what the log holds, and writes the dedupe index.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServiceError> {
        self.serve_with(listener, axum::Router::new(), stop).await
    }

    /// [`Service::serve`], with more routes (the Profile API, ...) on the same listener.
    pub async fn serve_with(
        self,
        listener: tokio::net::TcpListener,
        routes: axum::Router,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServiceError> {
        let Service {
            collector,
            log,
            mut loader,
            snapshot_path,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let app = router(collector.clone()).merge(routes);
        let http = tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .into_future(),
        );
        let snapshots = spawn_snapshots(collector.clone(), snapshot_path.clone(), stop_rx.clone());
        // The loader runs on a thread and runtime of its own: its batches are seconds of CPU
        // work (JSON, Arrow, Parquet), which on the API's runtime would hold up the requests
        // queued behind it on the same worker (p99 of single events went from 11 ms to 740 ms).
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<(), LoadError>>();
        let (http_done_tx, http_done_rx) = tokio::sync::oneshot::channel::<()>();
        let rx = stop_rx.clone();
        std::thread::Builder::new()
            .name("tideway-loader".into())
            .spawn(move || {
                let result = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(async move {
                        loader.run(stopped(rx)).await?;
                        // Once the API has answered its last request, load what the log holds.
                        let _ = http_done_rx.await;
                        loader.drain().await.map(|_| ())
                    }),
                    Err(e) => Err(LoadError::Log(LogError::Io {
                        what: "start the loader runtime",
                        path: String::new(),
                        source: e,
                    })),
                };
                let _ = done_tx.send(result);
            })
            .map_err(|source| ServiceError::Io {
                what: "cannot start the loader thread".into(),
                source,
            })?;
        stop.await;
        info!("collector stopping: no new requests; loading what the log holds");
        let _ = stop_tx.send(true);
        let served = http.await;
        let _ = http_done_tx.send(());
        done_rx.await.map_err(|_| ServiceError::Io {
            what: "the loader thread stopped without a result".into(),
            source: std::io::Error::other("loader thread panicked"),
        })??;
        let _ = snapshots.await;
        let end = collector
            .snapshot_dedupe(&snapshot_path)
            .map_err(|source| ServiceError::Io {
                what: format!("cannot write {}", snapshot_path.display()),
                source,
            })?;
        collector.log().commit(DEDUPE_CONSUMER, end).await?;
        log.close();
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(ServiceError::Io {
                what: "the HTTP server failed".into(),
                source,
            }),
            Err(e) => Err(ServiceError::Io {
                what: "the HTTP server task failed".into(),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

fn spawn_snapshots(
    collector: Arc<Collector>,
    path: PathBuf,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(SNAPSHOT_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let c = collector.clone();
            let p = path.clone();
            let written = tokio::task::spawn_blocking(move || c.snapshot_dedupe(&p)).await;
            match written {
                Ok(Ok(end)) => {
                    if let Err(e) = collector.log().commit(DEDUPE_CONSUMER, end).await {
                        warn!(error = %e, "dedupe: could not commit the snapshot offset");
                    }
                }
                Ok(Err(e)) => {
                    warn!(error = %e, path = %path.display(), "dedupe: could not write the snapshot")
                }
                Err(e) => warn!(error = %e, "dedupe: snapshot task failed"),
            }
        }
    })
}
