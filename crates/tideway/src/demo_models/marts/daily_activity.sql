-- Web activity per customer and day, built one day at a time: each run adds the days that
-- are over since the last run, and a day run again replaces its own rows.
/* tideway
materialized = "incremental"
time_column = "day"
interval = "1d"
description = "Events, sessions and pricing views per customer and day."
[tests]
day = ["not_null"]
customer_id = [{ relationships = "billingdb.customers.id" }]
*/
select
    date_trunc('day', ts)                                     as day,
    customer_id,
    count(*)                                                  as events,
    count(distinct session_id)                                as sessions,
    sum(iff(path = '/pricing', 1, 0))                         as pricing_views,
    sum(case when path like any ('/docs%', '/blog%') then 1 else 0 end) as content_views
from staging.stg_webevents
where customer_id is not null
  and ts >= {{ start }} and ts < {{ end }}
group by 1, 2
