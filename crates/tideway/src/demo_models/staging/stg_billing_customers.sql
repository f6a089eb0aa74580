-- billingdb.customers, as the source system delivers it
/* tideway
materialized = "view"
*/
select * from billingdb.customers
