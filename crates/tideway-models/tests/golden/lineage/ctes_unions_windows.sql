-- CTEs are traced to the tables under them; a union merges its inputs column by column;
-- a window function's inputs include its partition and order columns.
-- lake: web.pages (user_id VARCHAR, url VARCHAR, ts TIMESTAMP)
-- lake: app.screens (user_id VARCHAR, name VARCHAR, ts TIMESTAMP)
-- file: models/staging/activity.sql
with web as (
    select user_id, url as place, ts from web.pages
), app as (
    select user_id, name as place, ts from app.screens
)
select user_id, place, ts from web
union all
select user_id, place, ts from app
-- file: models/marts/ranked.sql
select
    user_id,
    place,
    row_number() over (partition by user_id order by ts) as nth
from staging.activity
