-- Every kind of mistake, all reported in one pass; downstream models of a broken model are not checked.
-- lake: billingdb.customers (id BIGINT, email VARCHAR, name VARCHAR, created_at TIMESTAMP, plan VARCHAR, country VARCHAR, industry VARCHAR, employees BIGINT, mrr DOUBLE, is_active BOOLEAN, kustomer_external_id VARCHAR)
-- lake: billingdb.orders (order_id BIGINT, customer_id BIGINT, created_at TIMESTAMP, amount DOUBLE, currency VARCHAR, status VARCHAR, channel VARCHAR, item_count BIGINT)
-- file: models/staging/orders.sql
select order_id, customer_id, amount, status, created_at from billingdb.orders
-- file: models/marts/typo_column.sql
select o.customer_id, sum(o.amuont) as revenue
from staging.orders o
group by 1
-- file: models/marts/typo_table.sql
select id from billingdb.customer
-- file: models/marts/bare_name.sql
select * from orders
-- file: models/marts/typo_ref.sql
select * from {{ ref('ordrs') }}
-- file: models/marts/syntax.sql
select customer_id,
from staging.orders
where amount >
-- file: models/marts/two_statements.sql
select 1 as a;
delete from staging.orders
-- file: models/marts/unnamed.sql
select customer_id, count(*) from staging.orders group by customer_id
-- file: models/marts/duplicate.sql
select o.customer_id, c.id as customer_id from staging.orders o join billingdb.customers c on c.id = o.customer_id
-- file: models/marts/bad_alias.sql
select x.amount from staging.orders o
-- file: models/marts/not_grouped.sql
select customer_id, amount, count(*) as n from staging.orders group by customer_id
-- file: models/marts/downstream.sql
select customer_id, revenue * 2 as double_revenue from marts.typo_column
-- file: models/marts/bad_header.sql
/* tideway
materialized = "tabel"
interval = "sometimes"
*/
select 1 as one
-- file: models/marts/bad_template.sql
select {{ dbt_utils.star(ref('orders')) }} from staging.orders
