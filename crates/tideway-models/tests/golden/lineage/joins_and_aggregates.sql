-- Expressions, aggregates, joins, filters and CASE: each output column's inputs, and every
-- column the queries name (filters and join keys are reads, not inputs of a column).
-- lake: billing.invoices (invoice_id BIGINT, customer_id BIGINT, amount_cents BIGINT, status VARCHAR, issued_at TIMESTAMP)
-- lake: crm.customers (customer_id BIGINT, email VARCHAR, plan VARCHAR)
-- file: models/marts/revenue.sql
select
    c.customer_id,
    lower(c.email) as email,
    sum(i.amount_cents) / 100.0 as revenue,
    count(*) as invoices,
    case when c.plan = 'pro' then max(i.issued_at) end as last_pro_invoice
from crm.customers c
join billing.invoices i on i.customer_id = c.customer_id
where i.status = 'paid'
group by c.customer_id, c.email, c.plan
-- file: models/marts/top.sql
select customer_id, revenue * 2 as doubled
from marts.revenue
where invoices > 3
order by revenue desc
