{{ config(materialized='table') }}
-- A table: each customer with their order count and total.
select c.customer_id, c.name, c.country, count(o.order_id) as orders, coalesce(sum(o.amount), 0) as total
from {{ ref('customers') }} c
left join {{ ref('stg_orders') }} o on o.customer_id = c.customer_id
group by c.customer_id, c.name, c.country
