-- zendesk.tickets, as the source system delivers it
/* tideway
materialized = "view"
*/
select * from zendesk.tickets
