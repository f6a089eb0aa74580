/* tideway
materialized = "table"
interval = "1h"
owner = "customer-success"
description = "One health score (0-100) and bucket per billing customer."
[tests]
customer_id = ["not_null", "unique"]
health_bucket = [{ accepted_values = ["healthy", "at_risk", "critical", "dormant"] }]
*/
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
    from marts.lifetime_value l
    left join marts.satisfaction s using (customer_id)
    left join marts.engagement e using (customer_id)
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
