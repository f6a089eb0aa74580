-- Models that read each other: the cycle is named, in order, at the reference that closes it.
-- file: models/a/first.sql
select x from b.second
-- file: models/b/second.sql
select x from c.third
-- file: models/c/third.sql
select x from a.first
-- file: models/d/after.sql
select x from a.first
-- file: models/d/fine.sql
select 1 as x
