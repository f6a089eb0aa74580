-- A recursive CTE: the working table's columns come from the static term; a table function is no table.
-- lake: org.people (person_id BIGINT, manager_id BIGINT, name VARCHAR)
-- file: models/marts/chain.sql
with recursive chain as (
    select person_id, manager_id, name, 0 as depth from org.people where manager_id is null
    union all
    select p.person_id, p.manager_id, p.name, c.depth + 1
    from org.people p join chain c on p.manager_id = c.person_id
)
select person_id, name, depth from chain
-- file: models/marts/numbers.sql
-- A table function is not a table: its columns come from no input column.
select cast(g.i as bigint) as n, p.name
from range(1, 4) as g(i)
cross join org.people p
