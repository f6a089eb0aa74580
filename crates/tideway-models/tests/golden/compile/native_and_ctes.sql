-- Plain `schema.table` references, CTEs that shadow nothing, a recursive CTE, a table function,
-- and models in the top folder.
-- lake: events.tracks (id VARCHAR, user_id VARCHAR, event VARCHAR, received_at TIMESTAMP)
-- file: models/top_level.sql
with recursive n(i) as (select 1 union all select i + 1 from n where i < 3)
select cast(i as bigint) as i from n
-- file: models/daily/generated.sql
select cast(g.value as bigint) as id, cast(g.value % 7 as bigint) as k from range(1, 1001) as g
-- file: models/daily/active_users.sql
with per_day as (
    select date_trunc('day', received_at) as day, user_id from events.tracks
), joined as (
    select p.day, p.user_id, g.k from per_day p left join daily.generated g on g.id = length(p.user_id)
)
select day, count(distinct user_id) as users, max(k) as max_k from joined group by day
-- file: models/daily/uses_top.sql
select t.i, a.users from models.top_level t cross join daily.active_users a
