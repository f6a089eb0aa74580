-- The dbt customer-health project of ../shared/bench/peers/dbt_health, as dbt users bring it:
-- ref() between models, source() for the lake tables the staging models read.
-- lake: billingdb.customers (id BIGINT, email VARCHAR, name VARCHAR, created_at TIMESTAMP, plan VARCHAR, country VARCHAR, industry VARCHAR, employees BIGINT, mrr DOUBLE, is_active BOOLEAN, kustomer_external_id VARCHAR)
-- lake: billingdb.orders (order_id BIGINT, customer_id BIGINT, created_at TIMESTAMP, amount DOUBLE, currency VARCHAR, status VARCHAR, channel VARCHAR, item_count BIGINT)
-- lake: billingdb.invoices (invoice_id BIGINT, order_id BIGINT, customer_id BIGINT, issued_at TIMESTAMP, due_at TIMESTAMP, paid_at TIMESTAMP, amount DOUBLE, status VARCHAR)
-- lake: zendesk.tickets (id BIGINT, requester_id BIGINT, organization_id BIGINT, created_at TIMESTAMP, updated_at TIMESTAMP, status VARCHAR, priority VARCHAR, type VARCHAR, via_channel VARCHAR, subject VARCHAR, satisfaction_rating_score VARCHAR)
-- lake: zendesk.ticket_metrics (id BIGINT, ticket_id BIGINT, created_at TIMESTAMP, reply_time_in_minutes_calendar BIGINT, reply_time_in_minutes_business BIGINT, first_resolution_time_in_minutes_calendar BIGINT, full_resolution_time_in_minutes_calendar BIGINT, full_resolution_time_in_minutes_business BIGINT, agent_wait_time_in_minutes_calendar BIGINT, requester_wait_time_in_minutes_calendar BIGINT, reopens BIGINT, replies BIGINT, solved_at TIMESTAMP)
-- lake: events.webevents (event_id BIGINT, customer_id BIGINT, anonymous_id VARCHAR, session_id BIGINT, event_type VARCHAR, path VARCHAR, referrer VARCHAR, user_agent_family VARCHAR, country VARCHAR, ts TIMESTAMP)
-- lake: events.deviceevents (device_id VARCHAR, customer_id BIGINT, ts TIMESTAMP, event_type VARCHAR, firmware_version VARCHAR, battery_pct SMALLINT, signal_dbm SMALLINT, uptime_s BIGINT)
-- file: models/staging/stg_billing_customers.sql
{{ config(materialized='view') }}
select * from {{ source('billingdb', 'customers') }}
-- file: models/staging/stg_orders.sql
{{ config(materialized='view') }}
select * from {{ source('billingdb', 'orders') }}
-- file: models/staging/stg_invoices.sql
{{ config(materialized='view') }}
select * from {{ source('billingdb', 'invoices') }}
-- file: models/staging/stg_tickets.sql
{{ config(materialized='view') }}
select * from {{ source('zendesk', 'tickets') }}
-- file: models/staging/stg_ticket_metrics.sql
{{ config(materialized='view') }}
select * from {{ source('zendesk', 'ticket_metrics') }}
-- file: models/staging/stg_webevents.sql
{{ config(materialized='view') }}
select * from {{ source('events', 'webevents') }}
-- file: models/staging/stg_deviceevents.sql
{{ config(materialized='view') }}
select * from {{ source('events', 'deviceevents') }}
-- file: models/marts/lifetime_value.sql
-- Datacoral customer_health example, part 1: lifetime value from billingdb.orders + invoices
with customers as (
    select id as customer_id, created_at, plan from {{ ref('stg_billing_customers') }}
),
orders as (
    select order_id, customer_id, created_at, amount, status
    from {{ ref('stg_orders') }}
),
invoices as (
    select order_id, amount, status, paid_at, due_at
    from {{ ref('stg_invoices') }}
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
-- file: models/marts/satisfaction.sql
-- Datacoral customer_health example, part 2: support satisfaction from zendesk.tickets + ticket_metrics
with tickets as (
    select id as ticket_id, requester_id as customer_id, created_at, status, priority,
           satisfaction_rating_score
    from {{ ref('stg_tickets') }}
),
metrics as (
    select ticket_id, reply_time_in_minutes_calendar, first_resolution_time_in_minutes_calendar,
           full_resolution_time_in_minutes_calendar, reopens, replies
    from {{ ref('stg_ticket_metrics') }}
)
select
    t.customer_id,
    count(*)                                                                   as tickets,
    count(*) filter (where t.created_at >= timestamp '2025-06-01' - interval 90 day) as tickets_90d,
    sum(case when t.priority in ('high', 'urgent') then 1 else 0 end)          as high_priority_tickets,
    sum(case when t.satisfaction_rating_score = 'good' then 1 else 0 end)      as good_ratings,
    sum(case when t.satisfaction_rating_score = 'bad' then 1 else 0 end)       as bad_ratings,
    avg(case t.satisfaction_rating_score when 'good' then 1.0 when 'bad' then 0.0 end) as csat,
    avg(m.reply_time_in_minutes_calendar)                                      as avg_reply_minutes,
    avg(m.first_resolution_time_in_minutes_calendar)                           as avg_first_resolution_minutes,
    median(m.full_resolution_time_in_minutes_calendar)                         as median_full_resolution_minutes,
    sum(m.reopens)                                                             as reopens
from tickets t
join metrics m using (ticket_id)
group by 1
-- file: models/marts/engagement.sql
-- Datacoral customer_health example, part 3: product engagement from webevents + deviceevents
with web as (
    select
        customer_id,
        count(*)                                               as web_events_90d,
        count(distinct session_id)                             as sessions_90d,
        count(distinct date_trunc('day', ts))                  as active_days_90d,
        count(*) filter (where ts >= timestamp '2025-06-01' - interval 30 day) as web_events_30d,
        sum(case when event_type = 'feature_use' then 1 else 0 end) as feature_uses_90d,
        max(ts)                                                as last_web_at
    from {{ ref('stg_webevents') }}
    where customer_id is not null
    group by 1
),
devices as (
    select
        customer_id,
        count(distinct device_id)                                            as devices,
        sum(case when event_type = 'heartbeat' then 1 else 0 end)            as heartbeats_90d,
        sum(case when event_type = 'heartbeat'
                  and ts >= timestamp '2025-06-01' - interval 7 day then 1 else 0 end) as heartbeats_7d,
        sum(case when event_type = 'error' then 1 else 0 end)::double
            / nullif(count(*), 0)                                            as device_error_rate,
        max(ts)                                                              as last_heartbeat_at
    from {{ ref('stg_deviceevents') }}
    group by 1
)
select
    coalesce(w.customer_id, d.customer_id) as customer_id,
    coalesce(w.web_events_90d, 0)   as web_events_90d,
    coalesce(w.web_events_30d, 0)   as web_events_30d,
    coalesce(w.sessions_90d, 0)     as sessions_90d,
    coalesce(w.active_days_90d, 0)  as active_days_90d,
    coalesce(w.feature_uses_90d, 0) as feature_uses_90d,
    coalesce(d.devices, 0)          as devices,
    coalesce(d.heartbeats_90d, 0)   as heartbeats_90d,
    coalesce(d.heartbeats_7d, 0)    as heartbeats_7d,
    d.device_error_rate,
    greatest(w.last_web_at, d.last_heartbeat_at) as last_seen_at
from web w
full outer join devices d on d.customer_id = w.customer_id
-- file: models/marts/customer_health.sql
-- Datacoral customer_health example, part 4: one health score per customer (0-100)
with base as (
    select
        l.customer_id,
        l.plan,
        l.lifetime_value,
        l.overdue_amount,
        l.tenure_days,
        coalesce(s.tickets_90d, 0)          as tickets_90d,
        s.csat,
        s.avg_first_resolution_minutes,
        coalesce(e.active_days_90d, 0)      as active_days_90d,
        coalesce(e.heartbeats_7d, 0)        as heartbeats_7d,
        e.device_error_rate,
        e.last_seen_at
    from {{ ref('lifetime_value') }} l
    left join {{ ref('satisfaction') }} s using (customer_id)
    left join {{ ref('engagement') }} e using (customer_id)
),
scored as (
    select
        *,
        percent_rank() over (order by lifetime_value)             as ltv_pct,
        percent_rank() over (order by active_days_90d)            as engagement_pct,
        percent_rank() over (order by heartbeats_7d)              as device_pct,
        coalesce(csat, 0.5)                                       as csat_filled
    from base
)
select
    customer_id,
    plan,
    lifetime_value,
    csat,
    active_days_90d,
    heartbeats_7d,
    round(100 * (0.30 * ltv_pct + 0.30 * engagement_pct + 0.15 * device_pct + 0.25 * csat_filled)
          - case when overdue_amount > 0 then 10 else 0 end
          - case when tickets_90d >= 3 then 5 else 0 end, 1)      as health_score,
    case
        when last_seen_at is null or last_seen_at < timestamp '2025-06-01' - interval 30 day then 'dormant'
        when 100 * (0.30 * ltv_pct + 0.30 * engagement_pct + 0.15 * device_pct + 0.25 * csat_filled) >= 60 then 'healthy'
        when 100 * (0.30 * ltv_pct + 0.30 * engagement_pct + 0.15 * device_pct + 0.25 * csat_filled) >= 35 then 'at_risk'
        else 'critical'
    end                                                           as health_bucket
from scored
-- file: models/marts/lead_score.sql
-- RudderStack-style lead scoring: CTEs with dense_rank, CASE sums and LEFT JOINs over events
with sessions as (
    select
        customer_id,
        session_id,
        min(ts)  as session_start,
        count(*) as events_in_session,
        dense_rank() over (partition by customer_id order by min(ts)) as session_number
    from {{ ref('stg_webevents') }}
    where customer_id is not null
    group by 1, 2
),
session_stats as (
    select
        customer_id,
        max(session_number)     as sessions,
        avg(events_in_session)  as avg_events_per_session,
        max(session_start)      as last_session_at
    from sessions
    group by 1
),
activity as (
    select
        customer_id,
        sum(case when event_type = 'page_view' then 1 else 0 end)                 as page_views,
        sum(case when path = '/pricing' then 1 else 0 end)                        as pricing_views,
        sum(case when path like '/docs%' then 1 else 0 end)                       as docs_views,
        sum(case when event_type = 'signup' then 1 else 0 end)                    as signups,
        sum(case when event_type = 'form_submit' then 1 else 0 end)               as form_submits,
        sum(case when event_type = 'feature_use' then 1 else 0 end)               as feature_uses,
        sum(case when referrer = '' then 0 else 1 end)                            as referred_events
    from {{ ref('stg_webevents') }}
    where customer_id is not null
    group by 1
),
support as (
    select requester_id as customer_id, count(*) as tickets
    from {{ ref('stg_tickets') }}
    group by 1
),
orders as (
    select customer_id, count(*) as orders, sum(amount) as spend
    from {{ ref('stg_orders') }}
    where status = 'completed'
    group by 1
),
scored as (
    select
        c.id as customer_id,
        c.email,
        c.plan,
        c.country,
        coalesce(a.page_views, 0)    as page_views,
        coalesce(a.pricing_views, 0) as pricing_views,
        coalesce(s.sessions, 0)      as sessions,
        coalesce(o.orders, 0)        as orders,
        (case when c.employees >= 1000 then 25 when c.employees >= 200 then 15 when c.employees >= 50 then 8 else 2 end)
      + (case when a.pricing_views >= 3 then 20 when a.pricing_views >= 1 then 10 else 0 end)
      + (case when a.docs_views >= 5 then 10 else 0 end)
      + (case when a.form_submits > 0 then 15 else 0 end)
      + (case when s.sessions >= 10 then 15 when s.sessions >= 3 then 8 else 0 end)
      + (case when a.feature_uses >= 20 then 10 else 0 end)
      + (case when o.orders > 0 then 5 else 0 end)
      - (case when t.tickets >= 3 then 5 else 0 end)              as lead_score
    from {{ ref('stg_billing_customers') }} c
    left join activity a      on a.customer_id = c.id
    left join session_stats s on s.customer_id = c.id
    left join support t       on t.customer_id = c.id
    left join orders o        on o.customer_id = c.id
)
select
    *,
    dense_rank() over (order by lead_score desc)                       as lead_rank,
    dense_rank() over (partition by country order by lead_score desc)  as lead_rank_in_country,
    case when lead_score >= 60 then 'hot' when lead_score >= 35 then 'warm' else 'cold' end as lead_grade
from scored
