//! The demo's activation step: the lead score synced to a local Customer.io stand-in with its
//! traits renamed, a second run after some traits change sending only those users, and the
//! old/new-truth transformation routing changed accounts to a local Salesforce stand-in, and
//! new leads created as Salesforce Contacts by an insert-mode sync (changed ones left alone).

use anyhow::{Context, Result};
use tideway_activate::fake::customerio::{FakeCustomerIo, FakeOptions};
use tideway_activate::fake::salesforce::FakeSalesforce;
use tideway_activate::{Project as Activation, RunOptions, RunReport};
use tideway_lake::arrow::array::{RecordBatch, StringArray};
use tideway_lake::arrow::datatypes::{DataType, Field, Schema};
use tideway_lake::{Lake, TableName};

use crate::project::Project;

/// The variable the demo's Customer.io key is read from (its local stand-in accepts this key).
pub const KEY_VAR: &str = "TIDEWAY_DEMO_CUSTOMERIO_KEY";
const KEY: &str = "demo-track-key";
/// The variable the demo's Salesforce client secret is read from.
pub const SECRET_VAR: &str = "TIDEWAY_DEMO_SALESFORCE_SECRET";

const LEADS_SYNC: &str = r#"# The lead score and traits, to Customer.io as identify calls, keys renamed.
source = "marts.customerio_leads"
key = "USER_ID"
destination = "customerio"
type = "identify"

[mapping]
exclude = ["USER_ID"]
rename = { EMAIL = "email", FIRSTNAME = "first_name", LASTNAME = "last_name", PLAN = "plan", LEAD_SCORE = "lead_score", LEAD_GRADE = "lead_grade" }
"#;

const CONTACTS_SYNC: &str = r#"# New leads created in Salesforce as Contacts, named by External_Id__c. mode = "insert":
# only new rows go out; a lead that changes later is left as the sales team keeps it.
source = "marts.customerio_leads"
key = "USER_ID"
destination = "salesforce"
type = "identify"
mode = "insert"

[mapping]
include = ["EMAIL", "FIRSTNAME", "LASTNAME", "PLAN"]
rename = { EMAIL = "Email", FIRSTNAME = "FirstName", LASTNAME = "LastName", PLAN = "Plan__c" }
"#;

const TRUTHS_SYNC: &str = r#"# Accounts whose key/value traits changed, rewritten by a transformation into Salesforce
# group calls (the transformation drops the rows where nothing changed).
source = "crm.account_truths"
key = "account_id"
destination = "salesforce"
type = "identify"
user_id = "owner_id"
transformations = ["old_new_truth"]
"#;

const UTILS_JS: &str =
    include_str!("../../tideway-activate/tests/fixtures/transformations/warehouseActionsUtils.js");
const TRUTH_JS: &str =
    include_str!("../../tideway-activate/tests/fixtures/transformations/old_new_truth.js");

/// What the demo prints about syncs.
pub struct Synced {
    pub first: RunReport,
    pub second: RunReport,
    pub truths: RunReport,
    /// The insert-mode sync of leads to Salesforce Contacts, before and after the change.
    pub contacts_first: RunReport,
    pub contacts_second: RunReport,
    pub contacts: usize,
    pub people: usize,
    pub sample_person: Option<(String, serde_json::Value)>,
    /// A Salesforce Account the sync updated: (Id, its fields).
    pub salesforce_sample: Option<(String, serde_json::Value)>,
}

/// The destinations of the demo project, pointing at the local stand-ins.
pub fn destinations_toml(customerio: &FakeCustomerIo, salesforce: &FakeSalesforce) -> String {
    format!(
        "\n# Local stand-ins started by `tideway demo` (gone when it ends).\n\
         [destinations.customerio]\ntype = \"customerio\"\nsite_id = \"{}\"\napi_key = \"${{{KEY_VAR}}}\"\nbase_url = \"{}\"\n\n\
         [destinations.salesforce]\ntype = \"salesforce\"\ninstance_url = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"${{{SECRET_VAR}}}\"\nexternal_id_field = \"External_Id__c\"\ngroup_object = \"Account\"\n",
        customerio.site_id(),
        customerio.base_url(),
        salesforce.base_url(),
        salesforce.client_id(),
    )
}

/// Starts the stand-ins; the project's tideway.toml gets [`destinations_toml`].
pub async fn start() -> Result<(FakeCustomerIo, FakeSalesforce)> {
    let customerio = tideway_activate::fake::customerio::start(FakeOptions {
        api_key: KEY.into(),
        ..Default::default()
    })
    .await
    .context("cannot start the local Customer.io stand-in")?;
    let salesforce = tideway_activate::fake::salesforce::start(Default::default())
        .await
        .context("cannot start the local Salesforce stand-in")?;
    salesforce.add_field("Account", "Plan__c", false);
    salesforce.add_field("Account", "Seats__c", false);
    Ok((customerio, salesforce))
}

/// The demo's environment: the stand-ins' credentials unless set.
pub fn env(var: &str, salesforce: &FakeSalesforce) -> Option<String> {
    match var {
        KEY_VAR => Some(std::env::var(var).unwrap_or_else(|_| KEY.to_string())),
        SECRET_VAR => {
            Some(std::env::var(var).unwrap_or_else(|_| salesforce.client_secret().to_string()))
        }
        _ => std::env::var(var).ok(),
    }
}

/// Writes the sync files and transformations, runs the syncs, changes some traits, runs again.
pub async fn run(
    project: &Project,
    lake: &Lake,
    customerio: &FakeCustomerIo,
    salesforce: &FakeSalesforce,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Synced> {
    let dir = &project.dir;
    std::fs::create_dir_all(dir.join("syncs"))?;
    std::fs::create_dir_all(dir.join("transformations"))?;
    std::fs::write(dir.join("syncs/leads_to_customerio.toml"), LEADS_SYNC)?;
    std::fs::write(dir.join("syncs/accounts_to_salesforce.toml"), TRUTHS_SYNC)?;
    std::fs::write(dir.join("syncs/leads_to_salesforce.toml"), CONTACTS_SYNC)?;
    std::fs::write(
        dir.join("transformations/warehouseActionsUtils.js"),
        UTILS_JS,
    )?;
    std::fs::write(dir.join("transformations/old_new_truth.js"), TRUTH_JS)?;
    let activation = Activation::load(dir, env)?;
    let options = RunOptions::default();

    let leads = activation.job("leads_to_customerio")?;
    let first = leads.run(lake, &options, &|_| {}).await?;
    let contacts = activation.job("leads_to_salesforce")?;
    let contacts_first = contacts.run(lake, &options, &|_| {}).await?;
    // Day 2: some customers change plan; the models are rebuilt; only they go out.
    lake.sql("UPDATE billingdb.customers SET plan = 'enterprise' WHERE id % 97 = 0 AND plan <> 'enterprise'")
        .await?;
    crate::demo_models::rebuild(project, lake, &[]).await?;
    let second = leads.run(lake, &options, &|_| {}).await?;
    let contacts_second = contacts.run(lake, &options, &|_| {}).await?;

    let ids = account_truths(lake, salesforce).await?;
    let truths = activation
        .job("accounts_to_salesforce")?
        .run(lake, &options, &|_| {})
        .await?;

    let attributes = customerio.attributes();
    Ok(Synced {
        first,
        second,
        truths,
        contacts_first,
        contacts_second,
        contacts: salesforce.records("Contact").len(),
        people: attributes.len(),
        sample_person: attributes
            .iter()
            .next()
            .map(|(k, v)| (k.clone(), serde_json::Value::Object(v.clone()))),
        salesforce_sample: ids.first().and_then(|id| {
            salesforce
                .find("Account", "Id", id)
                .map(|r| (id.clone(), serde_json::Value::Object(r)))
        }),
    })
}

/// Accounts (in Salesforce, and in the lake with their traits as key/value columns, now and
/// as last synced); the Ids of the ones that changed.
async fn account_truths(lake: &Lake, salesforce: &FakeSalesforce) -> Result<Vec<String>> {
    let plans = ["free", "starter", "pro", "enterprise"];
    let (mut ids, mut owners, mut new, mut old, mut changed) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..200usize {
        let mut account = serde_json::Map::new();
        account.insert("Name".into(), format!("Account {i}").into());
        let id = salesforce.insert("Account", account);
        if i % 5 == 0 {
            changed.push(id.clone());
        }
        ids.push(id);
        owners.push(format!("{}", 1000 + i));
        let plan = plans[i % 4];
        let seats = 5 + i % 40;
        new.push(format!(
            r#"[{{"key":"Plan__c","value":"{plan}"}},{{"key":"Seats__c","value":{seats}}}]"#
        ));
        // One account in five changed since the last sync.
        let (old_plan, old_seats) = if i % 5 == 0 {
            (plans[(i + 1) % 4], seats.saturating_sub(3))
        } else {
            (plan, seats)
        };
        old.push(format!(
            r#"[{{"key":"Plan__c","value":"{old_plan}"}},{{"key":"Seats__c","value":{old_seats}}}]"#
        ));
    }
    let schema = Schema::new(
        ["account_id", "owner_id", "new_truth", "old_truth"]
            .map(|n| Field::new(n, DataType::Utf8, false))
            .to_vec(),
    );
    let batch = RecordBatch::try_new(
        std::sync::Arc::new(schema),
        [ids, owners, new, old]
            .into_iter()
            .map(|c| std::sync::Arc::new(StringArray::from(c)) as _)
            .collect(),
    )?;
    let table: TableName = "crm.account_truths".parse()?;
    lake.overwrite(&table, vec![batch]).await?;
    Ok(changed)
}

/// The demo's account of the syncs.
pub fn print(s: &Synced) {
    println!(
        "\nSyncs (syncs/*.toml): marts.customerio_leads -> Customer.io (a local stand-in), traits renamed"
    );
    println!(
        "  run 1: {} added, {} delivered in {} calls; Customer.io now holds {} people",
        s.first.counts.added, s.first.counts.delivered, s.first.calls, s.people
    );
    println!(
        "  run 2, after some customers changed plan: {} changed -> {} delivered (only those users)",
        s.second.counts.changed, s.second.counts.delivered
    );
    if let Some((id, attributes)) = &s.sample_person {
        println!("  person {id}: {attributes}");
    }
    println!(
        "  crm.account_truths -> Salesforce (a local stand-in) through transformations/old_new_truth.js: {} rows, {} Accounts updated, {} dropped (unchanged truths)",
        s.truths.counts.added, s.truths.counts.delivered, s.truths.counts.filtered
    );
    if let Some((id, account)) = &s.salesforce_sample {
        println!("  Account {id} in Salesforce now: {account}");
    }
    println!(
        "  marts.customerio_leads -> Salesforce Contacts, mode = \"insert\": run 1 created {} in {} call{}; run 2 skipped {} changed leads, sent {}; Salesforce holds {} Contacts",
        s.contacts_first.counts.delivered,
        s.contacts_first.calls,
        if s.contacts_first.calls == 1 { "" } else { "s" },
        s.contacts_second.counts.skipped,
        s.contacts_second.events,
        s.contacts
    );
}
