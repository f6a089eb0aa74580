/*
 * @datacoral O-1.0.0
 * @matview-schema marts
 * @matview-name satisfaction
 * @matview-type regular
 * @interval-in-minutes 360
 */
-- Datacoral customer_health example, part 2: support satisfaction from zendesk.tickets + ticket_metrics
with tickets as (
    select id as ticket_id, requester_id as customer_id, created_at, status, priority,
           satisfaction_rating_score
    from staging.stg_tickets
),
metrics as (
    select ticket_id, reply_time_in_minutes_calendar, first_resolution_time_in_minutes_calendar,
           full_resolution_time_in_minutes_calendar, reopens, replies
    from staging.stg_ticket_metrics
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
