-- zendesk.ticket_metrics, as the source system delivers it
/* tideway
materialized = "view"
*/
select * from zendesk.ticket_metrics
