/*
 * @datacoral O-1.0.0
 * @matview-schema marts
 * @matview-name lifetime_value
 * @matview-type regular
 * @interval-in-minutes 1440
 */
-- Datacoral customer_health example, part 1: lifetime value from billingdb.orders + invoices
with customers as (
    select id as customer_id, created_at, plan from staging.stg_billing_customers
),
orders as (
    select order_id, customer_id, created_at, amount, status
    from staging.stg_orders
),
invoices as (
    select order_id, amount, status, paid_at, due_at
    from staging.stg_invoices
),
order_facts as (
    select
        o.customer_id,
        count(*) filter (where o.status = 'completed')                       as completed_orders,
        count(*) filter (where o.status = 'refunded')                        as refunded_orders,
        sum(case when o.status = 'completed' then o.amount else 0 end)       as gross_revenue,
        sum(case when o.status = 'refunded' then o.amount else 0 end)        as refunded_revenue,
        sum(case when i.status = 'paid' then i.amount else 0 end)            as paid_amount,
        sum(case when i.status = 'overdue' then i.amount else 0 end)         as overdue_amount,
        avg(case when i.paid_at is not null
                 then date_diff('day', o.created_at, i.paid_at) end)         as avg_days_to_pay,
        min(o.created_at)                                                     as first_order_at,
        max(o.created_at)                                                     as last_order_at
    from orders o
    left join invoices i on i.order_id = o.order_id
    group by 1
)
select
    c.customer_id,
    c.plan,
    coalesce(f.completed_orders, 0)                                  as completed_orders,
    coalesce(f.refunded_orders, 0)                                   as refunded_orders,
    coalesce(f.gross_revenue, 0) - coalesce(f.refunded_revenue, 0)   as lifetime_value,
    coalesce(f.paid_amount, 0)                                       as paid_amount,
    coalesce(f.overdue_amount, 0)                                    as overdue_amount,
    f.avg_days_to_pay,
    f.first_order_at,
    f.last_order_at,
    date_diff('day', c.created_at, timestamp '2025-06-01')           as tenure_days
from customers c
left join order_facts f using (customer_id)
