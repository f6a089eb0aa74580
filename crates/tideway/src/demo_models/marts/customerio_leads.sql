/* tideway
description = "Lead score and traits per user, named the way the CRM export names them."
[tests]
USER_ID = ["not_null", "unique"]
*/
select
    cast(l.customer_id as varchar) as "USER_ID",
    l.email                       as "EMAIL",
    split_part(c.name, ' ', 1)     as "FIRSTNAME",
    split_part(c.name, ' ', 2)     as "LASTNAME",
    l.plan                        as "PLAN",
    l.lead_score                  as "LEAD_SCORE",
    l.lead_grade                  as "LEAD_GRADE"
from marts.lead_score l
join staging.stg_billing_customers c on c.id = l.customer_id
