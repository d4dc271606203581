\set user 100000000000 + :client_id
\set r1h random(10000000, 99999999)
\set r1 random(100000000000, 999999999999)
\set r2h random(10000000, 99999999)
\set r2 random(100000000000, 999999999999)
\set r3h random(10000000, 99999999)
\set r3 random(100000000000, 999999999999)
\set r4h random(10000000, 99999999)
\set r4 random(100000000000, 999999999999)
\set r5h random(10000000, 99999999)
\set r5 random(100000000000, 999999999999)
select * from internal.idempotency_claim_limited(E'orders:00000000-0000-4000-8000-:user', 1000000, 60000, E'broker-order', E'00000000-0000-4000-8000-:user', E':r1h-0000-4000-9000-:r1', E'4adf17e4ca3e1d1824b952b0165928cd7389621380c9f6a133c328a10e52de09', E':r2h-0000-4000-9000-:r2', 30000, 86400);
select internal.order_record(E'{"id":":r3h-0000-4000-9000-:r3","user_id":"00000000-0000-4000-8000-:user","client_order_id":"bo-:r5h:r5","broker_order_id":":r4h-0000-4000-9000-:r4","symbol":"AAPL","side":"buy","type":"limit","qty":"10","notional":null,"limit_price":"187.25","stop_price":null,"time_in_force":"gtc","note":null,"status":"accepted","reject_reason":null}'::jsonb, E'complete', E'broker-order', E'00000000-0000-4000-8000-:user', E':r1h-0000-4000-9000-:r1', E':r2h-0000-4000-9000-:r2'::uuid, null, null) as order_json;
