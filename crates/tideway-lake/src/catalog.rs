//! The DataFusion catalog over the lake: one catalog, one DataFusion schema per lake schema, one
//! table per Delta table, loaded at its latest version each time a query plans.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use deltalake::DeltaTableBuilder;
use deltalake::datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use deltalake::datafusion::error::{DataFusionError, Result as DfResult};
use deltalake::datafusion::execution::runtime_env::RuntimeEnv;
use deltalake::delta_datafusion::engine::AsObjectStoreUrl;
use url::Url;

use crate::lake::{by_schema, table_url};
use crate::name::TableName;

/// The name of the catalog that holds the lake in SQL (`lake.crm.customers`; the `lake.` part
/// can be left out).
pub const CATALOG: &str = "lake";
/// The schema a bare table name refers to.
pub const DEFAULT_SCHEMA: &str = "public";

/// The lake as a DataFusion catalog.
#[derive(Debug)]
pub struct LakeCatalog {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    root: Url,
    storage: HashMap<String, String>,
    runtime: Arc<RuntimeEnv>,
    tables: RwLock<BTreeMap<String, Vec<String>>>,
}

impl LakeCatalog {
    pub(crate) fn new(
        root: Url,
        storage: HashMap<String, String>,
        runtime: Arc<RuntimeEnv>,
    ) -> Self {
        LakeCatalog {
            shared: Arc::new(Shared {
                root,
                storage,
                runtime,
                tables: RwLock::new(BTreeMap::new()),
            }),
        }
    }

    pub(crate) fn set_tables(&self, tables: Vec<TableName>) {
        *self.shared.tables.write().expect("catalog lock poisoned") = by_schema(&tables);
    }

    /// Adds one table (just written) without listing the whole lake again.
    pub(crate) fn add_table(&self, name: &TableName) {
        let mut tables = self.shared.tables.write().expect("catalog lock poisoned");
        let list = tables.entry(name.schema().to_string()).or_default();
        if !list.iter().any(|t| t == name.table()) {
            list.push(name.table().to_string());
            list.sort();
        }
    }

    pub(crate) fn remove_table(&self, name: &TableName) {
        let mut tables = self.shared.tables.write().expect("catalog lock poisoned");
        if let Some(list) = tables.get_mut(name.schema()) {
            list.retain(|t| t != name.table());
        }
    }

    /// Every table's `schema.table`, for messages.
    pub(crate) fn known_names(&self) -> Vec<String> {
        self.table_names().iter().map(ToString::to_string).collect()
    }

    pub(crate) fn table_names(&self) -> Vec<TableName> {
        let tables = self.shared.tables.read().expect("catalog lock poisoned");
        tables
            .iter()
            .flat_map(|(s, ts)| ts.iter().filter_map(move |t| TableName::new(s, t).ok()))
            .collect()
    }
}

impl CatalogProvider for LakeCatalog {
    fn schema_names(&self) -> Vec<String> {
        let tables = self.shared.tables.read().expect("catalog lock poisoned");
        tables.keys().cloned().collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        Some(Arc::new(LakeSchema {
            shared: self.shared.clone(),
            schema: name.to_string(),
        }))
    }
}

/// One lake schema as a DataFusion schema.
#[derive(Debug)]
struct LakeSchema {
    shared: Arc<Shared>,
    schema: String,
}

#[async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        let tables = self.shared.tables.read().expect("catalog lock poisoned");
        tables.get(&self.schema).cloned().unwrap_or_default()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if !self.table_exist(name) {
            return Ok(None);
        }
        let Ok(table_name) = TableName::new(&self.schema, name) else {
            return Ok(None);
        };
        let url = table_url(&self.shared.root, &table_name);
        let external = |e: deltalake::DeltaTableError| {
            DataFusionError::External(format!("cannot read table `{table_name}`: {e}").into())
        };
        let mut table = DeltaTableBuilder::from_url(url)
            .map_err(external)?
            .with_storage_options(self.shared.storage.clone())
            .build()
            .map_err(external)?;
        table.load().await.map_err(external)?;
        let log_store = table.log_store();
        let object_store_url = log_store.root_url().as_object_store_url();
        if self.shared.runtime.object_store(&object_store_url).is_err() {
            self.shared.runtime.register_object_store(
                object_store_url.as_ref(),
                log_store.root_object_store(None),
            );
        }
        let provider = table.table_provider().await?;
        Ok(Some(provider))
    }

    fn table_exist(&self, name: &str) -> bool {
        let tables = self.shared.tables.read().expect("catalog lock poisoned");
        tables
            .get(&self.schema)
            .is_some_and(|ts| ts.iter().any(|t| t == name))
    }
}
