-- Datacoral headers and Snowflake / Redshift / DuckDB functions that DataFusion lacks.
-- lake: crm.leads (id BIGINT, email VARCHAR, path VARCHAR, score DOUBLE, created_at TIMESTAMP, converted_at TIMESTAMP, stage BIGINT)
-- file: models/analytics/leads.sql
/*
 * @datacoral O-1.0.0
 * @matview-schema analytics
 * @matview-name lead_facts
 * @matview-type regular
 * @interval-in-minutes 60
 */
select
    id,
    iff(score > 50, 'hot', 'cold')                         as temperature,
    decode(stage, 1, 'new', 2, 'working', 'other')         as stage_name,
    zeroifnull(score)                                      as score_filled,
    len(email)                                             as email_length,
    charindex('@', email)                                  as at_position,
    datediff(day, created_at, converted_at)                as days_to_convert,
    date_diff('hour', created_at, converted_at)            as hours_to_convert,
    dateadd(month, 1, created_at)                          as renewal_at,
    path like any ('/docs%', '/help%')                     as is_docs,
    created_at >= timestamp '2025-06-01' - interval 30 day as is_recent,
    created_at::date                                       as created_date
from crm.leads
-- file: models/analytics/by_domain.sql
/* tideway
materialized = "incremental"
unique_key = "domain"
interval = "1d"
*/
select split_part(l.email, '@', 2) as domain, listagg(l.email, ',') as emails, count(*) as leads,
       dense_rank() over (order by count(*) desc) as domain_rank
from crm.leads l
group by 1
