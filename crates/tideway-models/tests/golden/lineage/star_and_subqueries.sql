-- `SELECT *` passes columns through without naming them (dropping one changes the model's
-- output instead of breaking its query); subqueries in WHERE and in the select list are
-- traced, correlated ones included.
-- lake: crm.leads (lead_id BIGINT, email VARCHAR, score DOUBLE)
-- lake: crm.won (lead_id BIGINT, amount DOUBLE)
-- file: models/staging/leads.sql
select * from crm.leads
-- file: models/marts/hot.sql
select
    l.lead_id,
    (select max(w.amount) from crm.won w where w.lead_id = l.lead_id) as best_deal
from staging.leads l
where l.lead_id in (select lead_id from crm.won) and exists (select 1 from crm.won w2 where w2.amount > l.score)
