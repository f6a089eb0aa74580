{{ config(materialized='table') }}
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
