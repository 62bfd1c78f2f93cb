-- A view over the seed.
select order_id, customer_id, cast(amount as double) as amount, ordered_on
from {{ ref('orders') }}
