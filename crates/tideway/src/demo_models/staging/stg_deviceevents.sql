-- events.deviceevents, as the source system delivers it
/* tideway
materialized = "view"
*/
select * from events.deviceevents
