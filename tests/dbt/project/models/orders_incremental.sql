{{ config(materialized='incremental', incremental_strategy='append') }}
-- Incremental: the first run takes every order, later runs only newer ones.
select order_id, customer_id, amount, ordered_on
from {{ ref('stg_orders') }}
{% if is_incremental() %}
where ordered_on > (select max(ordered_on) from {{ this }})
{% endif %}
