/*
 * @datacoral O-1.0.0
 * @matview-schema marts
 * @matview-name engagement
 * @matview-type regular
 * @interval-in-minutes 60
 */
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
    from staging.stg_webevents
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
    from staging.stg_deviceevents
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
